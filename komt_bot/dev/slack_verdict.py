"""After a Slack-mode soak: for each conversation, what a person saw in its thread at the fake Slack, checked
against the job's output stream, and the latencies measured there.

A conversation is

* **answered** when the thread holds exactly the reply the job's last attempt wrote (with the editor's ``✂️``
  suffix), in no more messages than its length needs, with the 👍/👎 of its job on the last message;
* **half-written** when a message of the reply is still being written (an open stream, the Stop button, the ✍️
  mark) ``--reply-grace`` seconds after the job ended, or when the harness stopped waiting;
* an **error reply**, **duplicated / mixed** or **missing** as in the in-process mode (:mod:`.verdict`): any message
  left blanked to ``…``, any text more or different from the job's answer, a thread with no reply, an event no
  adapter took, a job with no terminal event.

The latencies are wall-clock differences: the fake stamps each change of a message with ``time.time()``, and a
Redis stream entry id is the millisecond the worker's event was written.
"""

from __future__ import annotations

from typing import Any

from komt_bot import messages
from komt_bot.chat.editor import split_text, utf8_size
from komt_bot.chat.feedback import parse_button_value
from komt_bot.dev.fakes.slack_wire import unescape
from komt_bot.dev.slack_thread import Shown, SlackConversation, finished, visible
from komt_bot.dev.verdict import (
    Verdict,
    error_kind,
    event_rows,
    expected_body,
    last_attempt_text,
    stream_problems,
)
from komt_bot.jobs import Event
from komt_bot.queue import JobQueue


def slack_size(text: str) -> int:
    """What ``text`` costs in a Slack message: UTF-8 bytes once escaped, as the adapter measures it
    (``adapters/slack/sink.py``; komt_bot does not import the adapters)."""
    return utf8_size(text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))


def entry_time(event: Event) -> float:
    """When the event was written: its stream entry id is ``<unix ms>-<seq>``."""
    return int(event.id.split("-", 1)[0]) / 1000


def first_answer_time(shown: list[Shown]) -> float | None:
    """The wall-clock time the thread first showed answer text (in any message, deleted ones included)."""
    times = [
        change.wall
        for message in shown
        for change in message.changes
        if messages.answer_text(unescape(change.text)).strip()
    ]
    return min(times, default=None)


def final_time(shown: list[Shown]) -> float | None:
    """The wall-clock time every message a person sees had taken the state it ends in (the first of its last
    changes that all show the same)."""
    times = []
    for message in visible(shown):
        if not message.changes:
            return None
        last = message.changes[-1]
        settled = last.wall
        for change in reversed(message.changes):
            if (change.text, change.streaming) != (last.text, last.streaming):
                break
            settled = change.wall
        times.append(settled)
    return max(times, default=None)


def measure(verdict: Verdict, conversation: SlackConversation, events: list[Event]) -> None:
    """The conversation's latencies at the fake Slack."""
    sent, shown = conversation.sent_wall, conversation.shown
    if sent is None or not shown or not shown[0].changes:
        return
    verdict.placeholder = shown[0].changes[0].wall - sent
    words = first_answer_time(shown)
    first_delta = next((e for e in events if e.type == "delta" and e.text), None)
    if words is not None:
        verdict.first_visible = words - sent
        if first_delta is not None:
            verdict.first_words = words - entry_time(first_delta)
    done = next((e for e in events if e.terminal), None)
    final = final_time(shown) if finished(shown) else None
    if final is not None:
        verdict.final = final - sent
        if done is not None and done.type == "done":
            verdict.final_after_done = final - entry_time(done)


async def judge_slack(queue: JobQueue, conversation: SlackConversation, max_bytes: int) -> tuple[Verdict, list[Event]]:
    """Check one conversation's thread against its job's output stream; returns the verdict and the events."""
    events = await queue.output(conversation.job_id) if conversation.job_id else []
    return judge_thread(conversation, events, max_bytes), events


def judge_thread(conversation: SlackConversation, events: list[Event], max_bytes: int) -> Verdict:
    """Check one conversation's thread (``conversation.shown``) against its job's events."""
    c = conversation
    verdict = Verdict(c.index, c.job_id)
    verdict.attempts = max((e.attempt for e in events if e.type == "start"), default=0)
    verdict.problems = stream_problems(events)
    verdict.terminals = sum(event.terminal for event in events)
    terminal = next((event for event in events if event.terminal), None)
    measure(verdict, c, events)
    seen = visible(c.shown)
    verdict.messages = len(seen)
    if c.crash is not None and not seen:
        verdict.missing = c.crash
    elif not seen:
        verdict.missing = "no reply in the thread"
    elif c.job_id is not None and terminal is None:
        verdict.missing = "the job's output stream has no terminal event"
    elif not finished(c.shown):
        writing = next(m for m in seen if m.writing)
        state = "an open stream" if writing.streaming else "the Stop button" if writing.stop else "the ✍️ mark"
        verdict.half_written = f"message {writing.ts} still shows {state}" + (f" ({c.crash})" if c.crash else "")
    kept = [m for m in seen if m.text != messages.BLANKED]
    verdict.blanked = len(seen) - len(kept)
    verdict.error_kind = error_kind(kept[-1].text) if kept else None
    if verdict.missing or verdict.half_written or verdict.error_kind:
        return verdict
    if terminal is None:
        verdict.missing = "a reply without an error, but no job"
        return verdict
    if terminal.type != "done":
        verdict.problems.append(f"the job ended {terminal.type} ({terminal.code}); the reply shows no error")
        return verdict
    _check_answer(verdict, c, kept, events, terminal, max_bytes)
    return verdict


def _check_answer(
    verdict: Verdict,
    conversation: SlackConversation,
    kept: list[Shown],
    events: list[Event],
    terminal: Event,
    max_bytes: int,
) -> None:
    """The visible answer against the last attempt's text, its spread, its leftovers and its 👍/👎."""
    answer = last_attempt_text(events)
    expected = expected_body(answer, terminal)
    text = "".join(m.text for m in kept)
    if text != expected:
        verdict.problems.append(f"the thread shows {len(text)} chars, not the last attempt's {len(expected)}")
    needed = len(split_text(expected, max_bytes, slack_size))
    if len(kept) > needed:
        verdict.problems.append(f"the answer spilled into {len(kept)} messages where {needed} hold it")
    if verdict.blanked:
        verdict.problems.append(f"{verdict.blanked} message(s) left blanked to '…'")
    buttons = [parse_button_value(value) for value in kept[-1].feedback]
    if not buttons:
        verdict.problems.append("no 👍/👎 on the last message")
    elif any(b is None or b[1] != conversation.job_id for b in buttons):
        verdict.problems.append(f"the 👍/👎 belong to another job: {kept[-1].feedback}")
    if any(m.feedback for m in kept[:-1]):
        verdict.problems.append("👍/👎 on a message before the last")
    verdict.empty = not answer.strip()
    verdict.answered = True


def slack_evidence(
    conversation: SlackConversation, verdict: Verdict, events: list[Event], job: dict[str, str]
) -> dict[str, Any]:
    """What to show about one conversation that went wrong: its thread as seen, its delivery, its job."""
    c = conversation
    return {
        "conversation": c.index,
        "thread": f"{c.channel}/{c.ts}",
        "job_id": verdict.job_id,
        "adapter": c.adapter,
        "deliveries": c.deliveries,
        "delivery_errors": c.delivery_errors[-5:],
        "missing": verdict.missing,
        "half_written": verdict.half_written,
        "error_kind": verdict.error_kind,
        "problems": verdict.problems,
        "reply": [
            {
                "ts": m.ts,
                "text": m.text[-300:],
                "streaming": m.streaming,
                "deleted": m.deleted,
                "stop": m.stop,
                "feedback": list(m.feedback),
                "changes": len(m.changes),
            }
            for m in c.shown
        ],
        "events": event_rows(events),
        "job": job,
    }
