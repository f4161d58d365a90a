"""What ``komt-bot eval`` asks and what it compares with: the questions and the model card's table."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from komt_bot.errors import EvalError

BUNDLED_QUESTIONS = "eval_questions.jsonl"
REFERENCE_SCORES = "komt_seed_scores.json"
MAX_ITEM_SCORE = 5


@dataclass(frozen=True, slots=True)
class Question:
    """One evaluation question: its id (the file's ``id`` field, else its line number) and its instruction."""

    id: str
    instruction: str


@dataclass(frozen=True, slots=True)
class ReferenceRow:
    """One row of the model card's table."""

    model: str
    open: bool | None
    score: int
    average: float
    percentage: float

    def as_dict(self) -> dict[str, Any]:
        """The row as JSON-ready data."""
        return {
            "model": self.model,
            "open": self.open,
            "score": self.score,
            "average": self.average,
            "percentage": self.percentage,
        }


def _bundled(name: str) -> str:
    return resources.files("komt_bot.data").joinpath(name).read_text(encoding="utf-8")


def parse_questions(text: str, where: str) -> list[Question]:
    """Questions from JSONL text: one object per line with an ``instruction`` string (blank lines skipped)."""
    questions: list[Question] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError as e:
            raise EvalError(f"{where}:{number}: not JSON ({e})") from e
        instruction = data.get("instruction") if isinstance(data, dict) else None
        if not isinstance(instruction, str) or not instruction.strip():
            raise EvalError(f'{where}:{number}: no "instruction" text')
        question_id = str(data.get("id", len(questions)))
        if question_id in seen:
            raise EvalError(f"{where}:{number}: the id {question_id!r} appears twice")
        seen.add(question_id)
        questions.append(Question(question_id, instruction))
    if not questions:
        raise EvalError(f"{where}: no questions")
    return questions


def load_questions(path: Path | None = None) -> list[Question]:
    """The questions of ``path`` (JSONL), or by default komt's own 37 Korean evaluation questions."""
    if path is None:
        return parse_questions(_bundled(BUNDLED_QUESTIONS), BUNDLED_QUESTIONS)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise EvalError(f"cannot read the questions: {e}") from e
    return parse_questions(text, str(path))


def load_reference() -> list[ReferenceRow]:
    """The model card's table (judge scores 0..5 on the 37 questions; percentage = score / 185), in its order."""
    data = json.loads(_bundled(REFERENCE_SCORES))
    return [
        ReferenceRow(
            model=str(row["model"]),
            open=row.get("open"),
            score=int(row["score"]),
            average=float(row["average"]),
            percentage=float(row["percentage"]),
        )
        for row in data["rows"]
    ]
