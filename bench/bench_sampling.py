"""One sampling step per row: qg.sampling.NucleusSampling against transformers' temperature + top-p warpers and
`torch.multinomial`, what `generate(do_sample=True)` runs.

    python bench/bench_sampling.py
    python bench/bench_sampling.py --rows 16 --repeats 20

Scores: --rows rows of EXAONE-3.5's 102,400-token vocabulary, normal with a spread from a random model's (nearly
uniform: every row takes the histogram) to a trained model's (peaked: the 64 best tokens hold the boundary), CPU
float32, one torch thread. Both sides end in the drawn token (the argmax `generate` takes after NucleusSampling).
Milliseconds per row per step, best of --repeats.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import TemperatureLogitsWarper, TopPLogitsWarper

from qg.sampling import NucleusSampling

VOCAB = 102_400
TEMPERATURE, TOP_P = 0.7, 0.95  # qg-serve's defaults


def best_ms_per_row(step, rows: int, repeats: int) -> float:
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times) * 1000 / rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=80, help="rows per step, e.g. 16 paragraphs x 5 (default 80)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per arm (default 5)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    ours = NucleusSampling(TEMPERATURE, TOP_P)
    temperature, top_p = TemperatureLogitsWarper(TEMPERATURE), TopPLogitsWarper(TOP_P)
    print(f"{args.rows} rows x {VOCAB:,} tokens, temperature {TEMPERATURE}, top-p {TOP_P}, 1 thread: "
          "ms per row per step")
    header = f"{'logit spread':>12} {'transformers':>13} {'NucleusSampling':>16} {'ratio':>7}"
    print(header + "\n" + "-" * len(header))
    for spread in (0.05, 0.5, 1, 2, 4, 8):
        scores = torch.randn(args.rows, VOCAB) * spread
        baseline = best_ms_per_row(lambda: torch.multinomial(top_p(None, temperature(None, scores.clone())).softmax(-1),
                                                             1), args.rows, args.repeats)
        new = best_ms_per_row(lambda: ours(None, scores.clone()).argmax(-1), args.rows, args.repeats)
        print(f"{spread:>12} {baseline:>13.2f} {new:>16.2f} {baseline / new:>6.1f}x", flush=True)


if __name__ == "__main__":
    main()
