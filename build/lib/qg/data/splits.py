"""Splits by article: no article and no paragraph in two splits; an optional question budget for train."""

from __future__ import annotations

import math
import random

from qg.cli import UserError
from qg.data.korquad import Paragraph


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
