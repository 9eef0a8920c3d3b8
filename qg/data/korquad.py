"""KorQuAD 1.0 (SQuAD v1.1 JSON) in: read a file or the Hub, parse and normalise into paragraphs with their questions.

One paragraph is one KorQuAD context with the questions asked about it; `parse_korquad` says what it kept and
dropped in a `ParseReport`, which the dataset card states.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
from tqdm import tqdm

from qg.cli import UserError, one_line
from qg.text import normalize_text, normalized_offset

KORQUAD_HUB_ID = "KorQuAD/squad_kor_v1"
# The branch where the Hub keeps its own parquet conversion of a dataset repository, loading scripts included.
PARQUET_EXPORT = "refs/convert/parquet"
# Original Korean paragraphs in KorQuAD's format, written for the project: the embedded default (package data).
SAMPLE_DIR = Path(str(importlib.resources.files("qg.data") / "sample"))

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


def sample_sources() -> tuple[KorQuADSource, KorQuADSource]:
    """The bundled sample's train and dev files."""
    return read_korquad_json(SAMPLE_DIR / "train.json"), read_korquad_json(SAMPLE_DIR / "dev.json")


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
    """The official train and dev sets from the Hub; any failure is one `UserError` line saying what to do instead.

    The repository's own parquet files when it has them; while it holds only a loading script (which datasets no
    longer runs: "Dataset scripts are no longer supported"), the Hub's parquet conversion of it.
    """
    # Here, not at the top: the models, training and generation modules import this one (SAMPLE_DIR, parsing),
    # and so do the Space's copy of qg/ and bench/bench_gpu.py, which have no `datasets`.
    import datasets
    from datasets.exceptions import DatasetsError

    try:
        hub = datasets.load_dataset(str(_parquet_snapshot(repo_id)))
        train, dev = hub["train"], hub["validation"]
    except LocalEntryNotFoundError:
        problem = "the Hub cannot be reached and it is not in the local cache"
    except RepositoryNotFoundError:
        problem = "no such dataset on the Hub, or it is private"
    except RevisionNotFoundError:
        problem = (f"it holds only a loading script, which datasets no longer runs, and the Hub has no parquet "
                   f"conversion of it ({PARQUET_EXPORT})")
    except KeyError as err:
        problem = f"it has no {err} split"
    except (OSError, DatasetsError) as err:
        problem = one_line(err)
    else:
        return (KorQuADSource(f"{repo_id} (train)", squad_rows_to_json(train)),
                KorQuADSource(f"{repo_id} (validation)", squad_rows_to_json(dev)))
    raise UserError(f"cannot load {repo_id} from the Hugging Face Hub ({problem}); build from the official files "
                    "instead: download KorQuAD_v1.0_train.json and KorQuAD_v1.0_dev.json from "
                    "https://korquad.github.io and pass --train-json KorQuAD_v1.0_train.json "
                    "--dev-json KorQuAD_v1.0_dev.json")


def _parquet_snapshot(repo_id: str) -> Path:
    """A local copy of the parquet files of `repo_id` (and its card, which may name them): from its main branch, or
    from the Hub's parquet conversion when main has none (a script-only repository)."""
    for revision in ["main", PARQUET_EXPORT]:
        folder = Path(snapshot_download(repo_id, repo_type="dataset", revision=revision,
                                        allow_patterns=["README.md", "*.parquet"]))
        if any(folder.rglob("*.parquet")):
            return folder
    raise FileNotFoundError(f"no parquet files in {repo_id}, on main or {PARQUET_EXPORT}")


# ---------------------------------------------------------------------------------------------------- parsing


def parse_korquad(source: KorQuADSource, strict: bool = False) -> tuple[list[Paragraph], ParseReport]:
    """Paragraphs of one KorQuAD source, normalised (see `qg.text.normalize_text`), in the order of the file.

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
        start = normalized_offset(raw_context, raw_start)
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
