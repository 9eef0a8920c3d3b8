"""Build the question-generation dataset from KorQuAD 1.0 (the same command as `qg-build-dataset`; see --help).

    python hub_dataset/build_dataset.py --sample --output-dir outputs/sample-dataset
    python hub_dataset/build_dataset.py --output-dir outputs/korquad-qg --push-to-hub ORG/korquad-qg
"""

from qg.data.build import main

if __name__ == "__main__":
    main()
