"""The soak harness: run in-process on a tiny case (a private Redis, one real worker, four conversations), and
the checks it makes of each conversation."""

from __future__ import annotations

from pathlib import Path

import pytest

from komt_bot import messages
from komt_bot.dev.soak import SoakOptions, run_soak
from komt_bot.dev.verdict import error_kind, expected_body, last_attempt_text, stream_problems
from komt_bot.jobs import Event


@pytest.mark.slow
async def test_a_small_soak_answers_every_conversation_once(tiny_model_dir: Path) -> None:
    # run_soak waits on positive signals only: Redis answering PING, the worker's presence record, every ask
    # returning. It stops the worker and Redis before it returns.
    summary = await run_soak(SoakOptions(conversations=4, workers=1, tokens=8, model=tiny_model_dir))

    assert summary.conversations == 4
    assert summary.answered == 4, summary.as_dict()
    assert summary.duplicated == 0
    assert summary.missing == 0
    assert summary.error_replies == {}
    assert summary.dead_lettered == 0
    assert summary.ok
    assert summary.first_visible_p50 is not None and summary.final_p95 is not None
    assert summary.machine["workers"] == 1 and summary.machine["tokens"] == 8


def _event(event_type: str, **data: object) -> Event:
    return Event.model_validate({"type": event_type, **data})


def test_a_stream_with_two_ends_or_a_repeated_start_is_a_duplicate() -> None:
    clean = [_event("start", attempt=1), _event("delta", text="가"), _event("done", finish_reason="stop")]
    assert stream_problems(clean) == []
    twice = [*clean, _event("done", finish_reason="stop")]
    assert stream_problems(twice) == ["2 terminal events", "1 events after the first terminal event"]
    restarted = [_event("start", attempt=1), _event("start", attempt=1), _event("done")]
    assert stream_problems(restarted) == ["attempt 1 started 2 times"]


def test_the_visible_answer_is_the_last_attempt_only() -> None:
    events = [
        _event("start", attempt=1),
        _event("delta", text="old"),
        _event("start", attempt=2),
        _event("delta", text="new "),
        _event("delta", text="text"),
        _event("done", finish_reason="length"),
    ]
    assert last_attempt_text(events) == "new text"
    assert expected_body("new text", events[-1]) == f"new text\n\n{messages.TRUNCATED}"


def test_error_lines_are_told_from_answers_and_notices() -> None:
    assert error_kind("답변입니다") is None
    assert error_kind(f"답변\n\n{messages.TRUNCATED}") is None
    assert error_kind(messages.EMPTY_ANSWER) is None
    assert error_kind(messages.BUSY) == "busy"
    assert error_kind(messages.QUEUE_DOWN) == "queue_down"
    assert error_kind(f"반쯤 쓴 답변\n\n{messages.TIMEOUT}") == "timeout"
    assert error_kind(f"답변\n\n{messages.failed('dead_letter', None)}") == "failed"
