"""After a soak: for each conversation, what a person would have noticed and what the queue recorded.

A conversation is

* **answered** when its ask ended ``done`` and the reply carries no error line (a ``✂️`` length notice after the
  answer is fine); an empty answer (the random model's first token was ``</s>``) counts as answered when the queue
  has no text for it either, and is counted apart as ``empty``;
* an **error reply** when the reply ends with one of komt-bot's error lines (🔌 queue down, 💥 failed, ⌛ timeout,
  🚦 busy, ...), counted by kind;
* **duplicated / mixed** when the job's output stream has more than one terminal event, or one attempt started
  twice, or events after the terminal one, or the visible answer is not exactly the text of the last attempt, or
  the answer took more messages than its length needs (messages an earlier, longer attempt posted and the editor
  blanked to ``…`` count here too, and are counted apart as ``blanked``);
* **missing** when the ask never returned, or the job's stream has no terminal event.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from komt_bot import messages
from komt_bot.chat.editor import split_text
from komt_bot.dev.recording import Conversation
from komt_bot.jobs import Event
from komt_bot.queue import JobQueue

# The first word of each status line a reply can end with instead of (or after) an answer: the error kinds.
ERROR_KINDS: dict[str, str] = {
    messages.QUEUE_DOWN.split(" ", 1)[0]: "queue_down",
    messages.failed(None, None).split(" ", 1)[0]: "failed",
    messages.TIMEOUT.split(" ", 1)[0]: "timeout",
    messages.BUSY.split(" ", 1)[0]: "busy",
    messages.STOPPED.split(" ", 1)[0]: "stopped",
    messages.too_long(2, 1).split(" ", 1)[0]: "too_long",
    messages.rate_limited(1).split(" ", 1)[0]: "rate_limited",
    messages.EMPTY.split(" ", 1)[0]: "empty_question",
}
NOT_ERRORS = frozenset({messages.TRUNCATED})


@dataclass
class Verdict:
    """The findings about one conversation."""

    index: int
    job_id: str | None
    answered: bool = False
    empty: bool = False
    error_kind: str | None = None
    problems: list[str] = field(default_factory=list)  # duplicated / mixed findings
    missing: str | None = None
    first_visible: float | None = None
    final: float | None = None
    attempts: int = 0
    messages: int = 0
    blanked: int = 0  # trailing messages an earlier, longer attempt needed, left as "…"
    terminals: int = 0  # terminal events in the job's output stream
    # Slack mode (komt_bot/dev/slack_verdict.py), measured at the fake Slack in wall-clock seconds:
    half_written: str | None = None  # the reply was still being written when the harness stopped waiting
    placeholder: float | None = None  # the event sent -> the bot's first message in the thread
    first_words: float | None = None  # the worker's first text (its entry id) -> the thread shows answer text
    final_after_done: float | None = None  # the job's done event (its entry id) -> the final text shows

    @property
    def duplicated(self) -> bool:
        """More than one answer, answers mixed, or an answer spread wider than needed."""
        return bool(self.problems)


def status_line(text: str) -> str | None:
    """The status line a final reply text ends with (or consists of), or None for a plain answer."""
    text = messages.strip_mark(text).strip()
    if messages.is_status(text):
        return text
    _head, separator, last = text.rpartition("\n\n")
    return last.strip() if separator and messages.is_status(last) else None


def error_kind(text: str) -> str | None:
    """Which of komt-bot's error lines ``text`` ends with, or None (an answer, or a notice that is no error)."""
    line = status_line(text)
    if line is None or line in NOT_ERRORS or line in (messages.EMPTY_ANSWER, messages.BLANKED, ""):
        return None
    return ERROR_KINDS.get(line.split(" ", 1)[0], "other")


def expected_body(answer: str, terminal: Event) -> str:
    """What the reply editor writes in the end for a finished job whose last attempt wrote ``answer``."""
    body = answer if answer.strip() else ""
    suffix = messages.TRUNCATED if terminal.finish_reason == "length" else None
    if suffix:
        body = f"{body}\n\n{suffix}" if body else suffix
    return body or messages.EMPTY_ANSWER


def stream_problems(events: list[Event]) -> list[str]:
    """What is wrong with one job's output stream as a whole (duplicate ends, attempts started twice, ...)."""
    problems: list[str] = []
    terminals = [i for i, event in enumerate(events) if event.terminal]
    if len(terminals) > 1:
        problems.append(f"{len(terminals)} terminal events")
    if terminals and terminals[0] != len(events) - 1:
        problems.append(f"{len(events) - 1 - terminals[0]} events after the first terminal event")
    starts = Counter(event.attempt for event in events if event.type == "start")
    problems += [f"attempt {attempt} started {n} times" for attempt, n in sorted(starts.items()) if n > 1]
    return problems


def last_attempt_text(events: list[Event]) -> str:
    """The concatenated deltas after the last ``start`` event, up to the first terminal event."""
    starts = [i for i, event in enumerate(events) if event.type == "start"]
    begin = starts[-1] + 1 if starts else 0
    text = []
    for event in events[begin:]:
        if event.terminal:
            break
        if event.type == "delta":
            text.append(event.text)
    return "".join(text)


async def judge(queue: JobQueue, conversation: Conversation, max_message_size: int) -> tuple[Verdict, list[Event]]:
    """Check one conversation against its reply and its job's output stream; returns the verdict and the events."""
    outcome = conversation.outcome
    job_id = outcome.job_id if outcome and outcome.job_id else await queue.job_for_key(conversation.idempotency_key)
    verdict = Verdict(conversation.index, job_id)
    sink = conversation.sink
    finals = sink.final_texts
    verdict.messages = len(finals)
    if conversation.submitted is not None:
        if sink.first_answer_at is not None:
            verdict.first_visible = sink.first_answer_at - conversation.submitted
        if conversation.ended is not None:
            verdict.final = conversation.ended - conversation.submitted
    events = await queue.output(job_id) if job_id else []
    verdict.attempts = max((e.attempt for e in events if e.type == "start"), default=0)
    verdict.problems = stream_problems(events)
    verdict.terminals = sum(event.terminal for event in events)
    terminal = next((event for event in events if event.terminal), None)
    if conversation.crash is not None:
        verdict.missing = f"the ask did not return: {conversation.crash}"
    elif job_id is not None and terminal is None:
        verdict.missing = "the job's output stream has no terminal event"
    # A restart that shortened the answer leaves the messages it no longer needs blanked to "…" (the editor never
    # deletes): the answer and any error line are in the messages before them.
    shown = list(finals)
    while len(shown) > 1 and shown[-1] == messages.BLANKED:
        shown.pop()
    verdict.blanked = len(finals) - len(shown)
    visible = "".join(shown)
    verdict.error_kind = error_kind(shown[-1]) if shown else None
    if verdict.error_kind is None and outcome is not None and outcome.kind != "done" and not verdict.missing:
        verdict.error_kind = f"outcome_{outcome.kind}"  # an end the reply does not show as an error line
    if outcome is None or outcome.kind != "done" or verdict.error_kind or verdict.missing:
        return verdict, events
    if terminal is None or terminal.type != "done":
        verdict.problems.append("the ask ended done but the stream's terminal event is not done")
        return verdict, events
    answer = last_attempt_text(events)
    expected = expected_body(answer, terminal)
    if visible != expected:
        verdict.problems.append(f"the reply shows {len(visible)} chars, not the last attempt's {len(expected)}")
    needed = len(split_text(expected, max_message_size))
    if len(shown) > needed:
        verdict.problems.append(f"the answer spilled into {len(shown)} messages where {needed} hold it")
    if verdict.blanked:
        verdict.problems.append(f"{verdict.blanked} more message(s) left blanked to '…' by an earlier, longer attempt")
    verdict.empty = not answer.strip()
    verdict.answered = True  # a person got an answer; whether it was the right one is in ``problems``
    return verdict, events


def evidence(conversation: Conversation, verdict: Verdict, events: list[Event], job: dict[str, str]) -> dict[str, Any]:
    """What to show about one conversation that went wrong: the reply as seen, the job's events and hash."""
    return {
        "conversation": conversation.index,
        "job_id": verdict.job_id,
        "missing": verdict.missing,
        "error_kind": verdict.error_kind,
        "problems": verdict.problems,
        "outcome": conversation.outcome.kind if conversation.outcome else None,
        "reply": conversation.sink.final_texts,
        "writes": len(conversation.sink.writes),
        "events": event_rows(events),
        "job": job,
    }


def event_rows(events: list[Event]) -> list[dict[str, Any]]:
    """A job's events as evidence (texts cut to 80 characters)."""
    return [
        {
            "id": e.id,
            "type": e.type,
            "attempt": e.attempt,
            "text": e.text[:80],
            "finish_reason": e.finish_reason,
            "code": e.code,
            "message": e.message,
        }
        for e in events
    ]
