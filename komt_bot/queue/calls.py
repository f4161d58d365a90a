"""One typed caller per queue script: named parameters, KEYS and ARGV built in one place, a typed reply.

A call is a frozen dataclass. Its fields, in order, are the script's ARGV, and the Lua reads them by the same names
(``A.job_id``) from the prelude :mod:`komt_bot.queue.scripts` generates from the class, with its KEYS by name
(``K.job``). An :class:`~komt_bot.jobs.EncodedEvent` field is two values, ``{type, data}``: Python encodes every
event, the script only appends it. Fields with :data:`NOT_ARGV` metadata are no named value: a key, or per-job values
laid out after ``TAIL`` (:meth:`ScriptCall.batch`). :meth:`Scripts.run` runs a call once; callers retry it.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, ClassVar, Generic, TypeVar

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from komt_bot.jobs import FINAL_STATES, ClaimedJob, EncodedEvent, Event, FeedbackCounts, JobState, TextPiece
from komt_bot.queue import scripts
from komt_bot.queue.keys import QueueKeys

R = TypeVar("R")
Arg = str | int
JOB_KEYS = tuple(QueueKeys("").for_job(""))  # the names of every job-changing script's KEYS
NO_EVENT = EncodedEvent("", "")
START_EVENT = Event(type="start").encode()  # the script adds the attempt it starts
CANCELLED_EVENT = Event(type="done", finish_reason="cancelled").encode()
_STATES: tuple[JobState, ...] = ("queued", "running", *FINAL_STATES)
# The metadata of a call's field that is not one of its named ARGV values (it names a key, or feeds ``batch``).
NOT_ARGV = MappingProxyType({"argv": False})


def _values(value: object) -> list[Arg]:
    if isinstance(value, EncodedEvent):
        return [value.type, value.data]
    if isinstance(value, bool):
        return ["1" if value else "0"]
    if isinstance(value, str | int):
        return [value]
    raise TypeError(f"not a script argument: {value!r}")


def _state(value: object) -> JobState | None:
    return next((state for state in _STATES if state == value), None)


class ScriptCall(Generic[R]):
    """One run of one script; subclasses are frozen dataclasses whose fields are its named ARGV."""

    __slots__ = ()
    SCRIPT: ClassVar[str]
    KEY_NAMES: ClassVar[tuple[str, ...]] = ()

    def keys(self, keys: QueueKeys) -> list[str]:
        """The script's KEYS: the named ones (in ``KEY_NAMES`` order), then any per-job ones."""
        return []

    def batch(self) -> list[Arg]:
        """The ARGV after the named ones (``TAIL`` on)."""
        return []

    def reply(self, raw: Any) -> R:
        """The script's reply, typed."""
        raise NotImplementedError

    def args(self) -> list[Arg]:
        """The whole ARGV: the named fields in order, then :meth:`batch`."""
        named = [f for f in dataclasses.fields(typing.cast(Any, self)) if f.metadata.get("argv", True)]
        return [value for f in named for value in _values(getattr(self, f.name))] + self.batch()

    @classmethod
    def params(cls) -> tuple[tuple[str, int], ...]:
        """``(name, width)`` of each named ARGV value, for the prelude (an event is two values)."""
        hints = typing.get_type_hints(cls)
        named = [f for f in dataclasses.fields(typing.cast(Any, cls)) if f.metadata.get("argv", True)]
        return tuple((f.name, 2 if hints[f.name] is EncodedEvent else 1) for f in named)


class JobCall(ScriptCall[R]):
    """A call of a script that changes one job's state: it takes the job's standard keys."""

    __slots__ = ()
    KEY_NAMES = JOB_KEYS
    job_id: str

    def keys(self, keys: QueueKeys) -> list[str]:
        return list(keys.for_job(self.job_id).values())


class Scripts:
    """Runs the typed calls of one deployment's scripts on one client (each script registered once)."""

    def __init__(self, redis: aioredis.Redis, keys: QueueKeys) -> None:
        self.redis = redis
        self.keys = keys
        self._registered: dict[type[ScriptCall[Any]], AsyncScript] = {}

    async def run(self, call: ScriptCall[R]) -> R:
        """Run ``call`` once and type its reply."""
        kind = type(call)
        script = self._registered.get(kind)
        if script is None:
            source = scripts.source(kind.SCRIPT, kind.KEY_NAMES, kind.params())
            script = self._registered[kind] = self.redis.register_script(source)
        return call.reply(await script(keys=call.keys(self.keys), args=call.args()))


class SubmitStatus(StrEnum):
    """What submit did."""

    CREATED = "created"  # a new job (or a retry of this same call, whose first try landed)
    EXISTING = "existing"  # the idempotency key (or the job id) had already made it
    REFUSED = "refused"  # the backlog is at its cap


@dataclass(frozen=True, slots=True)
class SubmitReply:
    """Submit's answer: the job it is about and, when refused, the backlog that refused it."""

    status: SubmitStatus
    job_id: str
    backlog: int = 0


@dataclass(frozen=True, slots=True)
class Submit(JobCall[SubmitReply]):
    """``submit.lua``: queue a job, or find the one its idempotency key (or job id) already made."""

    SCRIPT = "submit"
    KEY_NAMES = (*JOB_KEYS, "idem")
    job_id: str
    max_backlog: int
    idempotency_ttl: int
    submit_token: str  # unique per call: a retry whose first try landed is still "created"
    idempotency_key: str = field(metadata=NOT_ARGV)  # its key, or the job hash itself when there is none
    fields: tuple[tuple[str, str], ...] = field(metadata=NOT_ARGV)

    def keys(self, keys: QueueKeys) -> list[str]:
        return [*keys.for_job(self.job_id).values(), self.idempotency_key]

    def batch(self) -> list[Arg]:
        return [value for pair in self.fields for value in pair]

    def reply(self, raw: Any) -> SubmitReply:
        status, value = SubmitStatus(str(raw[0])), raw[1]
        if status is SubmitStatus.REFUSED:
            return SubmitReply(status, self.job_id, int(value))
        return SubmitReply(status, str(value))


class StartStatus(StrEnum):
    """What a start did with a claimed entry."""

    RUN = "run"  # the attempt is this worker's
    SKIP = "skip"  # the job is gone or already ended: the entry was acknowledged
    CANCELLED = "cancelled"  # someone asked to stop it meanwhile: it ended
    DEAD = "dead"  # given up: dead-lettered
    GIVE_UP = "give_up"  # to be given up, nothing written: call again with the encoded dead-letter event


@dataclass(frozen=True, slots=True)
class StartReply:
    """A start's answer: the attempt, with the request (``run``) or the error to give up with (``give_up``)."""

    status: StartStatus
    attempt: int
    request: str = ""
    error: str = ""


@dataclass(frozen=True, slots=True)
class Start(JobCall[StartReply]):
    """``start.lua``: start a claimed entry's job (one new attempt), or end it (cancelled, given up)."""

    SCRIPT = "start"
    job_id: str
    entry_id: str
    worker: str
    now: str
    ttl: int
    max_strikes: int
    max_attempts: int  # starts in all, strikes or not
    start_token: str  # unique per call: a retry whose first try landed gets the same attempt back
    start_event: EncodedEvent
    cancelled_event: EncodedEvent
    give_up_event: EncodedEvent = NO_EVENT  # the dead-letter event for the verdict of an earlier give_up reply
    give_up_attempt: int = 0  # ... which was about this attempt
    give_up_error: str = ""  # ... and this error

    def reply(self, raw: Any) -> StartReply:
        status, attempt = StartStatus(str(raw[0])), int(raw[1])
        detail = str(raw[2]) if len(raw) > 2 else ""
        if status is StartStatus.GIVE_UP:
            return StartReply(status, attempt, error=detail)
        return StartReply(status, attempt, request=detail)


@dataclass(frozen=True, slots=True)
class Heartbeat(ScriptCall[set[str]]):
    """``heartbeat.lua``: keep a worker's entries claimed; the reply is the ids of the jobs it lost."""

    SCRIPT = "heartbeat"
    KEY_NAMES = ("jobs",)
    worker: str
    jobs: tuple[ClaimedJob, ...] = field(metadata=NOT_ARGV)

    def keys(self, keys: QueueKeys) -> list[str]:
        return [keys.jobs, *(keys.job(job.job_id) for job in self.jobs)]

    def batch(self) -> list[Arg]:
        return [value for job in self.jobs for value in (job.entry_id, job.attempt)]

    def reply(self, raw: Any) -> set[str]:
        return {self.jobs[int(position) - 1].job_id for position in raw or []}


@dataclass(frozen=True, slots=True)
class Publish(ScriptCall[set[str]]):
    """``publish.lua``: append text pieces of several jobs; the reply is the ids of the jobs the worker lost."""

    SCRIPT = "publish"
    pieces: tuple[TextPiece, ...] = field(metadata=NOT_ARGV)

    def keys(self, keys: QueueKeys) -> list[str]:
        return [key for piece in self.pieces for key in (keys.job(piece.job.job_id), keys.out(piece.job.job_id))]

    def batch(self) -> list[Arg]:
        values: list[Arg] = []
        for piece in self.pieces:
            values += [piece.job.attempt, piece.seq, *Event(type="delta", text=piece.text).encode()]
        return values

    def reply(self, raw: Any) -> set[str]:
        return {piece.job.job_id for piece, ok in zip(self.pieces, raw, strict=True) if not int(ok)}


@dataclass(frozen=True, slots=True)
class Finish(JobCall[bool]):
    """``finish.lua``: the attempt's last text and its done event; False when the worker lost the job."""

    SCRIPT = "finish"
    job_id: str
    entry_id: str
    attempt: int
    state: str  # "done" or "cancelled"
    now: str
    ttl: int
    finish_reason: str
    usage: str  # JSON, for the record
    tail_seq: int
    tail_event: EncodedEvent  # NO_EVENT when there is no text left
    done_event: EncodedEvent

    def reply(self, raw: Any) -> bool:
        return str(raw) == "ok"


class FailOutcome(StrEnum):
    """What recording a failed attempt did."""

    RETRIED = "retried"  # back at the head of the queue
    DEAD = "dead"  # dead-lettered after its strikes
    FAILED = "failed"  # not retryable: the job ended with its error
    LOST = "lost"  # the worker no longer owns the attempt: nothing written


@dataclass(frozen=True, slots=True)
class Fail(JobCall[FailOutcome]):
    """``fail.lua``: a failed attempt is retried, dead-lettered or ends the job, with the events Python encoded."""

    SCRIPT = "fail"
    job_id: str
    entry_id: str
    attempt: int
    max_strikes: int
    code: str
    message: str
    retryable: bool
    now: str
    ttl: int
    failed_event: EncodedEvent  # when it ends the job with its own error
    dead_event: EncodedEvent  # when it is dead-lettered

    def reply(self, raw: Any) -> FailOutcome:
        return FailOutcome(str(raw))


@dataclass(frozen=True, slots=True)
class Requeue(JobCall[bool]):
    """``requeue.lua``: put a claimed job back at the head of the queue; False when the worker lost it."""

    SCRIPT = "requeue"
    job_id: str
    entry_id: str
    attempt: int
    error: str  # "" for none

    def reply(self, raw: Any) -> bool:
        return str(raw) == "ok"


@dataclass(frozen=True, slots=True)
class Cancel(JobCall[JobState | None]):
    """``cancel.lua``: end a queued job, flag a running one; the reply is the state it was in (None: unknown)."""

    SCRIPT = "cancel"
    job_id: str
    now: str
    ttl: int
    cancel_ttl: int
    only_if_queued: bool
    cancelled_event: EncodedEvent

    def reply(self, raw: Any) -> JobState | None:
        return _state(raw)


@dataclass(frozen=True, slots=True)
class Reopened:
    """What requeueing an ended job found: its previous state (None: unknown job) and dead letters removed."""

    previous: JobState | None
    dead_letter_removed: int


@dataclass(frozen=True, slots=True)
class RequeueEnded(JobCall[Reopened]):
    """``requeue_ended.lua``: queue a failed or cancelled job again from attempt 0 (admin)."""

    SCRIPT = "requeue_ended"
    job_id: str
    now: str

    def reply(self, raw: Any) -> Reopened:
        return Reopened(_state(raw[0]), int(raw[1]))


@dataclass(frozen=True, slots=True)
class RecordFeedback(ScriptCall[FeedbackCounts | None]):
    """``feedback.lua``: one person's rating of an answer; None when the job's record is gone."""

    SCRIPT = "feedback"
    KEY_NAMES = ("job", "feedback", "totals", "recent")
    person: str
    rating: str
    now: str
    ttl: int  # for a job hash that has none
    member: str  # the recent set's member
    job_id: str = field(metadata=NOT_ARGV)

    def keys(self, keys: QueueKeys) -> list[str]:
        job = self.job_id
        return [keys.job(job), keys.feedback(job), keys.feedback_totals, keys.feedback_recent("")]

    def reply(self, raw: Any) -> FeedbackCounts | None:
        found, *rest = raw
        if not int(found):
            return None
        previous, *ratings = rest
        return FeedbackCounts.from_ratings((str(r) for r in ratings), str(previous) or None)
