"""The result of a run: the summary (JSON-ready) and the model card's table with this deployment's row in it.

Like the card, the score is the sum of the 0..5 scores, the average is score / judged, and the percentage is
score / (5 × judged) — 185 for the card's 37 judged answers. Unjudged answers (the judge gave no score) and failed
ones (no answer) are counted apart and count neither way: they are not zeros. Averages and percentages are cut to
two decimals, as the card's are.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from komt_bot.eval.judge import PROMPT_VERSION, JudgeConfig
from komt_bot.eval.questions import MAX_ITEM_SCORE, ReferenceRow
from komt_bot.eval.records import ItemRecord


def _cut(value: float) -> float:
    """Two decimals, cut rather than rounded (129/185 = 69.7297… is the card's 69.72)."""
    return math.floor(value * 100 + 1e-9) / 100


def deployment_of(records: list[ItemRecord]) -> str | None:
    """The deployment the saved answers came from (the most common one named in them)."""
    names = Counter(r.deployment for r in records if r.deployment)
    return names.most_common(1)[0][0] if names else None


def summarize(
    records: list[ItemRecord],
    *,
    questions: int,
    reference: list[ReferenceRow],
    deployment: str | None,
    judge: JudgeConfig,
) -> dict[str, Any]:
    """The run's summary: counts, score, average, percentage, every item, the card's rows and the merged table."""
    scores = [r.score for r in records if r.status == "judged" and r.score is not None]
    judged = len(scores)
    answered = sum(1 for r in records if r.has_answer)
    score = sum(scores)
    average = _cut(score / judged) if judged else None
    percentage = _cut(100 * score / (MAX_ITEM_SCORE * judged)) if judged else None
    name = deployment or deployment_of(records) or "this deployment"
    summary: dict[str, Any] = {
        "questions": questions,
        "answered": answered,
        "judged": judged,
        "unjudged": answered - judged,
        "failed": questions - answered,
        "score": score,
        "max_score": MAX_ITEM_SCORE * judged,
        "average": average,
        "percentage": percentage,
        "deployment": name,
        "judge": {"url": judge.shown_url, "model": judge.model},
        "prompt_version": PROMPT_VERSION,
        "items": [
            {
                "id": r.id,
                "question": r.question,
                "status": r.status,
                "answer": r.answer,
                "finish_reason": r.finish_reason,
                "error": r.error,
                "score": r.score if r.status == "judged" else None,
                "judge_reply": r.judge_reply,
                "judge_model": r.judge_model,
            }
            for r in records
        ],
        "reference": [row.as_dict() for row in reference],
    }
    ours = {"model": name, "open": None, "score": score, "average": average, "percentage": percentage}
    summary["table"] = table_rows(reference, ours)
    return summary


def table_rows(reference: list[ReferenceRow], ours: dict[str, Any]) -> list[dict[str, Any]]:
    """The card's rows and this deployment's (``"this": true``), highest percentage first — by score when all 37
    are judged; a deployment with nothing judged goes last."""
    rows = [{**row.as_dict(), "this": False} for row in reference] + [{**ours, "this": True}]
    return sorted(rows, key=lambda row: -row["percentage"] if row["percentage"] is not None else math.inf)


def render(summary: dict[str, Any], console: Console) -> None:
    """The table in the card's columns, then what the deployment's row is made of."""
    table = Table(title="komt eval — LLM as a judge, 0–5 per answer", title_justify="left")
    table.add_column("model")
    table.add_column("score", justify="right")
    table.add_column("average (0~5)", justify="right")
    table.add_column("percentage", justify="right")
    for row in summary["table"]:
        average = "—" if row["average"] is None else f"{row['average']:.2f}"
        percentage = "—" if row["percentage"] is None else f"{row['percentage']:.2f}%"
        cells = [row["model"], str(row["score"]), average, percentage]
        if row["this"]:
            table.add_row(*(Text(cell, style="bold green") for cell in [f"▶ {cells[0]}", *cells[1:]]))
        else:
            table.add_row(*cells)
    console.print(table)
    judge = summary["judge"]
    console.print(
        Text(
            f"this deployment: {summary['judged']} of {summary['questions']} answers judged, "
            f"{summary['unjudged']} unjudged, {summary['failed']} failed; "
            f"score {summary['score']} / {summary['max_score']} (percentage = score / (5 × judged))\n"
            f"judge: {judge['model']} at {judge['url']} (prompt {summary['prompt_version']})"
        ),
        highlight=False,
    )
