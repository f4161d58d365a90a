"""The soak harness: run on a tiny case (a private Redis, one real worker, a few conversations) in-process and
through the fake Slack and a real ``komt-bot slack``, and the checks it makes of each conversation."""

from __future__ import annotations

from pathlib import Path

import pytest

from komt_bot import messages
from komt_bot.dev.fakes.slack_wire import Change
from komt_bot.dev.slack_thread import Shown, SlackConversation
from komt_bot.dev.slack_verdict import judge_thread
from komt_bot.dev.soak import SoakOptions, run_soak
from komt_bot.dev.verdict import error_kind, expected_body, last_attempt_text, stream_problems
from komt_bot.errors import SoakError
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


@pytest.mark.slow
async def test_a_small_soak_through_slack_answers_every_thread_once(tiny_model_dir: Path) -> None:
    # The fake Slack runs in a thread of its own; one real `komt-bot slack` gets each mention as a signed event and
    # answers in the question's thread, where the harness reads the reply as a person would.
    options = SoakOptions(conversations=3, workers=1, tokens=8, model=tiny_model_dir, via="slack", channels=2)
    summary = await run_soak(options)

    assert summary.answered == 3, summary.as_dict()
    assert (summary.duplicated, summary.missing, summary.half_written, summary.error_replies) == (0, 0, 0, {})
    assert summary.ok
    platform = summary.platform
    assert platform["calls"] > 0 and platform["rate_limited"] == 0
    assert platform["first_words_p50"] is not None and platform["first_words_p50"] >= 0
    assert platform["final_after_done_p95"] is not None and platform["placeholder_p50"] is not None


@pytest.mark.slow
async def test_a_deploy_of_the_slack_adapter_loses_no_answer(tiny_model_dir: Path) -> None:
    options = SoakOptions(
        conversations=6,
        workers=1,
        tokens=256,
        model=tiny_model_dir,
        via="slack",
        channels=2,
        restart_adapter_every=1.0,
        reply_grace=20.0,
    )
    summary = await run_soak(options)

    assert [f["kind"] for f in summary.faults][:1] == ["restart-adapter"], summary.as_dict()
    assert summary.answered == 6, summary.as_dict()
    assert summary.ok


def test_slack_options_need_slack_mode() -> None:
    with pytest.raises(SoakError, match="--via slack"):
        SoakOptions(kill_adapter_every=5).check()
    with pytest.raises(SoakError, match="--no-adapter-replace"):
        SoakOptions(via="slack", no_adapter_replace=True).check()
    SoakOptions(via="slack", adapters=2, kill_adapter_every=5, no_adapter_replace=True).check()


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


def _shown(text: str, *, walls: tuple[float, ...] = (100.2,), stop: bool = False, feedback: bool = True) -> Shown:
    changes = tuple(Change(wall, text, False, False) for wall in walls)
    buttons = (f"up:{JOB}", f"down:{JOB}") if feedback else ()
    return Shown("1.000002", text, False, False, stop, buttons, changes)


def _thread(*shown: Shown) -> SlackConversation:
    conversation = SlackConversation(0, "질문", "C0SOAK000", "U0SOAK00000", ts="1.000001", job_id=JOB, sent_wall=100.0)
    conversation.shown = list(shown)
    return conversation


JOB = "0123456789abcdef"
SLACK_EVENTS = [
    _event("start", attempt=1, id="100050-0"),
    _event("delta", text="답변", id="100100-0"),
    _event("done", finish_reason="stop", id="100400-0"),
]


def test_a_slack_thread_is_judged_as_a_person_sees_it() -> None:
    # The placeholder shows at 100.05, the first words at 100.2 (the worker wrote them at 100.1), the final
    # text with its 👍/👎 at 100.5 (the job's done event at 100.4).
    placeholder = Change(100.05, messages.queued(0), False, False)
    writing = Change(100.2, f"답변{messages.WRITING_MARK}", False, False)
    whole = _shown("답변", walls=(100.5, 100.7))  # a later edit that changes nothing visible is no later final
    whole = Shown(whole.ts, whole.text, False, False, False, whole.feedback, (placeholder, writing, *whole.changes))
    verdict = judge_thread(_thread(whole), SLACK_EVENTS, 3800)
    assert verdict.answered and not verdict.problems, verdict
    assert verdict.placeholder == pytest.approx(0.05)
    assert verdict.first_words == pytest.approx(0.1) and verdict.final_after_done == pytest.approx(0.1)

    still_writing = judge_thread(_thread(_shown(f"답{messages.WRITING_MARK}", stop=True)), SLACK_EVENTS, 3800)
    assert still_writing.half_written and not still_writing.answered
    twice = judge_thread(_thread(_shown("답변", feedback=False), _shown("답변")), SLACK_EVENTS, 3800)
    assert twice.duplicated and not twice.missing
    no_buttons = judge_thread(_thread(_shown("답변", feedback=False)), SLACK_EVENTS, 3800)
    assert no_buttons.problems == ["no 👍/👎 on the last message"]
    failed = judge_thread(_thread(_shown(messages.failed(None, "boom"))), SLACK_EVENTS, 3800)
    assert failed.error_kind == "failed"
    assert judge_thread(_thread(), SLACK_EVENTS, 3800).missing == "no reply in the thread"
