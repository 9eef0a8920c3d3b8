"""Fine-tune a base model for Korean question generation with Accelerate (the same command as `qg-train`).

    python train.py --config configs/smoke.yaml                                   # tiny model, CPU
    accelerate launch train.py --config configs/exaone-3.5-2.4b-lora.yaml         # the published adapter, 1 GPU
    accelerate launch --cpu --num_processes 2 train.py --config configs/smoke.yaml --output_dir outputs/ddp

Every recipe field is a flag (see --help); the recipe sets defaults and flags win.
"""

from qg.train.loop import main

if __name__ == "__main__":
    main()
