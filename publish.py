"""Publish a trained adapter, its card, base, Space and dataset to the Hub (the same command as `qg-publish`; see --help).

    python publish.py --adapter RUN_DIR --eval-dir EVAL_DIR --model-repo ORG/NAME --space-repo ORG/NAME --offline \\
        --staging-dir outputs/publish
"""

from qg.hub.publish import main

if __name__ == "__main__":
    main()
