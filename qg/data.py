"""KorQuAD 1.0 (SQuAD v1.1 format) to the question-generation dataset: parse, normalise, split by article, write.

One paragraph is one KorQuAD context with the questions asked about it. The builder writes two configs of the
same splits: `default` (one row per paragraph) and `pairs` (one row per question), as parquet in the layout
`push_to_hub` uses, with the dataset card, so `datasets.load_dataset(DIR)` and the Hub read the same thing.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import httpx2
import pyarrow as pa
import pyarrow.parquet as pq
from huggingface_hub import DatasetCard, get_token, metadata_load
from huggingface_hub.errors import HFValidationError
from tqdm import tqdm

from qg.cli import UserError
from qg.io import atomic_dir

KORQUAD_HUB_ID = "KorQuAD/squad_kor_v1"
CONFIGS = ("default", "pairs")
SAMPLE_BUILD_COMMAND = (
    "python hub_dataset/build_dataset.py --train-json hub_dataset/sample/train.json "
    "--dev-json hub_dataset/sample/dev.json --output-dir {output_dir}"
)

FEATURES = {
    "default": datasets.Features({
        "id": datasets.Value("string"),
        "title": datasets.Value("string"),
        "context": datasets.Value("string"),
        "questions": datasets.List(datasets.Value("string")),
        "answers": datasets.List({"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}),
    }),
    "pairs": datasets.Features({
        "id": datasets.Value("string"),
        "title": datasets.Value("string"),
        "context": datasets.Value("string"),
        "question": datasets.Value("string"),
        "answer": datasets.Value("string"),
        "answer_start": datasets.Value("int32"),
    }),
}

_WHITESPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Unicode NFC; every run of whitespace (newlines, tabs, no-break spaces) one space; no space at either end."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def data_file_pattern(config: str, split: str) -> str:
    """Where a split's parquet files live: the folder `push_to_hub(data_dir=f"data/{config}")` writes to."""
    return f"data/{config}/{split}-*"


@dataclass
class KorQuADSource:
    """Raw SQuAD v1.1 JSON and where it came from."""

    name: str  # a file path or "KorQuAD/squad_kor_v1 (train)": names the input in errors and the card
    squad: dict
    sha256: str | None = None  # of the file's bytes; None for Hub rows


@dataclass
class Paragraph:
    """One context with its questions; `answers[i]` answers `questions[i]` and sits at its `answer_start`."""

    id: str
    title: str
    context: str
    questions: list[str] = field(default_factory=list)
    question_ids: list[str] = field(default_factory=list)  # the KorQuAD ids, the `id` of the pairs config
    answers: list[dict] = field(default_factory=list)  # {"text", "answer_start"}


@dataclass
class ParseReport:
    """What parsing one source kept and dropped: the card states it."""

    source: str
    sha256: str | None
    articles: int = 0
    paragraphs_read: int = 0
    questions_read: int = 0
    duplicate_paragraphs_merged: int = 0  # the same context twice under one title: one paragraph
    empty_questions_dropped: int = 0
    duplicate_questions_dropped: int = 0  # exact duplicates (after normalisation) within a paragraph
    misaligned_answer_ids: list[str] = field(default_factory=list)
    answers_repaired: int = 0  # misaligned answers found elsewhere in the context (the occurrence nearest the claim)
    paragraphs_without_questions_dropped: int = 0

    @property
    def answers_dropped(self) -> int:
        """Misaligned answers whose text is nowhere in the context: their questions are dropped."""
        return len(self.misaligned_answer_ids) - self.answers_repaired


@dataclass
class QGDatasetBuild:
    """A finished build: the splits and everything the dataset card reports about how they were made."""

    splits: dict[str, list[Paragraph]]
    reports: dict[str, ParseReport]  # "train": the official train set, "test": the official dev set
    overlap_paragraphs_dropped: int  # train-side paragraphs sharing an article or a context with a later split
    validation_fraction: float
    max_train_samples: int | None
    seed: int
    hub_repo_id: str | None = None


# ---------------------------------------------------------------------------------------------------- reading


def read_korquad_json(path: str | Path) -> KorQuADSource:
    """Read a KorQuAD/SQuAD JSON file; a missing or unreadable file is a `UserError` naming it."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if not path.is_file():
        raise UserError(f"{path}: not a file")
    raw = path.read_bytes()
    try:
        squad = json.loads(raw)
    except UnicodeDecodeError:
        raise UserError(f"{path}: not JSON (not UTF-8 text)") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not JSON ({err})") from None
    return KorQuADSource(name=str(path), squad=squad, sha256=hashlib.sha256(raw).hexdigest())


def squad_rows_to_json(rows: Iterable[dict]) -> dict:
    """SQuAD rows (`id, title, context, question, answers{text[], answer_start[]}`, the Hub layout) to SQuAD JSON."""
    articles: dict[str, dict[str, list]] = {}
    for row in rows:
        qas = articles.setdefault(row["title"], {}).setdefault(row["context"], [])
        answers = zip(row["answers"]["text"], row["answers"]["answer_start"], strict=True)
        qas.append({
            "id": row["id"],
            "question": row["question"],
            "answers": [{"text": text, "answer_start": start} for text, start in answers],
        })
    return {"data": [
        {"title": title, "paragraphs": [{"context": context, "qas": qas} for context, qas in paragraphs.items()]}
        for title, paragraphs in articles.items()
    ]}


def load_korquad_from_hub(repo_id: str = KORQUAD_HUB_ID) -> tuple[KorQuADSource, KorQuADSource]:
    """The official train and dev sets from the Hub; an unreachable Hub is one `UserError` line."""
    try:
        hub = datasets.load_dataset(repo_id)
    except OSError as err:  # no connection, no such repo, HTTP errors
        raise UserError(
            f"cannot load {repo_id} from the Hugging Face Hub ({_one_line(err)}); build from local files instead: "
            "--train-json KorQuAD_v1.0_train.json --dev-json KorQuAD_v1.0_dev.json (from https://korquad.github.io)"
        ) from None
    return (
        KorQuADSource(f"{repo_id} (train)", squad_rows_to_json(hub["train"])),
        KorQuADSource(f"{repo_id} (validation)", squad_rows_to_json(hub["validation"])),
    )


# ---------------------------------------------------------------------------------------------------- parsing


def parse_korquad(source: KorQuADSource, strict: bool = False) -> tuple[list[Paragraph], ParseReport]:
    """Paragraphs of one KorQuAD source, normalised (see `normalize_text`), in the order of the file.

    An answer is misaligned when, after normalisation, its `answer_start` does not point at its text. With
    `strict` that is a `UserError`; otherwise the answer moves to the occurrence of its text nearest the claimed
    offset, or, when the context does not contain it, its question is dropped. Only the first answer of each
    question is kept (KorQuAD has one; SQuAD dev sets list several references for the same question).
    """
    report = ParseReport(source=source.name, sha256=source.sha256)
    paragraphs: dict[tuple[str, str], Paragraph] = {}  # by (title, context): a repeated context merges
    articles = _expect_list(source.squad, "data", "top level", source.name)
    titles = set()
    for a, article in enumerate(tqdm(articles, desc=f"parsing {Path(source.name).name}", unit=" articles",
                                     disable=None)):  # None: only on a terminal
        where = f"data[{a}]"
        title = normalize_text(_expect_str(article, "title", where, source.name))
        titles.add(title)
        for p, raw_paragraph in enumerate(_expect_list(article, "paragraphs", where, source.name)):
            where = f"data[{a}].paragraphs[{p}]"
            raw_context = _expect_str(raw_paragraph, "context", where, source.name)
            context = normalize_text(raw_context)
            report.paragraphs_read += 1
            if (title, context) in paragraphs:
                report.duplicate_paragraphs_merged += 1
            else:
                paragraphs[title, context] = Paragraph(id=_paragraph_id(title, context), title=title, context=context)
            paragraph = paragraphs[title, context]
            for q, qa in enumerate(_expect_list(raw_paragraph, "qas", where, source.name)):
                report.questions_read += 1
                qa_where = f"{where}.qas[{q}]"
                question = normalize_text(_expect_str(qa, "question", qa_where, source.name))
                qid = str(_expect_key(qa, "id", qa_where, source.name))
                answer_text, answer_start = _first_answer(qa, qa_where, source.name)
                if not question:
                    report.empty_questions_dropped += 1
                    continue
                located = _locate_answer(raw_context, context, answer_text, answer_start)
                if located is None:
                    report.misaligned_answer_ids.append(qid)
                    continue
                text, start, moved = located
                if moved:
                    report.misaligned_answer_ids.append(qid)
                    report.answers_repaired += 1
                if question in paragraph.questions:
                    report.duplicate_questions_dropped += 1
                    continue
                paragraph.questions.append(question)
                paragraph.question_ids.append(qid)
                paragraph.answers.append({"text": text, "answer_start": start})
    report.articles = len(titles)
    if strict and report.misaligned_answer_ids:
        raise UserError(
            f"{source.name}: {_misaligned_summary(report.misaligned_answer_ids)}; fix them, or leave out --strict "
            "to repair them by searching the context"
        )
    kept = [paragraph for paragraph in paragraphs.values() if paragraph.questions]
    report.paragraphs_without_questions_dropped = len(paragraphs) - len(kept)
    return kept, report


def misaligned_warning(report: ParseReport) -> str | None:
    """The warning line for a source with misaligned answers, or None."""
    if not report.misaligned_answer_ids:
        return None
    return (f"{report.source}: {_misaligned_summary(report.misaligned_answer_ids)}; repaired "
            f"{report.answers_repaired} by searching the context, dropped {report.answers_dropped}")


def _misaligned_summary(ids: list[str], shown: int = 10) -> str:
    listed = ", ".join(ids[:shown]) + (f" and {len(ids) - shown} more" if len(ids) > shown else "")
    return f"{len(ids)} answer(s) whose answer_start does not point at the answer text (ids: {listed})"


def _locate_answer(raw_context: str, context: str, raw_text: str, raw_start: int) -> tuple[str, int, bool] | None:
    """(text, start, moved) of the answer in the normalised context; None when the context does not contain it."""
    text = normalize_text(raw_text)
    if not text:
        return None
    raw_start += len(raw_text) - len(raw_text.lstrip())  # leading spaces of the answer are not part of it
    if raw_context == context:
        start = raw_start
    else:
        # The normalised text before the answer is as long as the answer's offset in the normalised context.
        start = len(_WHITESPACE.sub(" ", unicodedata.normalize("NFC", raw_context[:raw_start])).lstrip())
    if raw_start >= 0 and context.startswith(text, start):
        return text, start, False
    occurrences = [m.start() for m in re.finditer(re.escape(text), context)]
    if not occurrences:
        return None
    return text, min(occurrences, key=lambda found: abs(found - start)), True


def _first_answer(qa: object, where: str, source: str) -> tuple[str, int]:
    answers = _expect_list(qa, "answers", where, source)
    if not answers:
        raise UserError(f"{source}: not KorQuAD/SQuAD v1.1 JSON: {where} has no answer (SQuAD 2.0 is not supported)")
    text = _expect_str(answers[0], "text", f"{where}.answers[0]", source)
    start = _expect_key(answers[0], "answer_start", f"{where}.answers[0]", source)
    if not isinstance(start, int) or isinstance(start, bool):
        raise UserError(f"{source}: not KorQuAD/SQuAD v1.1 JSON: {where}.answers[0].answer_start is not an integer")
    return text, start


def _expect_key(obj: object, key: str, where: str, source: str) -> object:
    if not isinstance(obj, dict) or key not in obj:
        raise UserError(f"{source}: not KorQuAD/SQuAD v1.1 JSON: {where} has no '{key}'")
    return obj[key]


def _expect_list(obj: object, key: str, where: str, source: str) -> list:
    value = _expect_key(obj, key, where, source)
    if not isinstance(value, list):
        raise UserError(f"{source}: not KorQuAD/SQuAD v1.1 JSON: {where}.{key} is not a list")
    return value


def _expect_str(obj: object, key: str, where: str, source: str) -> str:
    value = _expect_key(obj, key, where, source)
    if not isinstance(value, str):
        raise UserError(f"{source}: not KorQuAD/SQuAD v1.1 JSON: {where}.{key} is not a string")
    return value


def _paragraph_id(title: str, context: str) -> str:
    # From the content, so a paragraph keeps its id across rebuilds, seeds and sources (file or Hub).
    return hashlib.sha1(f"{title}\n{context}".encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------- splits


def split_by_article(train: list[Paragraph], test: list[Paragraph], validation_fraction: float,
                     seed: int) -> tuple[dict[str, list[Paragraph]], int]:
    """`test` as given; `validation`: ceil(fraction x articles) articles of `train`, drawn with `seed`; `train`: the
    rest.

    No article (title) and no context is in two splits: train-side paragraphs that share either with a later
    split are dropped; the second value counts them.
    """
    test_titles = {p.title for p in test}
    test_contexts = {p.context for p in test}
    candidates = [p for p in train if p.title not in test_titles and p.context not in test_contexts]
    titles = sorted({p.title for p in candidates})
    if len(titles) < 2:
        raise UserError(f"the train set has {len(titles)} article(s) outside the dev set; validation and train "
                        "need at least one each")
    validation_articles = math.ceil(validation_fraction * len(titles))
    if validation_articles >= len(titles):
        raise UserError(
            f"the train set has {len(titles)} article(s) not in the dev set; --validation-fraction "
            f"{validation_fraction} takes {validation_articles} for validation and leaves none for train"
        )
    validation_titles = set(random.Random(seed).sample(titles, validation_articles))
    validation = [p for p in candidates if p.title in validation_titles]
    validation_contexts = {p.context for p in validation}
    rest = [p for p in candidates if p.title not in validation_titles and p.context not in validation_contexts]
    if not rest:
        raise UserError("every train paragraph also appears in the validation articles; lower --validation-fraction")
    dropped = len(train) - len(validation) - len(rest)
    return {"train": rest, "validation": validation, "test": test}, dropped


def limit_questions(paragraphs: list[Paragraph], max_questions: int, seed: int) -> list[Paragraph]:
    """Whole paragraphs with at most `max_questions` questions in all.

    Paragraphs are visited in an order shuffled with `seed`; each is taken when it still fits, so every paragraph
    left out would push the total past `max_questions` (with many small paragraphs, as in KorQuAD, the total is
    exactly `max_questions`). The kept ones stay in their original order.
    """
    order = list(range(len(paragraphs)))
    random.Random(seed).shuffle(order)
    taken, total = set(), 0
    for index in order:
        size = len(paragraphs[index].questions)
        if total + size <= max_questions:
            taken.add(index)
            total += size
            if total == max_questions:
                break
    if not taken:
        smallest = min(len(p.questions) for p in paragraphs)
        raise UserError(f"--max-train-samples {max_questions} is smaller than every train paragraph "
                        f"(the smallest has {smallest} questions)")
    return [paragraph for index, paragraph in enumerate(paragraphs) if index in taken]


# ---------------------------------------------------------------------------------------------------- building


def build_qg_dataset(train: KorQuADSource, dev: KorQuADSource, output_dir: str | Path, *,
                     validation_fraction: float = 0.05, max_train_samples: int | None = None, seed: int = 0,
                     strict: bool = False, hub_repo_id: str | None = None) -> QGDatasetBuild:
    """Parse, split and write both configs and the dataset card to `output_dir`, atomically.

    `output_dir` may be absent, empty, or a previous build (replaced); nothing else, so a typo cannot replace an
    unrelated folder. Any error leaves it as it was. `hub_repo_id`: where it will be pushed, for the card's example.
    """
    from qg.dataset_card import dataset_card  # the card module reads this one's types

    output_dir = Path(output_dir)
    if output_dir.exists() and not _is_previous_build(output_dir):
        raise UserError(f"{output_dir} exists and is not a dataset built by this script; "
                        "choose another --output-dir or remove it")
    train_paragraphs, train_report = parse_korquad(train, strict)
    test_paragraphs, test_report = parse_korquad(dev, strict)
    for source, paragraphs in [(train, train_paragraphs), (dev, test_paragraphs)]:
        if not paragraphs:
            raise UserError(f"{source.name}: no paragraph with a usable question")
    splits, overlap = split_by_article(train_paragraphs, test_paragraphs, validation_fraction, seed)
    if max_train_samples is not None:
        splits["train"] = limit_questions(splits["train"], max_train_samples, seed)
    build = QGDatasetBuild(splits=splits, reports={"train": train_report, "test": test_report},
                           overlap_paragraphs_dropped=overlap, validation_fraction=validation_fraction,
                           max_train_samples=max_train_samples, seed=seed, hub_repo_id=hub_repo_id)
    with atomic_dir(output_dir) as tmp:
        for config in CONFIGS:
            for split, paragraphs in splits.items():
                path = tmp / data_file_pattern(config, split).replace("*", "00000-of-00001.parquet")
                path.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(pa.Table.from_pydict(_columns(paragraphs, config),
                                                    schema=FEATURES[config].arrow_schema), path)
        dataset_card(build).save(tmp / "README.md")
    return build


def _is_previous_build(path: Path) -> bool:
    return path.is_dir() and {entry.name for entry in path.iterdir()} <= {"README.md", "data"}


def _columns(paragraphs: list[Paragraph], config: str) -> dict[str, list]:
    if config == "default":
        return {
            "id": [p.id for p in paragraphs],
            "title": [p.title for p in paragraphs],
            "context": [p.context for p in paragraphs],
            "questions": [p.questions for p in paragraphs],
            "answers": [p.answers for p in paragraphs],
        }
    pairs = [(p, i) for p in paragraphs for i in range(len(p.questions))]
    return {
        "id": [p.question_ids[i] for p, i in pairs],
        "title": [p.title for p, _ in pairs],
        "context": [p.context for p, _ in pairs],
        "question": [p.questions[i] for p, i in pairs],
        "answer": [p.answers[i]["text"] for p, i in pairs],
        "answer_start": [p.answers[i]["answer_start"] for p, i in pairs],
    }


# ---------------------------------------------------------------------------------------------------- the Hub


def hub_token() -> str:
    """The saved or `HF_TOKEN` Hugging Face token; without one, a `UserError` saying how to get one."""
    token = get_token()
    if token is None:
        raise UserError("pushing to the Hub needs a Hugging Face token: run `hf auth login` or set HF_TOKEN")
    return token


def push_qg_dataset(output_dir: str | Path, repo_id: str, *, private: bool = False, token: str | None = None) -> None:
    """Push both configs of a build and its card to the dataset repo `repo_id`, in the layout of `output_dir`."""
    output_dir = Path(output_dir)
    try:
        for config in CONFIGS:
            _load_built_folder(output_dir, config).push_to_hub(
                repo_id, config_name=config, data_dir=f"data/{config}", private=private, token=token)
        # push_to_hub wrote its own README for each config; the card replaces it, with the same `configs`.
        DatasetCard.load(output_dir / "README.md").push_to_hub(repo_id, token=token)
    except (OSError, httpx2.HTTPError, HFValidationError) as err:
        raise UserError(f"could not push to {repo_id} ({_one_line(err)}); the dataset is built in {output_dir}, "
                        "run again to retry") from None


def load_qg_dataset(name_or_path: str, config: str = "pairs") -> datasets.DatasetDict:
    """A dataset built by `hub_dataset/build_dataset.py`: a local folder, or a Hub id when no such folder exists."""
    if config not in CONFIGS:
        raise UserError(f"unknown dataset config {config!r}: choose one of {', '.join(CONFIGS)}")
    how_to_build = SAMPLE_BUILD_COMMAND.format(output_dir=name_or_path)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return _load_built_folder(path, config)
    if path.exists() or not re.fullmatch(r"\w[\w.-]*/\w[\w.-]*", name_or_path):  # not shaped like ORG/NAME
        raise UserError(f"{name_or_path}: no dataset folder there; build it with: {how_to_build}")
    try:
        return datasets.load_dataset(name_or_path, name=config)
    except OSError as err:  # no connection, no such repo, HTTP errors
        raise UserError(f"{name_or_path} is no local folder and could not be loaded from the Hugging Face Hub "
                        f"({_one_line(err)}); to build it locally: {how_to_build}") from None


def _load_built_folder(path: Path, config: str) -> datasets.DatasetDict:
    # Not `datasets.load_dataset(path, name=config)`: that caches a local folder by its README alone, so after a
    # rebuild into the same folder it returns the old rows. Parquet files named explicitly are cached by their path
    # and modification time.
    readme = path / "README.md"
    metadata = (metadata_load(readme) or {}) if readme.is_file() else {}
    data_files = {c["config_name"]: c["data_files"] for c in metadata.get("configs", [])}
    if config not in data_files:
        raise UserError(f"{path} is not a dataset built by hub_dataset/build_dataset.py (no config {config!r} in "
                        f"its README.md); build one with: {SAMPLE_BUILD_COMMAND.format(output_dir=path)}")
    return datasets.load_dataset("parquet", data_files={f["split"]: str(path / f["path"]) for f in data_files[config]})


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__
