"""What a person sees of one Slack-mode soak conversation: the bot's messages in the question's thread, as the
fake Slack keeps them, and the record of the conversation itself.

The snapshots are taken in the fake's own loop (:meth:`~komt_bot.dev.fakes.threaded.ThreadedFake.read`) and are
plain frozen values afterwards, so the harness reads them at leisure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from komt_bot import messages
from komt_bot.dev.fakes.slack import FakeSlack
from komt_bot.dev.fakes.slack_requests import feedback_values, has_stop
from komt_bot.dev.fakes.slack_wire import BOT_ID, Change, Message, ts_key, unescape

Thread = tuple[str, str]  # (channel, ts of the question): where the reply goes


@dataclass(frozen=True, slots=True)
class Shown:
    """One of the bot's messages in a thread, as it is at the snapshot (text with Slack's escaping undone)."""

    ts: str
    text: str
    streaming: bool
    deleted: bool
    stop: bool  # shows the Stop button
    feedback: tuple[str, ...]  # the values of its 👍/👎 buttons (empty without them)
    changes: tuple[Change, ...]  # every visible change, with its wall-clock time

    @classmethod
    def of(cls, message: Message) -> Shown:
        """A frozen copy of ``message``."""
        buttons = feedback_values(message)
        return cls(
            ts=message.ts,
            text=unescape(message.text),
            streaming=message.streaming,
            deleted=message.deleted,
            stop=has_stop(message),
            feedback=tuple(buttons.values()),
            changes=tuple(message.changes),
        )

    @property
    def writing(self) -> bool:
        """Still being written: an open stream, the Stop button, or the editor's ✍️ mark at the end."""
        return self.streaming or self.stop or self.text.endswith(messages.WRITING_MARK)


def snapshot(fake: FakeSlack, threads: Iterable[Thread]) -> dict[Thread, list[Shown]]:
    """Every bot message (deleted ones too) of each thread, oldest first. Run it in the fake's loop."""
    wanted = set(threads)
    found: dict[Thread, list[Message]] = {thread: [] for thread in wanted}
    for message in fake.messages.values():
        if message.bot_id == BOT_ID and message.thread_ts is not None:
            place = (message.channel, message.thread_ts)
            if place in wanted:
                found[place].append(message)
    return {
        place: [Shown.of(m) for m in sorted(found_here, key=lambda m: ts_key(m.ts))]
        for place, found_here in found.items()
    }


def visible(shown: list[Shown]) -> list[Shown]:
    """The messages a person sees (not deleted)."""
    return [m for m in shown if not m.deleted]


def finished(shown: list[Shown]) -> bool:
    """A reply is there and none of its messages is still being written."""
    seen = visible(shown)
    return bool(seen) and not any(m.writing for m in seen)


def shows_answer(shown: list[Shown]) -> bool:
    """Some message of the reply shows answer text (not only a status line or the placeholder)."""
    return any(messages.answer_text(m.text).strip() for m in visible(shown))


@dataclass
class SlackConversation:
    """One simulated person's question in a channel, and what happened to it."""

    index: int
    question: str
    channel: str
    user: str
    ts: str | None = None  # the question's message: the reply's thread
    job_id: str | None = None  # from the idempotency record of the adapter's key, once the job exists
    adapter: str | None = None  # the adapter that acknowledged the event
    deliveries: int = 0  # requests it took to deliver the event
    delivery_errors: list[str] = field(default_factory=list)
    sent_wall: float | None = None  # time.time() the event first went out
    submitted: float | None = None  # time.monotonic() the same moment
    answer_seen: bool = False  # answer text showed in the thread
    job_ended: float | None = None  # time.monotonic() the job's terminal event was first seen
    ended: float | None = None  # time.monotonic() the harness stopped waiting for it
    crash: str | None = None  # why it never got a finished reply (undeliverable, past the deadlines)
    shown: list[Shown] = field(default_factory=list)  # the thread at the end
