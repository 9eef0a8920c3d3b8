"""qg-generate: recommended questions for every paragraph of a corpus; resumable, data-parallel through Accelerate.

    qg-generate corpus.jsonl --model ORG/exaone-3.5-2.4b-korquad-qg-lora --output questions.jsonl
    qg-generate chunks.parquet --text-column chunk --id-column chunk_id --model outputs/demo/adapter \\
        --output questions.parquet --format parquet
    qg-generate notes.txt --model tiny-random-exaone --output questions.jsonl     # paragraphs: blank-line separated
    qg-generate --dataset ORG/NAME --split validation --text-column context --model ... --output questions.jsonl
    accelerate launch --num_processes 4 -m qg.serving.batch corpus.jsonl --model ... --output questions.jsonl
    accelerate launch --multi_gpu --num_processes 2 -m qg.serving.batch ...   # 2 CPU processes, on a machine without
                                                                              # GPUs (--cpu starts only one)

Input: JSON Lines, CSV or Parquet with a text column (--text-column) and optionally an id column (--id-column; else
the row number, from 0), a .txt file whose paragraphs are separated by blank lines, or a datasets dataset (--dataset,
a Hub id or a local dataset folder). Output: one JSON line per input row, in input order, {"id", "questions",
"rejected" (reason -> count), "truncated" (the paragraph was cut to the token budget), "error"}; a row whose text is
empty keeps its place with "error" set and no questions. --format parquet writes the same columns as Parquet.

Resuming: finished paragraphs are appended to OUTPUT.partial (its first line holds the run's settings and their
fingerprint). Running the same command after Ctrl-C or kill -9 continues from there: a line cut by the kill is
generated again, and a command with other settings or other input is refused. The output appears in one rename at
the end, whole or not at all.

Rows are cut into chunks of --batch-size non-empty paragraphs, and chunk k is one `QuestionGenerator.generate` call
with seed --seed + k. So the output depends on the command only, not on how many processes shared the chunks or
where an interrupted run stopped. Under `accelerate launch` process p takes chunks p, p + N, ...; the main process
gathers each round's records, keeps the side file and writes the output.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from qg.cli import UserError, command, non_negative_float, one_line, positive_int, probability_mass
from qg.generate import EngineError
from qg.io import atomic_file
from qg.serving.model_info import PROMPT_VERSION, revision
from qg.serving.options import GENERATE_DEFAULTS, add_generator_arguments, load_generator

EMPTY_TEXT = "empty text"
PARTIAL_SUFFIX = ".partial"
# Blank lines separate the paragraphs of a text file; a line of spaces counts as blank.
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r]*\n")


@dataclass
class Row:
    id: object
    text: str | None  # None: the row's text is empty or missing, so it gets an error instead of questions


def _cell_text(value, where: str, column: str) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise UserError(f"{where}: column {column!r} holds {type(value).__name__} {value!r}, not text; "
                        "choose the text column with --text-column")
    return value


def _cell_id(value):
    """Ids go into JSON: numbers and strings as they are, anything else (dates, bytes) as its string."""
    return value if value is None or isinstance(value, (str, int, float)) else str(value)


def _check_columns(columns, text_column: str, id_column: str | None, where: str) -> None:
    for column, flag in ((text_column, "--text-column"), (id_column, "--id-column")):
        if column is not None and column not in columns:
            raise UserError(f"{where} has no column {column!r} (it has {', '.join(map(str, columns)) or 'none'}): "
                            f"name the right one with {flag}")


def _row(record: dict, index: int, where: str, text_column: str, id_column: str | None) -> Row:
    _check_columns(record, text_column, id_column, where)
    return Row(index if id_column is None else _cell_id(record[id_column]),
               _cell_text(record[text_column], where, text_column))


def read_jsonl(path: Path, text_column: str, id_column: str | None) -> list[Row]:
    rows = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{path} line {number} is not valid JSON ({err.msg}): fix or remove it") from None
            if not isinstance(record, dict):
                raise UserError(f"{path} line {number} is a JSON {type(record).__name__}, not an object")
            rows.append(_row(record, len(rows), f"{path} line {number}", text_column, id_column))
    return rows


def read_csv(path: Path, text_column: str, id_column: str | None) -> list[Row]:
    rows = []
    with path.open(encoding="utf-8", newline="") as file:
        reader = csv.DictReader(file, strict=True)
        try:
            if reader.fieldnames is None:
                return rows
            _check_columns(reader.fieldnames, text_column, id_column, f"{path}'s header")
            for record in reader:
                where = f"{path} line {reader.line_num}"
                if None in record or None in record.values():  # DictReader's marks of a row too long or too short
                    raise UserError(f"{where} does not have the header's {len(reader.fieldnames)} fields")
                rows.append(_row(record, len(rows), where, text_column, id_column))
        except csv.Error as err:
            raise UserError(f"{path} line {reader.line_num} is not valid CSV ({err})") from None
    return rows


def read_parquet(path: Path, text_column: str, id_column: str | None) -> list[Row]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
        _check_columns(schema.names, text_column, id_column, str(path))
        table = pq.read_table(path, columns=[c for c in (text_column, id_column) if c is not None])
    except pa.ArrowException as err:
        raise UserError(f"{path} is not a readable Parquet file ({one_line(err)})") from None
    texts = table.column(text_column).to_pylist()
    ids = range(len(texts)) if id_column is None else table.column(id_column).to_pylist()
    return [Row(_cell_id(i), _cell_text(t, f"{path} row {n}", text_column)) for n, (i, t) in enumerate(zip(ids, texts))]


def read_text(path: Path, text_column: str, id_column: str | None) -> list[Row]:
    if id_column is not None:
        raise UserError(f"{path} is plain text: its paragraphs have no columns, so --id-column has nothing to name")
    paragraphs = [p.strip() for p in _PARAGRAPH_BREAK.split(path.read_text(encoding="utf-8"))]
    return [Row(index, text) for index, text in enumerate(p for p in paragraphs if p)]


READERS = {".jsonl": read_jsonl, ".csv": read_csv, ".parquet": read_parquet, ".txt": read_text}


def read_file(path: Path, text_column: str, id_column: str | None) -> list[Row]:
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise UserError(f"{path}: unknown input format {path.suffix or '(no extension)'!r}; give a "
                        f"{', '.join(READERS)} file, or --dataset for a datasets dataset")
    if not path.is_file():
        raise UserError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        return reader(path, text_column, id_column)
    except UnicodeDecodeError as err:
        raise UserError(f"{path} is not UTF-8 text (byte {err.start})") from None


def read_dataset(name: str, split: str, text_column: str, id_column: str | None) -> list[Row]:
    import datasets

    try:
        dataset = datasets.load_dataset(name, split=split)
    # Offline or unreachable (ConnectionError), no such dataset (FileNotFoundError), no such split (ValueError).
    except (ConnectionError, FileNotFoundError, ValueError) as err:
        raise UserError(f"cannot load dataset {name} split {split}: {one_line(err)}") from None
    _check_columns(dataset.column_names, text_column, id_column, f"dataset {name} split {split}")
    texts = dataset[text_column]
    ids = range(len(texts)) if id_column is None else dataset[id_column]
    return [Row(_cell_id(i), _cell_text(t, f"dataset {name} row {n}", text_column))
            for n, (i, t) in enumerate(zip(ids, texts))]


def check_parquet_ids(rows: list[Row]) -> None:
    """Refuse, before any generation, ids that cannot share one Parquet column (say numbers and strings)."""
    import pyarrow as pa

    try:
        pa.array([row.id for row in rows])
    except pa.ArrowException:
        kinds = sorted({type(row.id).__name__ for row in rows})
        raise UserError(f"the ids mix {' and '.join(kinds)}, which one Parquet column cannot hold: "
                        "use --format jsonl, or an --id-column of one type") from None


def chunks_of(rows: list[Row], batch_size: int) -> list[list[int]]:
    """Row indices of the non-empty paragraphs, `batch_size` at a time: the unit of generation, seeding and sharing."""
    todo = [index for index, row in enumerate(rows) if row.text is not None]
    return [todo[start:start + batch_size] for start in range(0, len(todo), batch_size)]


def error_record(row: Row, error: str) -> dict:
    return {"id": row.id, "questions": [], "rejected": {}, "truncated": False, "error": error}


def generate_chunk(generator, rows: list[Row], chunk: list[int], seed: int, decoding: dict) -> list[dict]:
    """Partial-file records ("row" plus the output record) of one chunk, generated in one call."""
    results = generator.generate([rows[i].text for i in chunk], seed=seed, batch_size=len(chunk), **decoding)
    return [{"row": i, "id": rows[i].id, "questions": result.questions,
             "rejected": dict(sorted(result.rejected.items())), "truncated": result.truncated, "error": None}
            for i, result in zip(chunk, results)]


def rows_digest(rows: list[Row]) -> str:
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps([row.id, row.text], ensure_ascii=False).encode() + b"\n")
    return digest.hexdigest()


def read_partial(path: Path, fingerprint: str, rows: int) -> dict[int, dict]:
    """The records an interrupted run left for this fingerprint, by row; a cut last line is left out."""
    if not path.is_file():
        return {}
    with path.open(encoding="utf-8") as lines:
        try:
            header = json.loads(next(lines, "{}"))
        except json.JSONDecodeError:
            header = {}
        if header.get("fingerprint") != fingerprint:
            raise UserError(f"{path} holds an interrupted run with other settings or other input: run that "
                            "command again to finish it, or delete the file to start this one")
        done = {}
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                break  # cut by the interruption: that chunk is generated again
            if not 0 <= record.get("row", -1) < rows:
                break
            done[record["row"]] = record
    return done


def write_partial(path: Path, header: dict, done: dict[int, dict]) -> None:
    """The side file with only whole records, replaced in one rename, so appending after a cut line is safe."""
    with atomic_file(path) as tmp:
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in [header, *done.values()]),
                       encoding="utf-8")


def write_output(path: Path, records: list[dict], output_format: str) -> None:
    with atomic_file(path) as tmp:
        if output_format == "jsonl":
            tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({
            "id": pa.array([r["id"] for r in records]),
            "questions": pa.array([r["questions"] for r in records], pa.list_(pa.string())),
            "rejected": pa.array([list(r["rejected"].items()) for r in records], pa.map_(pa.string(), pa.int64())),
            "truncated": pa.array([r["truncated"] for r in records], pa.bool_()),
            "error": pa.array([r["error"] for r in records], pa.string()),
        })
        pq.write_table(table, tmp)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="qg-generate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", nargs="?", type=Path, help="a .jsonl, .csv, .parquet or .txt file (or --dataset)")
    parser.add_argument("--dataset", help="a datasets dataset (Hub id ORG/NAME or local folder) instead of a file")
    parser.add_argument("--split", default="train", help="the --dataset split (default train)")
    parser.add_argument("--text-column", default="text", help="the column with the paragraph (default text)")
    parser.add_argument("--id-column", help="the column with each row's id (default: the row number, from 0)")
    parser.add_argument("--output", type=Path, required=True, help="where the questions go (written at the end)")
    parser.add_argument("--format", choices=["jsonl", "parquet"], default="jsonl", help="output format")
    add_generator_arguments(parser)
    g = GENERATE_DEFAULTS
    parser.add_argument("--num-questions", type=positive_int, default=g["num_questions"],
                        help=f"questions per paragraph (default {g['num_questions']})")
    parser.add_argument("--temperature", type=non_negative_float, default=g["temperature"],
                        help=f"sampling temperature; 0: greedy, one question each (default {g['temperature']})")
    parser.add_argument("--top-p", type=probability_mass, default=g["top_p"],
                        help=f"nucleus sampling, in (0, 1] (default {g['top_p']})")
    parser.add_argument("--seed", type=int, default=g["seed"],
                        help=f"chunk k samples with seed SEED + k (default {g['seed']})")
    parser.add_argument("--batch-size", type=positive_int, default=g["batch_size"],
                        help=f"paragraphs per generation call and per chunk (default {g['batch_size']})")
    args = parser.parse_args(argv)
    if (args.input is None) == (args.dataset is None):
        parser.error("give an input file or --dataset, not both" if args.input else "give an input file or --dataset")
    return args


def read_rows(args: argparse.Namespace) -> list[Row]:
    if args.dataset is not None:
        rows, source = read_dataset(args.dataset, args.split, args.text_column, args.id_column), args.dataset
    else:
        rows, source = read_file(args.input, args.text_column, args.id_column), args.input
    if not rows:
        raise UserError(f"{source} has no rows: nothing to generate questions for")
    return rows


@command
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.output.is_dir():
        raise UserError(f"--output {args.output} is a folder: give a file path")
    rows = read_rows(args)
    if args.format == "parquet":
        check_parquet_ids(rows)
    decoding = dict(num_questions=args.num_questions, temperature=args.temperature, top_p=args.top_p,
                    max_new_tokens=args.max_new_tokens, max_rounds=args.max_rounds)
    settings = dict(rows=rows_digest(rows), text_column=args.text_column, id_column=args.id_column, model=args.model,
                    base=args.base, revision=revision(args.model), prompt_version=PROMPT_VERSION, seed=args.seed,
                    batch_size=args.batch_size, max_context_tokens=args.max_context_tokens, **decoding)
    header = {"fingerprint": hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest(),
              "settings": settings}
    partial = args.output.with_name(args.output.name + PARTIAL_SUFFIX)

    import torch
    from accelerate import PartialState
    from accelerate.utils import gather_object, parse_flag_from_env
    from tqdm.auto import tqdm

    # The generator runs on CUDA or the CPU. Without CUDA the processes `accelerate launch` starts must be told they
    # are CPU processes, or each one runs alone on all rows (accelerate 1.15 groups them only with cpu=True).
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())
    done = read_partial(partial, header["fingerprint"], len(rows))
    chunks = chunks_of(rows, args.batch_size)
    todo = [k for k, chunk in enumerate(chunks) if not all(i in done for i in chunk)]
    state.wait_for_everyone()  # every process has read the side file before the main process rewrites it
    if state.is_main_process:
        write_partial(partial, header, done)
    generator = load_generator(args, device=str(state.device))
    paragraphs = sum(map(len, chunks))
    try:
        with (partial.open("a", encoding="utf-8") if state.is_main_process else contextlib.nullcontext()) as sink, \
                tqdm(total=paragraphs, initial=paragraphs - sum(len(chunks[k]) for k in todo), unit="paragraph",
                     disable=not state.is_main_process) as bar:
            for start in range(0, len(todo), state.num_processes):
                mine = todo[start:start + state.num_processes][state.process_index:state.process_index + 1]
                records = [r for k in mine for r in generate_chunk(generator, rows, chunks[k], args.seed + k, decoding)]
                records = gather_object(records)
                if state.is_main_process:
                    sink.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
                    sink.flush()
                    done.update((r["row"], r) for r in records)
                    bar.update(len(records))
    except KeyboardInterrupt:
        if state.is_main_process:
            print(f"{len(done)} paragraphs are kept in {partial}: the same command continues from there",
                  file=sys.stderr)
        raise
    except EngineError as err:  # a serving engine down, slow or failing: what is done is kept, as on Ctrl-C
        raise UserError(f"{err}; {len(done)} paragraphs are kept in {partial}, and the same command continues "
                        "from there") from None
    if state.is_main_process:
        records = [{k: v for k, v in done[i].items() if k != "row"} if i in done else error_record(row, EMPTY_TEXT)
                   for i, row in enumerate(rows)]
        write_output(args.output, records, args.format)
        partial.unlink()
        errors = sum(r["error"] is not None for r in records)
        print(f"{len(rows)} rows -> {args.output} ({errors} with an error; {state.num_processes} processes)")


if __name__ == "__main__":
    main()
