"""qg-export --merged: the merged model generates what the adapter does, stops at the end of turn, and bad input
is one line with nothing written."""

import json
from pathlib import Path

import pytest
import torch
from conftest import fit_lora
from peft import LoraConfig, get_peft_model
from safetensors import safe_open

from qg.generate import Decoding, QuestionGenerator
from qg.models.loading import load_base
from qg.models.tiny import TINY_MODEL, tiny_model_dir
from qg.prompt import encode_example, encode_prompt, end_of_turn_id
from qg.serving import export

SAMPLE = Path(__file__).resolve().parents[1] / "hub_dataset" / "sample"
CONTEXTS = [
    "훈민정음은 1443년 세종이 창제한 문자이다.",
    "서울은 대한민국의 수도이며 인구가 가장 많은 도시이다. 한강이 도시를 동서로 가로지른다.",
]
GREEDY = Decoding(temperature=0, max_new_tokens=24)


def save_memorised_adapter(folder: Path) -> str:
    """A LoRA on the tiny model fitted to a sample paragraph's questions, saved as qg-train saves one (adapter and
    tokenizer); returns that paragraph, for which its greedy question ends in the end of turn."""
    base, tokenizer = load_base(TINY_MODEL)
    torch.manual_seed(0)
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    paragraph = json.loads((SAMPLE / "train.json").read_text(encoding="utf-8"))["data"][0]["paragraphs"][0]
    fit_lora(model, [encode_example(tokenizer, paragraph["context"], qa["question"]) for qa in paragraph["qas"]],
             steps=15)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return paragraph["context"]


def greedy_candidates(generator: QuestionGenerator, contexts: list[str]) -> list[list[str | None]]:
    prompts = [encode_prompt(generator.tokenizer, c) for c in contexts]
    return generator.engine.prepare(prompts).sample([1] * len(prompts), GREEDY)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export") / "adapter"
    return folder, save_memorised_adapter(folder)


def test_merged_model_generates_the_adapters_greedy_questions(adapter, tmp_path, capsys):
    folder, learnt = adapter
    contexts = [learnt, *CONTEXTS]
    export.main(["--merged", str(tmp_path / "merged"), str(folder)])
    assert "merged" in capsys.readouterr().out
    merged = QuestionGenerator.from_pretrained(str(tmp_path / "merged"))
    adapted = QuestionGenerator.from_pretrained(str(folder))
    with safe_open(tmp_path / "merged" / "model.safetensors", "pt") as weights:
        assert not any("lora_" in name for name in weights.keys())
    expected = greedy_candidates(adapted, contexts)
    assert expected[0][0]  # the learnt paragraph's question ends in the end of turn
    assert greedy_candidates(merged, contexts) == expected
    assert greedy_candidates(QuestionGenerator.from_pretrained(TINY_MODEL), contexts) != expected
    assert merged.generate(contexts, temperature=0) == adapted.generate(contexts, temperature=0)
    # The chat template travels with it: an engine that applies it itself builds the same prompt.
    assert (tmp_path / "merged" / "chat_template.jinja").is_file()
    for context in contexts:
        assert encode_prompt(merged.tokenizer, context).input_ids == encode_prompt(adapted.tokenizer, context).input_ids
    assert merged.model.generation_config.eos_token_id in (end_of_turn_id(merged.tokenizer),
                                                           [end_of_turn_id(merged.tokenizer)])


def test_end_of_turn_joins_a_base_eos_that_lacks_it(adapter, tmp_path, monkeypatch):
    """A base whose EOS is not its end-of-turn token (Gemma's <eos> vs <end_of_turn>): engines that stop at the
    model's EOS must stop at the end of turn as well."""
    folder, _ = adapter
    original = export.load_base

    def other_eos(*args, **kwargs):
        model, tokenizer = original(*args, **kwargs)
        model.generation_config.eos_token_id = 2
        return model, tokenizer

    monkeypatch.setattr(export, "load_base", other_eos)
    export.export_merged(str(folder), tmp_path / "merged")
    saved = json.loads((tmp_path / "merged" / "generation_config.json").read_text())
    assert saved["eos_token_id"] == [2, end_of_turn_id(load_base(TINY_MODEL)[1])]


@pytest.mark.parametrize("case", ["model folder", "missing", "out exists"])
def test_bad_input_is_one_line_exit_2_and_nothing_written(adapter, tmp_path, capsys, case):
    folder, _ = adapter
    out = tmp_path / "merged"
    source = {"model folder": str(tiny_model_dir()), "missing": str(tmp_path / "nowhere"),
              "out exists": str(folder)}[case]
    if case == "out exists":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit) as exit_info:
        export.main(["--merged", str(out), source])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert {"model folder": "not a peft adapter", "missing": "no such adapter folder",
            "out exists": "--overwrite"}[case] in err
    assert sorted(p.name for p in tmp_path.iterdir()) == (["merged"] if case == "out exists" else [])
    if case == "out exists":
        assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_a_failed_save_leaves_no_folder(adapter, tmp_path, monkeypatch):
    folder, _ = adapter

    def disk_full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(load_base(TINY_MODEL)[1]), "save_pretrained", disk_full)
    with pytest.raises(OSError):
        export.export_merged(str(folder), tmp_path / "merged")
    assert list(tmp_path.iterdir()) == []
