"""bench/bench_gpu.py, prepared for a GPU, runs end to end at a tiny shape on CPU, so it cannot rot unseen."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TRAINING = ("padded Trainer (sdpa)", "packing (sdpa)", "shared context (sdpa)", "recipe exaone-3.5-2.4b-lora",
            "recipe exaone-3.5-2.4b-lora-12gb")
GENERATION = ("generation: shared prefill, 2 x 5 questions", "generation: num_return_sequences=5")


def read_table(stdout: str) -> dict[str, dict[str, str]]:
    """The printed table as {row name: {column: cell}}: columns are right-aligned under their headers."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("tokens/s"))
    header = lines[start]
    columns = ["tokens/s", "questions/s", "q/step", "MFU", "peak GiB", "planner GiB", "check loss"]
    ends = [header.index(name) + len(name) for name in columns]
    name_width = len(header) - len(header.lstrip())
    table = {}
    for line in lines[start + 1:]:
        if not line.strip():
            break
        cells = [line[begin:end].strip() for begin, end in zip([name_width, *ends[:-1]], ends)]
        table[line[:name_width].strip()] = dict(zip(columns, cells))
    return table


@pytest.mark.slow
def test_bench_gpu_runs_at_a_tiny_shape_and_its_arms_share_one_objective():
    result = subprocess.run([sys.executable, "bench/bench_gpu.py", "--tiny"], cwd=REPO, capture_output=True,
                            text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    table = read_table(result.stdout)
    assert set(table) == set(TRAINING + GENERATION)
    for name in TRAINING + GENERATION:
        assert float(table[name]["questions/s"]) > 0
    for name in TRAINING[1:]:  # the planner's estimate for every arm that follows a train.py recipe
        assert float(table[name]["planner GiB"]) > 1  # its 1 GiB CUDA allowance plus the model
    # The padded Trainer with the model's own loss, packing and shared context with train.py's selective loss:
    # the same initial model scores the same check questions alike.
    losses = [float(table[name]["check loss"]) for name in TRAINING[:3]]
    difference = float(re.search(r"initial check losses differ by at most (\S+)", result.stdout).group(1))
    assert difference < 1e-5 and max(losses) - min(losses) < 2e-5
