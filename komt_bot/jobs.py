"""The typed records of the job protocol: what adapters ask, what the queue stores, what workers publish.

These are the only shapes that cross the queue. :class:`JobRecord` parses the job hash (``{p}:job:{id}``),
:class:`Event` an output-stream entry (``{p}:out:{id}``) and :class:`DeliveryRecord` an open reply
(``{p}:delivery:{id}``); nobody else reads their raw fields.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, Field, ValidationError

JobState = Literal["queued", "running", "done", "failed", "cancelled"]
FINAL_STATES: tuple[JobState, ...] = ("done", "failed", "cancelled")
EventType = Literal["start", "delta", "done", "error"]
Rating = Literal["up", "down"]
RATINGS: tuple[Rating, ...] = ("up", "down")


class ErrorCode(StrEnum):
    """Every code a job can end with (the ``code`` of its ``error`` event and the record's ``error_code``)."""

    DEAD_LETTER = "dead_letter"  # retried until its strikes ran out (or it kept killing its workers)
    PROMPT_TOO_LONG = "prompt_too_long"  # the conversation does not fit the model's prompt budget
    EMPTY_PROMPT = "empty_prompt"  # nothing left to ask
    ENGINE_ERROR = "engine_error"  # generation raised (a strike: retried)
    ENGINE_UNAVAILABLE = "engine_unavailable"  # the model server stayed away longer than a question waits


def new_job_id() -> str:
    """A short, unique job id."""
    return uuid.uuid4().hex[:16]


def job_id_for_key(idempotency_key: str) -> str:
    """The job id a platform event's idempotency key stands for: every delivery of the event names the same job,
    so a button can carry the job id before the job is submitted."""
    return hashlib.sha256(idempotency_key.encode()).hexdigest()[:16]


class Turn(BaseModel):
    """One message of a conversation."""

    role: Literal["user", "assistant"]
    text: str


class Origin(BaseModel):
    """Where a job came from, so replies and the admin CLI can point back at it."""

    platform: str
    channel: str | None = None
    thread: str | None = None
    message: str | None = None
    user: str | None = None


class JobRequest(BaseModel):
    """What an adapter asks for: a conversation whose last turn is the question, and optional overrides."""

    conversation: list[Turn] = Field(min_length=1)
    origin: Origin
    max_new_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0)

    @property
    def question(self) -> str:
        """The last turn's text."""
        return self.conversation[-1].text


class EncodedEvent(NamedTuple):
    """An event as a script appends it to the output stream: its ``type`` and ``data`` fields."""

    type: str
    data: str


class Event(BaseModel):
    """One entry of a job's output stream.

    The wire format is owned here: :meth:`encode` gives the ``type`` and ``data`` (JSON) stream fields, and the
    scripts append them as given. The one value only a script knows, the attempt it numbers a ``start`` or
    ``error`` event with (its fencing token), is a stream field of its own, ``attempt``; :meth:`decode` reads both.
    """

    id: str = ""
    type: EventType
    attempt: int = 0
    text: str = ""
    finish_reason: str | None = None
    usage: dict[str, int] | None = None
    code: str | None = None
    message: str | None = None

    @property
    def terminal(self) -> bool:
        """True for the job's last event (``done`` or ``error``)."""
        return self.type in ("done", "error")

    def encode(self) -> EncodedEvent:
        """The stream fields a script appends for this event (its ``attempt`` is the script's to add)."""
        return EncodedEvent(self.type, self.model_dump_json(exclude={"id", "type", "attempt"}, exclude_defaults=True))

    @classmethod
    def decode(cls, entry_id: str, fields: Mapping[str, str]) -> Event:
        """One output-stream entry (``type``, a JSON ``data`` field and maybe ``attempt``) as an :class:`Event`."""
        data = json.loads(fields.get("data") or "{}")
        if fields.get("attempt"):
            data["attempt"] = fields["attempt"]
        return cls.model_validate({**data, "id": entry_id, "type": fields.get("type", "error")})


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _int(value: str | None) -> int:
    try:
        return int(value) if value else 0
    except ValueError:
        return 0


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job's hash, parsed: its state, attempts, origin and times. Missing fields read as empty."""

    job_id: str
    state: str
    attempt: int
    seq: int
    request_json: str
    platform: str
    channel: str
    thread: str
    message: str
    user: str
    worker: str
    entry: str
    created: float | None
    started: float | None
    finished: float | None
    error: str
    error_code: str
    finish_reason: str
    usage: str
    raw: Mapping[str, str]

    @classmethod
    def from_hash(cls, job_id: str, fields: Mapping[str, str]) -> JobRecord:
        """Parse ``HGETALL {p}:job:{id}`` (text-mode client)."""
        get = fields.get
        return cls(
            job_id=job_id,
            state=get("state", "") or "?",
            attempt=_int(get("attempt")),
            seq=_int(get("seq")),
            request_json=get("request", "") or "",
            platform=get("platform", "") or "",
            channel=get("channel", "") or "",
            thread=get("thread", "") or "",
            message=get("message", "") or "",
            user=get("user", "") or "",
            worker=get("worker", "") or "",
            entry=get("entry", "") or "",
            created=_float(get("created")),
            started=_float(get("started")),
            finished=_float(get("finished")),
            error=get("error", "") or "",
            error_code=get("error_code", "") or "",
            finish_reason=get("finish_reason", "") or "",
            usage=get("usage", "") or "",
            raw=dict(fields),
        )

    @staticmethod
    def submit_fields(request: JobRequest, *, created: float) -> dict[str, str]:
        """The hash fields a new job starts with (besides state, attempt and seq, which the submit script sets)."""
        origin = request.origin
        return {
            "created": f"{created:.3f}",
            "request": request.model_dump_json(),
            "platform": origin.platform,
            "channel": origin.channel or "",
            "thread": origin.thread or "",
            "message": origin.message or "",
            "user": origin.user or "",
        }

    @property
    def request(self) -> JobRequest | None:
        """The request, or None when the hash holds none that parses."""
        try:
            return JobRequest.model_validate_json(self.request_json or "{}")
        except ValidationError:
            return None

    @property
    def conversation(self) -> list[Turn]:
        """The conversation (empty when the request is unreadable)."""
        request = self.request
        return list(request.conversation) if request else []

    @property
    def question(self) -> str:
        """The last question, or empty."""
        request = self.request
        return request.question if request else ""

    @property
    def dead_lettered(self) -> bool:
        """A failed job that went to the dead-letter stream."""
        return self.error_code == ErrorCode.DEAD_LETTER

    def public_fields(self) -> dict[str, str]:
        """The hash as JSON-ready data, without the raw request (the conversation is shown parsed instead)."""
        return {k: v for k, v in self.raw.items() if k != "request"}


@dataclass(frozen=True, slots=True)
class Submission:
    """The answer to :meth:`komt_bot.queue.JobQueue.submit`."""

    job_id: str
    created: bool  # False when the idempotency key had already made this job
    position: int | None  # jobs ahead of it, None once it started


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A job a worker has taken: the attempt is the worker's fencing token for every write it makes."""

    job_id: str
    entry_id: str
    attempt: int
    request: JobRequest


@dataclass(frozen=True, slots=True)
class TextPiece:
    """Text a worker publishes for one job: the ``seq``-th piece of its current attempt."""

    job: ClaimedJob
    seq: int
    text: str


@dataclass(frozen=True, slots=True)
class FeedbackCounts:
    """How people rated one answer (``{p}:feedback:{id}``): how many chose each rating, one vote a person.

    After a click (:meth:`komt_bot.queue.JobQueue.record_feedback`) ``previous`` is the clicker's rating before it,
    None when it was their first.
    """

    up: int = 0
    down: int = 0
    previous: Rating | None = None

    @classmethod
    def from_ratings(cls, ratings: Iterable[str], previous: str | None = None) -> FeedbackCounts:
        """Count the ratings of a feedback hash's values (unknown values are ignored)."""
        values = list(ratings)
        return cls(up=values.count("up"), down=values.count("down"), previous=as_rating(previous))

    @property
    def total(self) -> int:
        """Everyone who rated the answer."""
        return self.up + self.down

    def to_json(self) -> dict[str, int]:
        """The count of each rating."""
        return {"up": self.up, "down": self.down}


def as_rating(value: str | None) -> Rating | None:
    """``value`` as a :data:`Rating`, or None when it is not one."""
    for rating in RATINGS:
        if value == rating:
            return rating
    return None


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """An open reply: where it is, how far it has been written, and which adapter process holds it."""

    job_id: str
    platform: str  # "slack" / "discord"
    bot: str  # the app/bot it belongs to (Slack team+app or bot user id; Discord application id)
    owner: str  # the adapter process holding the lease ("" once released)
    lease_until: float  # wall time (Redis's clock, as time.time()) the lease lapses
    place: dict[str, Any]  # platform-specific: channel, thread, user, team, interaction token + expiry ...
    messages: list[dict[str, Any]]  # the reply's messages in order, platform-specific (handle, text shown, kind ...)
    shown_entry: str  # the last output-stream entry id the reply has shown ("" for none)
    created: float

    @classmethod
    def from_hash(cls, job_id: str, fields: Mapping[str, str]) -> DeliveryRecord:
        """Parse ``HGETALL {p}:delivery:{id}`` (text-mode client); unreadable JSON reads as empty."""
        get = fields.get
        place = _json(get("place"), dict)
        messages = _json(get("messages"), list)
        return cls(
            job_id=job_id,
            platform=get("platform", "") or "",
            bot=get("bot", "") or "",
            owner=get("owner", "") or "",
            lease_until=_float(get("lease_until")) or 0.0,
            place=place if isinstance(place, dict) else {},
            messages=[m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else [],
            shown_entry=get("shown_entry", "") or "",
            created=_float(get("created")) or 0.0,
        )


def _json(value: str | None, default: type[dict[str, Any]] | type[list[Any]]) -> Any:
    try:
        return json.loads(value) if value else default()
    except ValueError:
        return default()
