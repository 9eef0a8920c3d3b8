"""Evaluate a question generator: metrics.json and after_outputs.json (the same command as `qg-evaluate`; see --help).

    python evaluate_qg.py --model outputs/demo/adapter --dataset outputs/demo/dataset --output-dir outputs/demo/eval
"""

from qg.eval.runner import main

if __name__ == "__main__":
    main()
