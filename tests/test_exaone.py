"""The EXAONE -> Llama converter, against the outputs of LG's original implementation and by round trips."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM

from qg.cli import UserError
from qg.models.exaone import convert_exaone_checkpoint, expected_exaone_keys, llama_key

TINY = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=128)
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16}


@pytest.fixture(scope="module")
def reference(exaone_tiny_a_dir):
    return load_file(exaone_tiny_a_dir / "reference.safetensors")


@pytest.fixture(scope="module")
def converted_a(exaone_tiny_a_dir, tmp_path_factory):
    return convert_exaone_checkpoint(exaone_tiny_a_dir, tmp_path_factory.mktemp("conv") / "tiny-a")


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_logits_match_lg_implementation(converted_a, reference, attn):
    model = LlamaForCausalLM.from_pretrained(converted_a, attn_implementation=attn).eval()
    valid = reference["attention_mask"].bool()
    with torch.no_grad():
        logits = model(input_ids=reference["input_ids"], attention_mask=reference["attention_mask"]).logits
        with_positions = model(input_ids=reference["input_ids"], attention_mask=reference["attention_mask"],
                               position_ids=reference["position_ids"]).logits
    assert (logits - reference["logits"])[valid].abs().max() < 1e-4
    assert (with_positions - reference["logits_position_ids"])[valid].abs().max() < 1e-4


def test_greedy_generation_matches_lg_implementation(converted_a, reference):
    model = LlamaForCausalLM.from_pretrained(converted_a).eval()
    generated = model.generate(reference["input_ids"], attention_mask=reference["attention_mask"], max_new_tokens=12,
                               do_sample=False, use_cache=True, eos_token_id=361, pad_token_id=0)
    assert torch.equal(generated, reference["greedy_ids"])


def test_missing_tie_word_embeddings_means_tied(converted_a, exaone_tiny_a_dir):
    assert "tie_word_embeddings" not in json.loads((exaone_tiny_a_dir / "config.json").read_text())
    config = json.loads((converted_a / "config.json").read_text())
    assert config["tie_word_embeddings"] is True and "auto_map" not in config
    assert config["architectures"] == ["LlamaForCausalLM"] and config["head_dim"] == 16
    assert "lm_head.weight" not in load_file(converted_a / "model.safetensors")


def write_exaone(folder, model: LlamaForCausalLM, rope_scaling=LLAMA3_ROPE, shards=1, **config_extra):
    """Save a Llama model under EXAONE's tensor and config names (the inverse of the converter's mapping)."""
    folder.mkdir(parents=True)
    to_exaone = {llama_key(k): k for k in expected_exaone_keys(model.config)}
    state = {to_exaone[k]: v.contiguous() for k, v in model.state_dict().items() if k in to_exaone}
    keys = sorted(state)
    if shards == 1:
        save_file(state, folder / "model.safetensors")
    else:
        weight_map = {}
        for i in range(shards):
            name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            part = keys[i::shards]
            save_file({k: state[k] for k in part}, folder / name)
            weight_map.update(dict.fromkeys(part, name))
        (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    c = model.config
    config = {"model_type": "exaone", "vocab_size": c.vocab_size, "hidden_size": c.hidden_size,
              "intermediate_size": c.intermediate_size, "num_layers": c.num_hidden_layers,
              "num_attention_heads": c.num_attention_heads, "num_key_value_heads": c.num_key_value_heads,
              "max_position_embeddings": c.max_position_embeddings, "layer_norm_epsilon": 1e-5,
              "rope_theta": 10000.0, "rope_scaling": rope_scaling, "bos_token_id": 1, "eos_token_id": 2,
              "pad_token_id": 0, **config_extra}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def original_llama(tied: bool, rope_scaling=LLAMA3_ROPE) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(**TINY, tie_word_embeddings=tied, rope_theta=10000.0, rope_scaling=rope_scaling,
                         rms_norm_eps=1e-5)
    return LlamaForCausalLM(config).eval()


def assert_same_logits(model: LlamaForCausalLM, converted) -> None:
    ids = torch.randint(3, TINY["vocab_size"], (2, 40), generator=torch.Generator().manual_seed(1))
    reloaded = LlamaForCausalLM.from_pretrained(converted).eval()
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, reloaded(ids).logits, atol=1e-6)


def test_untied_embeddings_keep_their_own_lm_head(tmp_path):
    model = original_llama(tied=False)
    src = write_exaone(tmp_path / "src", model, tie_word_embeddings=False)
    assert "lm_head.weight" in load_file(src / "model.safetensors")
    converted = convert_exaone_checkpoint(src, tmp_path / "dst")
    reloaded = LlamaForCausalLM.from_pretrained(converted)
    assert reloaded.config.tie_word_embeddings is False
    assert torch.equal(reloaded.lm_head.weight, model.lm_head.weight)
    assert not torch.equal(reloaded.lm_head.weight, reloaded.model.embed_tokens.weight)
    assert_same_logits(model, converted)


def test_rope_scaling_null_gives_plain_rope(tmp_path):
    model = original_llama(tied=True, rope_scaling=None)
    converted = convert_exaone_checkpoint(write_exaone(tmp_path / "src", model, rope_scaling=None), tmp_path / "dst")
    assert json.loads((converted / "config.json").read_text())["rope_parameters"]["rope_type"] == "default"
    assert_same_logits(model, converted)


def test_sharded_checkpoint_in_and_out(tmp_path):
    model = original_llama(tied=True)
    src = write_exaone(tmp_path / "src", model, shards=3)
    converted = convert_exaone_checkpoint(src, tmp_path / "dst", max_shard_bytes=20_000)
    index = json.loads((converted / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert set(index["weight_map"]) == {n for n in model.state_dict() if n != "lm_head.weight"}
    assert_same_logits(model, converted)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c, w: c.update(model_type="llama"), "model_type 'llama', expected 'exaone'"),
        (lambda c, w: c.update(rope_scaling={"rope_type": "spiral", "factor": 2.0}), "unknown rope type 'spiral'"),
        (lambda c, w: w.pop("transformer.h.1.mlp.c_proj.weight"), "missing weight keys: transformer.h.1.mlp.c_proj"),
        (lambda c, w: w.update({"transformer.h.0.attn.rotary.inv_freq": torch.ones(4)}),
         "unknown weight keys: transformer.h.0.attn.rotary.inv_freq"),
    ],
)
def test_refusals_leave_no_output(tmp_path, exaone_tiny_a_dir, change, message):
    src = tmp_path / "src"
    src.mkdir()
    config = json.loads((exaone_tiny_a_dir / "config.json").read_text())
    weights = load_file(exaone_tiny_a_dir / "model.safetensors")
    change(config, weights)
    (src / "config.json").write_text(json.dumps(config))
    save_file(weights, src / "model.safetensors")
    with pytest.raises(UserError, match=message):
        convert_exaone_checkpoint(src, tmp_path / "dst")
    assert not (tmp_path / "dst").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["src"]


def test_cli_refuses_existing_destination_and_keeps_it(tmp_path, exaone_tiny_a_dir):
    dst = tmp_path / "dst"
    assert convert_exaone_checkpoint(exaone_tiny_a_dir, dst) == dst
    before = {p.name: p.read_bytes() for p in dst.iterdir()}
    result = subprocess.run([sys.executable, "-m", "qg.models.exaone", str(exaone_tiny_a_dir), str(dst)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {dst} already exists; pass --overwrite to replace it"]
    assert {p.name: p.read_bytes() for p in dst.iterdir()} == before

    (dst / "keep.txt").write_text("previous run")
    result = subprocess.run([sys.executable, "-m", "qg.models.exaone", str(exaone_tiny_a_dir), str(dst)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {dst} holds keep.txt, which qg-convert did not write; move it away or choose another output folder"]
    assert {p.name: p.read_bytes() for p in dst.iterdir()} == {**before, "keep.txt": b"previous run"}
