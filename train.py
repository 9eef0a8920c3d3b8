"""Fine-tune a base model for Korean question generation (LoRA, QLoRA or full) with Accelerate.

    python train.py --config configs/smoke.yaml                                   # tiny model, CPU, ~1 minute
    accelerate launch train.py --config configs/exaone-3.5-2.4b-lora.yaml         # the published adapter, 1 GPU
    accelerate launch --config_file configs/accelerate/multi-gpu.yaml train.py --config configs/exaone-3.5-2.4b-lora.yaml
    accelerate launch --cpu --num_processes 2 train.py --config configs/smoke.yaml --output_dir outputs/ddp
    python train.py --config configs/smoke.yaml --lora_r 8 --max_steps 20         # any field can be overridden
    python train.py --config configs/smoke.yaml --resume                          # continue from the last checkpoint

Every recipe field is a flag (see --help); the recipe sets defaults and flags win.
"""

import sys

from qg.cli import run
from qg.config import TrainConfig, parse_config


def main() -> None:
    argv = sys.argv[1:]
    resume = "--resume" in argv
    config, _ = parse_config(TrainConfig, [a for a in argv if a != "--resume"], description=__doc__ + (
        "\n--resume: continue the run in output_dir from its last checkpoint (same config required)."))
    from qg.training import train  # heavy imports only after the config is known to be good

    output = train(config, resume=resume)
    print(f"adapter, logs and loss curve in {output}")


if __name__ == "__main__":
    run(main)
