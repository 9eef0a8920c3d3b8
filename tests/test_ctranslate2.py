"""The CTranslate2 engine against transformers, on a tiny model fitted to end its questions (a merged LoRA).

float32: the same logits (1e-4) and the same greedy tokens and questions. int8 (weights, and activations quantised on
the fly): every logit moves a little, so the measure is that of a correct int8 model: its logits stay within
INT8_LOGIT_TOLERANCE of float32's; greedy decoding gives transformers' tokens for at least 3 prompts in 4, and a
prompt that diverges does so at a step where transformers' own top two logits are closer than twice the tolerance,
where rounding may legitimately swap them.
"""

from __future__ import annotations

import json
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO

import numpy as np
import pytest
import torch
from conftest import fit_lora
from peft import LoraConfig, get_peft_model

from qg.cli import UserError
from qg.data.korquad import SAMPLE_DIR
from qg.generate import Decoding, QuestionGenerator, TransformersEngine
from qg.models.loading import load_base
from qg.models.tiny import TINY_MODEL, tiny_model_dir
from qg.prompt import encode_example, encode_prompt, end_of_turn_id
from qg.serving import export as export_command
from qg.serving.ctranslate2 import CTranslate2Engine, convert

MAX_NEW_TOKENS = 24
# The fitted tiny model's logits span about -12..16 (std 2.4); over 12 sample paragraphs int8 moved them by at most
# 0.64, and greedy decoding diverged on 1 of the 12, at a step whose top two logits were 0.03 apart.
INT8_LOGIT_TOLERANCE = 0.75
GREEDY = Decoding(temperature=0, max_new_tokens=MAX_NEW_TOKENS)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def paragraphs() -> list[str]:
    articles = json.loads((SAMPLE_DIR / "train.json").read_text(encoding="utf-8"))["data"]
    return [p["context"] for article in articles for p in article["paragraphs"]][:4]


@pytest.fixture(scope="module")
def merged(tmp_path_factory, paragraphs):
    """(folder, model, tokenizer): the tiny model with a LoRA fitted to the first paragraph's questions, merged."""
    base, tokenizer = load_base(TINY_MODEL)
    torch.manual_seed(0)
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    articles = json.loads((SAMPLE_DIR / "train.json").read_text(encoding="utf-8"))["data"]
    paragraph = articles[0]["paragraphs"][0]
    assert paragraph["context"] == paragraphs[0]
    fit_lora(model, [encode_example(tokenizer, paragraph["context"], qa["question"]) for qa in paragraph["qas"]],
             steps=15)
    folder = tmp_path_factory.mktemp("merged") / "model"
    model = model.merge_and_unload().eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, model, tokenizer


@pytest.fixture(scope="module")
def float32_dir(merged, tmp_path_factory):
    return convert(merged[0], tmp_path_factory.mktemp("ct2") / "float32", quantization="float32")


@pytest.fixture(scope="module")
def int8_dir(merged, tmp_path_factory):
    return convert(merged[0], tmp_path_factory.mktemp("ct2") / "int8", quantization="int8")


def prompts(tokenizer, paragraphs):
    # The first paragraph twice: two prompts of one length go through one generate_batch call.
    return [encode_prompt(tokenizer, p) for p in [paragraphs[0], *paragraphs]]


@torch.inference_mode()
def transformers_greedy(model, tokenizer, prompt_ids: list[int]) -> tuple[list[int], list[float]]:
    """Plain `model.generate`'s greedy tokens (through end-of-turn) and the gap between its top two logits at each."""
    out = model.generate(torch.tensor([prompt_ids]), do_sample=False, max_new_tokens=MAX_NEW_TOKENS,
                         eos_token_id=end_of_turn_id(tokenizer), pad_token_id=tokenizer.pad_token_id,
                         output_scores=True, return_dict_in_generate=True)
    tokens = out.sequences[0, len(prompt_ids):].tolist()
    gaps = [float(top[0] - top[1]) for top in (scores[0].topk(2).values for scores in out.scores)]
    return tokens, gaps


def ct2_logits(engine: CTranslate2Engine, prompt_ids: list[int]) -> np.ndarray:
    return np.array(engine.generator.forward_batch([engine.tokenizer.convert_ids_to_tokens(prompt_ids)]))[0]


@torch.inference_mode()
def test_float32_logits_equal_transformers(merged, float32_dir, paragraphs):
    _, model, tokenizer = merged
    engine = CTranslate2Engine(float32_dir)
    for prompt in prompts(tokenizer, paragraphs)[1:]:
        expected = model(torch.tensor([prompt.input_ids])).logits[0].numpy()
        # Every position: llama3 RoPE scaling that was lost in conversion shows from the first few tokens on.
        np.testing.assert_allclose(ct2_logits(engine, prompt.input_ids), expected, rtol=0, atol=1e-4)


def test_float32_greedy_tokens_and_questions_equal_transformers(merged, float32_dir, paragraphs):
    _, model, tokenizer = merged
    engine = CTranslate2Engine(float32_dir)  # the folder's own tokenizer, copied by convert
    encoded = prompts(tokenizer, paragraphs)
    assert [engine.tokenizer.convert_tokens_to_ids(engine.tokenizer.convert_ids_to_tokens(p.input_ids))
            for p in encoded] == [p.input_ids for p in encoded]
    expected = [transformers_greedy(model, tokenizer, p.input_ids)[0] for p in encoded]
    end = end_of_turn_id(tokenizer)
    assert end in expected[0]  # the fitted paragraph ends its question, so the texts below are real questions
    prepared = engine.prepare(encoded)
    assert prepared.sample_ids([1] * len(encoded), GREEDY) == [[tokens] for tokens in expected]
    questions = [tokenizer.decode(t[:t.index(end)]) if end in t else None for t in expected]
    assert questions[0]
    assert prepared.sample([1] * len(encoded), GREEDY) == [[q] for q in questions]
    assert prepared.sample([0, 2, 0, 0, 1], GREEDY) == [[], [questions[1]] * 2, [], [], [questions[4]]]


def test_question_generator_on_ctranslate2_gives_the_transformers_engine_questions(merged, float32_dir, paragraphs):
    _, model, tokenizer = merged
    expected = QuestionGenerator(TransformersEngine(model, tokenizer)).generate(paragraphs, temperature=0,
                                                                                max_new_tokens=MAX_NEW_TOKENS)
    assert expected[0].questions  # the fitted paragraph: a real question, through the checks
    assert QuestionGenerator(CTranslate2Engine(float32_dir)).generate(
        paragraphs, temperature=0, max_new_tokens=MAX_NEW_TOKENS) == expected
    # What qg-serve, qg-generate and evaluate_qg.py load for --model FOLDER: the folder's model.bin picks the engine.
    loaded = QuestionGenerator.from_pretrained(str(float32_dir))
    assert loaded.engine.describe()["engine"] == "ctranslate2"
    assert loaded.generate(paragraphs, temperature=0, max_new_tokens=MAX_NEW_TOKENS) == expected


@torch.inference_mode()
def test_int8_logits_close_and_greedy_diverges_only_at_near_ties(merged, float32_dir, int8_dir, paragraphs):
    _, model, tokenizer = merged
    exact, quantised = CTranslate2Engine(float32_dir), CTranslate2Engine(int8_dir)
    assert quantised.describe()["compute_type"] == "int8_float32" and exact.describe()["compute_type"] == "float32"
    encoded = prompts(tokenizer, paragraphs)[1:]
    for prompt in encoded:
        difference = np.abs(ct2_logits(quantised, prompt.input_ids) - ct2_logits(exact, prompt.input_ids))
        assert 0 < difference.max() <= INT8_LOGIT_TOLERANCE  # 0 would mean the weights were not quantised
    rows = quantised.prepare(encoded).sample_ids([1] * len(encoded), GREEDY)
    agreeing = 0
    for prompt, [tokens] in zip(encoded, rows):
        expected, gaps = transformers_greedy(model, tokenizer, prompt.input_ids)
        step = next((i for i, (a, b) in enumerate(zip(tokens, expected)) if a != b), None)
        if step is None:
            assert tokens == expected
            agreeing += 1
        else:
            assert gaps[step] <= 2 * INT8_LOGIT_TOLERANCE, (step, gaps[step])
    assert agreeing >= 3 * len(encoded) / 4


def test_nucleus_sampling_returns_the_requested_counts(merged, float32_dir, paragraphs):
    tokenizer = merged[2]
    engine = CTranslate2Engine(float32_dir)
    end = end_of_turn_id(tokenizer)
    encoded = prompts(tokenizer, paragraphs)[1:]
    decoding = Decoding(temperature=1.5, top_p=0.95, max_new_tokens=8)
    rows = engine.prepare(encoded).sample_ids([3, 0, 2, 5], decoding)
    assert [len(r) for r in rows] == [3, 0, 2, 5]
    for row in rows:
        for tokens in row:
            assert 0 < len(tokens) <= 8 and end not in tokens[:-1]
    assert len({tuple(tokens) for tokens in rows[3]}) > 1  # five samples, not one sample copied
    texts = engine.prepare(encoded).sample([1, 2, 0, 1], decoding)
    assert [len(t) for t in texts] == [1, 2, 0, 1]
    assert all(text is None or isinstance(text, str) for row in texts for text in row)


def test_missing_or_foreign_folders_are_refused_in_one_line(tmp_path):
    with pytest.raises(UserError, match=r"does not exist: give a folder written by qg-export --ctranslate2"):
        CTranslate2Engine(tmp_path / "absent")
    with pytest.raises(UserError, match=r"has no model.bin: not a CTranslate2 model folder"):
        CTranslate2Engine(tiny_model_dir())  # a transformers folder
    with pytest.raises(UserError, match=r"has no config.json: give a merged model folder"):
        convert(tmp_path, tmp_path / "out")
    with pytest.raises(UserError, match=r"unknown quantization 'int4'; choose one of int8, float32"):
        convert(tiny_model_dir(), tmp_path / "out", quantization="int4")
    assert not (tmp_path / "out").exists()


def test_conversion_replaces_an_earlier_export_whole_and_nothing_else(merged, tmp_path):
    out = tmp_path / "ct2"
    convert(merged[0], out, quantization="float32")
    float32_size = (out / "model.bin").stat().st_size
    convert(merged[0], out, quantization="int8")
    assert (out / "model.bin").stat().st_size < float32_size  # int8 weights replaced the float32 ones
    (out / "notes.txt").write_text("the user's")
    with pytest.raises(UserError, match="notes.txt, which qg-export did not write"):
        convert(merged[0], out, quantization="int8")
    assert (out / "notes.txt").read_text() == "the user's"
    (out / "notes.txt").unlink()
    assert {"model.bin", "config.json", "tokenizer.json", "tokenizer_config.json"} <= {p.name for p in out.iterdir()}
    assert not [p for p in tmp_path.iterdir() if p.name != "ct2"]  # no temporary folder left beside it


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    """(folder, peft model): a random LoRA on the tiny model; init_lora_weights=False makes its B nonzero, so
    leaving the merge out would change the logits."""
    base, tokenizer = load_base(TINY_MODEL)
    torch.manual_seed(1)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM",
                                            init_lora_weights=False)).eval()
    folder = tmp_path_factory.mktemp("adapter") / "lora"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    # The base by name, as training records it: export loads it from adapter_config.json.
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] != TINY_MODEL
    (folder / "adapter_config.json").write_text(json.dumps(dict(config, base_model_name_or_path=TINY_MODEL)))
    return folder, model, tokenizer


def export_cli(source, destination, *argv) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `qg-export SOURCE --ctranslate2 DESTINATION argv`."""
    out, err = StringIO(), StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            export_command.main([str(a) for a in (source, "--ctranslate2", destination, *argv)])
            code = 0
        except SystemExit as exit_:
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


@torch.inference_mode()
def test_export_merges_an_adapter_into_its_base(adapter_dir, tmp_path, paragraphs):
    folder, model, tokenizer = adapter_dir
    out = tmp_path / "exports" / "ct2"
    code, stdout, stderr = export_cli(folder, out, "--quantization", "float32")
    assert (code, stdout) == (0, f"exported {folder} -> {out} (CTranslate2, float32)\n"), stderr
    engine = CTranslate2Engine(out)
    prompt = encode_prompt(tokenizer, paragraphs[1]).input_ids
    expected = model(torch.tensor([prompt])).logits[0].numpy()  # the adapter applied by peft, unmerged
    np.testing.assert_allclose(ct2_logits(engine, prompt), expected, rtol=0, atol=1e-4)
    assert [p.name for p in out.parent.iterdir()] == ["ct2"]  # the merged copy was removed


def test_export_refuses_in_one_line_before_loading_anything(adapter_dir, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    assert export_cli(adapter_dir[0], taken) == (
        2, "", f"error: {taken} exists: choose another folder or pass --overwrite\n")
    code, _, stderr = export_cli(tmp_path / "nothing", tmp_path / "out")
    assert code == 2 and stderr == f"error: {tmp_path / 'nothing'} has no config.json: give a merged model folder, " \
                                   "or an adapter to qg-export --ctranslate2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
