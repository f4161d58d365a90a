"""The ``--out`` file: one JSON line per step of one question (answered, failed, judged, unjudged), appended as it
happens, so a run that is stopped keeps everything it had. The last line of an id is what is known of it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from komt_bot.errors import EvalError
from komt_bot.eval.judge import PROMPT_VERSION, JudgeConfig, Judgement

Status = Literal["answered", "failed", "judged", "unjudged"]
ANSWERED: tuple[Status, ...] = ("answered", "judged", "unjudged")


class ItemRecord(BaseModel):
    """Everything known about one question at one moment: its answer (or why there is none) and its judgement."""

    model_config = ConfigDict(extra="ignore")

    id: str
    question: str
    status: Status
    answer: str | None = None
    finish_reason: str | None = None
    error: str | None = None
    job_id: str | None = None
    answer_seconds: float | None = None
    deployment: str | None = None
    score: int | None = Field(None, ge=0, le=5)
    judge_reply: str | None = None
    judge_model: str | None = None
    judge_url: str | None = None
    judge_attempts: int = 0
    prompt_version: str = PROMPT_VERSION
    time: float = Field(default_factory=time.time)

    @property
    def has_answer(self) -> bool:
        """The deployment answered it (judged or not)."""
        return self.status in ANSWERED and self.answer is not None

    def as_answered(self) -> ItemRecord:
        """The answer alone, its judgement dropped (to judge it again with another judge)."""
        return self.model_copy(
            update={
                "status": "answered",
                "score": None,
                "judge_reply": None,
                "judge_model": None,
                "judge_url": None,
                "judge_attempts": 0,
                "prompt_version": PROMPT_VERSION,
                "time": time.time(),
            }
        )

    def judged(self, judgement: Judgement, judge: JudgeConfig) -> ItemRecord:
        """This answer with the judge's verdict: ``judged`` with a score, else ``unjudged``."""
        return self.model_copy(
            update={
                "status": "judged" if judgement.score is not None else "unjudged",
                "score": judgement.score,
                "judge_reply": judgement.reply,
                "judge_model": judge.model,
                "judge_url": judge.shown_url,
                "judge_attempts": judgement.attempts,
                "prompt_version": PROMPT_VERSION,
                "time": time.time(),
            }
        )


def read_records(path: Path) -> tuple[dict[str, ItemRecord], int]:
    """The last record of every id in ``path`` (in the order ids first appear), and how many lines were unreadable
    (a line cut short by a killed run is skipped, not fatal)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise EvalError(f"cannot read {path}: {e}") from e
    records: dict[str, ItemRecord] = {}
    bad = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = ItemRecord.model_validate_json(line)
        except ValidationError:
            bad += 1
            continue
        records[record.id] = record
    return records, bad


class RecordWriter:
    """Appends records to the ``--out`` file, one flushed line each."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.written = 0
        try:
            torn = path.is_file() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
            self._file: IO[str] = path.open("a", encoding="utf-8")
        except OSError as e:
            raise EvalError(f"cannot write {path}: {e}") from e
        if torn:  # a run killed mid-line: start on a fresh line so the next record stays readable
            self._file.write("\n")

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def write(self, record: ItemRecord) -> None:
        """Append one record and flush it to the file."""
        self._file.write(json.dumps(record.model_dump(mode="json"), ensure_ascii=False) + "\n")
        self._file.flush()
        self.written += 1

    def close(self) -> None:
        """Close the file."""
        self._file.close()
