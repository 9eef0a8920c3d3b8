"""Peak memory and time of the EXAONE -> Llama conversion on a ~1 GB synthetic checkpoint in the real layout.

    python bench/bench_convert.py [--size-gb 1.0]

Each conversion runs in a fresh process; its peak resident memory (ru_maxrss) is compared with the checkpoint size
and its largest tensor, beside a baseline in the same run: `safetensors.torch.load_file` + rename + `save_file`,
which holds the whole checkpoint in memory.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

BASELINE = """
import sys
from safetensors.torch import load_file, save_file
from qg.models.exaone import llama_key
weights = load_file(sys.argv[1] + "/model.safetensors")
save_file({llama_key(k): v for k, v in weights.items()}, sys.argv[2] + "/model.safetensors")
"""
OURS = "import sys; from qg.models.exaone import convert_exaone_checkpoint; convert_exaone_checkpoint(sys.argv[1], sys.argv[2])"
IDLE = "import sys, torch, safetensors, transformers, qg.models.exaone"


def write_checkpoint(folder: Path, target_bytes: float) -> tuple[int, int]:
    """EXAONE-3.5-2.4B's layout and ratios (vocab 102,400, hidden 2560 scaled), bf16, about `target_bytes`."""
    hidden, layers, vocab = 1280, 1, 102400
    intermediate, kv = hidden * 28 // 10, hidden // 4
    per_layer = 2 * (hidden * hidden * 2 + hidden * kv * 2 + 3 * hidden * intermediate)
    layers = max(1, int((target_bytes - 2 * vocab * hidden) // per_layer))
    weights = {"transformer.wte.weight": torch.randn(vocab, hidden, dtype=torch.bfloat16),
               "transformer.ln_f.weight": torch.ones(hidden, dtype=torch.bfloat16)}
    for i in range(layers):
        p = f"transformer.h.{i}."
        weights |= {p + "ln_1.weight": torch.ones(hidden, dtype=torch.bfloat16),
                    p + "ln_2.weight": torch.ones(hidden, dtype=torch.bfloat16),
                    p + "attn.attention.q_proj.weight": torch.randn(hidden, hidden, dtype=torch.bfloat16),
                    p + "attn.attention.k_proj.weight": torch.randn(kv, hidden, dtype=torch.bfloat16),
                    p + "attn.attention.v_proj.weight": torch.randn(kv, hidden, dtype=torch.bfloat16),
                    p + "attn.attention.out_proj.weight": torch.randn(hidden, hidden, dtype=torch.bfloat16),
                    p + "mlp.c_fc_0.weight": torch.randn(intermediate, hidden, dtype=torch.bfloat16),
                    p + "mlp.c_fc_1.weight": torch.randn(intermediate, hidden, dtype=torch.bfloat16),
                    p + "mlp.c_proj.weight": torch.randn(hidden, intermediate, dtype=torch.bfloat16)}
    save_file(weights, folder / "model.safetensors")
    config = {"model_type": "exaone", "vocab_size": vocab, "hidden_size": hidden, "intermediate_size": intermediate,
              "num_layers": layers, "num_attention_heads": 16, "num_key_value_heads": 4,
              "max_position_embeddings": 32768, "layer_norm_epsilon": 1e-5, "rope_theta": 1e6,
              "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                               "original_max_position_embeddings": 8192}, "bos_token_id": 1, "eos_token_id": 361,
              "pad_token_id": 0}
    (folder / "config.json").write_text(json.dumps(config))
    return (folder / "model.safetensors").stat().st_size, max(t.numel() * t.element_size() for t in weights.values())


def peak_rss(code: str, *args: str) -> tuple[int, float]:
    """Peak resident bytes and seconds of `python -c code args` in a fresh process.

    The child reads its own VmHWM: it belongs to the new address space, whereas ru_maxrss keeps the parent's peak
    across fork and exec.
    """
    report = "\nprint(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])"
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code + report, *args], capture_output=True, text=True, check=True)
    return int(result.stdout.split()[-1]) * 1024, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, default=1.0, help="Checkpoint size to synthesise (default 1.0).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "exaone"
        src.mkdir()
        size, largest = write_checkpoint(src, args.size_gb * 1e9)
        idle, _ = peak_rss(IDLE)
        rows = []
        for name, code in (("load_file + save_file (baseline)", BASELINE), ("qg.models.exaone (streamed)", OURS)):
            dst = Path(tmp) / name.split()[0]
            dst.mkdir()
            rss, seconds = peak_rss(code, str(src), str(dst / "out") if code is OURS else str(dst))
            rows.append((name, rss, seconds))
    print(f"command: python bench/bench_convert.py --size-gb {args.size_gb}")
    print(f"checkpoint {size / 1e9:.2f} GB, largest tensor {largest / 1e6:.0f} MB (embeddings), "
          f"interpreter + imports alone {idle / 1e6:.0f} MB peak")
    print(f"{'method':<36}{'peak RSS MB':>12}{'x ckpt':>8}{'x largest':>10}{'(RSS-imports) x ckpt':>22}{'s':>7}")
    for name, rss, seconds in rows:
        print(f"{name:<36}{rss / 1e6:>12.0f}{rss / size:>8.2f}{rss / largest:>10.2f}"
              f"{(rss - idle) / size:>22.2f}{seconds:>7.1f}")
    print(f"target: peak below 1.2x the checkpoint: {'met' if rows[1][1] < 1.2 * size else 'missed'}; "
          f"ours / baseline peak: {rows[1][1] / rows[0][1]:.2f}x")


if __name__ == "__main__":
    main()
