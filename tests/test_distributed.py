"""What `accelerate launch` hands the loop: every recipe against every Accelerate config, and the loss's scaling.

The launch environment is the one Accelerate's own launcher computes from each config file, so the recipes and
configs/accelerate/*.yaml are checked together on CPU, without GPUs, DeepSpeed or a real model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin
from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env, prepare_simple_launcher_cmd_env
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

from qg.cli import UserError
from qg.config import parse_config
from qg.models.tiny import TINY_MODEL
from qg.train.config import RECIPES_DIR, TrainConfig
from qg.train.loop import accelerator_kwargs, give_deepspeed_the_recipe, resolve_mixed_precision

REPO = Path(__file__).resolve().parents[1]
# Training recipes; eval-*.yaml are qg-evaluate's (qg.eval.config).
RECIPES = sorted(p for p in RECIPES_DIR.glob("*.yaml") if not p.name.startswith("eval-"))
ACCELERATE_CONFIGS = sorted((RECIPES_DIR / "accelerate").glob("*.yaml"))
SMALL = {"hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
         "head_dim": 16, "intermediate_size": 128, "vocab_size": 256}
# The class each recipe's model loads as (EXAONE is converted to Llama format), at a toy size.
ARCHITECTURES = {
    "LGAI-EXAONE/EXAONE-3.5-2.4B-Instruct": (LlamaForCausalLM, LlamaConfig),
    TINY_MODEL: (LlamaForCausalLM, LlamaConfig),
    "google/gemma-3-1b-it": (Gemma3ForCausalLM, Gemma3TextConfig),
}


# `accelerate launch --cpu --num_processes 2` starts one process (accelerate's CPU launcher runs several only
# through mpirun); torchrun with ACCELERATE_USE_CPU=true gives Accelerate two gloo processes on one machine.
TWO_CPU_PROCESSES = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def launch_env(config_file: Path, *flags: str) -> dict[str, str]:
    """The environment `accelerate launch --config_file CONFIG_FILE [flags] train.py` gives each process."""
    args = launch_command_parser().parse_args(["--config_file", str(config_file), *flags, "train.py"])
    args, defaults, precision_from_config = _validate_launch_command(args)
    if args.use_deepspeed:  # as accelerate.commands.launch.launch_command does before deepspeed_launcher
        fields = list(defaults.deepspeed_config) + (["mixed_precision"] if precision_from_config else [])
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)
        _, env = prepare_deepspeed_cmd_env(args)
    elif args.use_fsdp or args.multi_gpu:
        env = prepare_multi_gpu_env(args)
    else:
        _, env = prepare_simple_launcher_cmd_env(args)
    return env


@pytest.fixture
def launched(monkeypatch):
    """Put this process in the environment `accelerate launch` would give it."""

    def apply(config_file: Path, *flags: str) -> None:
        for key in list(os.environ):
            if key.startswith(("ACCELERATE_", "FSDP_")):
                monkeypatch.delenv(key)
        for key, value in launch_env(config_file, *flags).items():
            if key.startswith(("ACCELERATE_", "FSDP_")):
                monkeypatch.setenv(key, value)

    return apply


def recipe(path: Path, *overrides: str) -> TrainConfig:
    return parse_config(TrainConfig, ["--config", str(path), *overrides])[0]


def toy_model(config: TrainConfig):
    """The recipe's architecture on the meta device, with its LoRA adapters when it trains LoRA."""
    model_class, config_class = ARCHITECTURES[config.model]
    with torch.device("meta"):
        model = model_class(config_class(**SMALL))
        if config.finetuning != "full":
            model = get_peft_model(model, LoraConfig(r=config.lora_r, target_modules=config.lora_target_modules))
    return model


def test_every_recipe_names_an_architecture_checked_here():
    assert {recipe(path).model for path in RECIPES} <= set(ARCHITECTURES)


@pytest.mark.parametrize("accelerate_config", ACCELERATE_CONFIGS, ids=lambda p: p.stem)
@pytest.mark.parametrize("recipe_path", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_runs_as_written_under_every_accelerate_config(recipe_path, accelerate_config, launched):
    """Accumulation, clipping, precision and FSDP's wrapped layers are the recipe's and the model's, whatever the
    Accelerate config."""
    launched(accelerate_config)
    config = recipe(recipe_path)
    kwargs = accelerator_kwargs(config)
    assert kwargs["gradient_accumulation_plugin"].num_steps == config.gradient_accumulation_steps
    launch_precision = yaml.safe_load(accelerate_config.read_text())["mixed_precision"]
    expected_precision = launch_precision if config.mixed_precision == "auto" else config.mixed_precision
    assert kwargs["mixed_precision"] == expected_precision
    if os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true":
        plugin = DeepSpeedPlugin()
        give_deepspeed_the_recipe(plugin.deepspeed_config, config)
        plugin.set_mixed_precision(kwargs["mixed_precision"])
        assert plugin.deepspeed_config["gradient_accumulation_steps"] == config.gradient_accumulation_steps
        assert plugin.deepspeed_config["gradient_clipping"] == config.max_grad_norm
        assert plugin.deepspeed_config["bf16"]["enabled"] == (expected_precision == "bf16")
    if os.environ.get("ACCELERATE_USE_FSDP") == "true":
        model = toy_model(config)
        policy = fsdp2_prepare_auto_wrap_policy(FullyShardedDataParallelPlugin(), model)
        decoder_layers = model.get_base_model().model.layers if config.finetuning != "full" else model.model.layers
        wrapped = [module for module in model.modules() if policy(module)]
        assert wrapped == list(decoder_layers)


def test_recipe_accumulation_and_clipping_reach_deepspeed(launched):
    launched(RECIPES_DIR / "accelerate" / "deepspeed-zero2.yaml")
    config = recipe(RECIPES_DIR / "gemma-3-1b-full.yaml", "--max_grad_norm", "0.5")
    plugin = DeepSpeedPlugin()
    give_deepspeed_the_recipe(plugin.deepspeed_config, config)
    assert plugin.deepspeed_config["gradient_accumulation_steps"] == 8
    assert plugin.deepspeed_config["gradient_clipping"] == 0.5


def test_a_launch_flag_that_contradicts_the_recipe_is_refused(launched):
    launched(RECIPES_DIR / "accelerate" / "deepspeed-zero2.yaml", "--gradient_accumulation_steps", "4")
    plugin = DeepSpeedPlugin()
    with pytest.raises(UserError, match="sets gradient_accumulation_steps 4 but the recipe says 8"):
        give_deepspeed_the_recipe(plugin.deepspeed_config, recipe(RECIPES_DIR / "gemma-3-1b-full.yaml"))


def test_auto_precision_follows_the_launch_flag_and_an_explicit_recipe_value_wins(launched, monkeypatch):
    single_gpu = RECIPES_DIR / "accelerate" / "single-gpu.yaml"
    launched(single_gpu, "--mixed_precision", "fp16")
    assert resolve_mixed_precision(TrainConfig(mixed_precision="auto")) == "fp16"
    assert resolve_mixed_precision(TrainConfig(mixed_precision="no")) == "no"
    launched(single_gpu)
    assert resolve_mixed_precision(TrainConfig(mixed_precision="auto")) == "bf16"
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION")
    expected = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    assert resolve_mixed_precision(TrainConfig(mixed_precision="auto")) == expected


@pytest.mark.parametrize("shared_context", ["false", "true"])
def test_two_processes_train_the_adapter_one_process_trains_with_accumulation(sample_dataset, tmp_path,
                                                                               shared_context):
    """Per optimizer step the loss is the mean over every labelled token of every micro-batch on every process, so
    2 processes x 1 micro-batch and 1 process x 2 micro-batches see the same batches and take the same steps."""
    def args(output: Path, accumulation: int) -> list[str]:
        return ["train.py", "--config", "configs/smoke.yaml", "--dataset", str(sample_dataset), "--output_dir",
                str(output), "--report_to", "none", "--max_steps", "3", "--logging_steps", "1", "--eval_steps", "0",
                "--save_steps", "0", "--lora_dropout", "0", "--shared_context", shared_context,
                "--gradient_accumulation_steps", str(accumulation)]

    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "FSDP_"))}
    one = subprocess.Popen([sys.executable, *args(tmp_path / "one", 2)], cwd=REPO, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    two = subprocess.Popen([*TWO_CPU_PROCESSES, *args(tmp_path / "two", 1)], cwd=REPO,
                           env={**env, "ACCELERATE_USE_CPU": "true"},
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for process in (one, two):
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
    expected = load_file(tmp_path / "one" / "adapter_model.safetensors")
    got = load_file(tmp_path / "two" / "adapter_model.safetensors")
    assert expected.keys() == got.keys() and expected
    for name in expected:
        # All-reduce and local accumulation sum in different orders, and AdamW divides by sqrt(v): an element whose
        # gradient is near zero can move by a visible part of a step from rounding alone, so compare whole tensors.
        difference = torch.linalg.vector_norm(got[name] - expected[name]) / torch.linalg.vector_norm(expected[name])
        assert difference < 1e-3, name

    def losses(output: Path) -> list[float]:
        return [json.loads(line)["loss"] for line in (output / "train_log.jsonl").read_text().splitlines()]

    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=1e-5)


def test_two_cpu_processes_train_one_adapter_and_log_once(sample_dataset, tmp_path):
    output = tmp_path / "ddp"
    result = subprocess.run(
        [*TWO_CPU_PROCESSES, "train.py", "--config", "configs/smoke.yaml", "--dataset", str(sample_dataset),
         "--output_dir", str(output), "--report_to", "none", "--max_steps", "6", "--logging_steps", "2",
         "--eval_steps", "3", "--save_steps", "4"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("ACCELERATE_")}, "ACCELERATE_USE_CPU": "true"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "on 2 processes" in result.stdout
    assert [json.loads(line)["step"] for line in (output / "train_log.jsonl").read_text().splitlines()] == [2, 3, 4, 6]
    assert len(list(output.rglob("adapter_model.safetensors"))) == 2  # final + best, written once each
    assert (output / "checkpoints" / "step-4").is_dir()
