"""What operators see of the queue: typed views of workers, adapters, running jobs, listings and one job."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from komt_bot.jobs import ErrorCode, Event, FeedbackCounts, JobRecord
from komt_bot.queue.presence import ComponentRecord, WorkerRecord

PREVIEW_CHARS = 40


def preview(text: str, limit: int = PREVIEW_CHARS) -> str:
    """The first ``limit`` characters of ``text`` on one line, with an ellipsis when cut."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def age(then: float | None, now: float) -> float | None:
    """Seconds from ``then`` to ``now`` (None when ``then`` is unknown)."""
    return None if then is None else round(max(0.0, now - then), 3)


@dataclass(frozen=True, slots=True)
class WorkerView:
    """One worker's presence record as ``queue status`` shows it: the record itself (its fields are defined once,
    by :class:`WorkerRecord`), how old it is and whether it is stale by its own ``stale_after``."""

    record: WorkerRecord
    heartbeat_age: float
    stale: bool

    @classmethod
    def from_record(cls, record: WorkerRecord, now: float) -> WorkerView:
        """The view of a record written by :meth:`komt_bot.worker.Worker.record`."""
        return cls(record, round(record.age(now), 3), record.stale(now))

    @property
    def serving(self) -> bool:
        """Fresh and taking jobs."""
        return not self.stale and not self.record.draining

    def to_json(self) -> dict[str, Any]:
        """The record's fields, with its age and whether it is stale."""
        return {**self.record.model_dump(mode="json"), "heartbeat_age": self.heartbeat_age, "stale": self.stale}


@dataclass(frozen=True, slots=True)
class ComponentView:
    """One adapter heartbeat record (``component:{name}``)."""

    component: str
    host: str
    heartbeat_age: float
    stale: bool

    @classmethod
    def from_record(cls, record: ComponentRecord, now: float) -> ComponentView:
        """The view of a record written by :func:`komt_bot.chat.presence.adapter_heartbeat`."""
        return cls(
            component=record.component,
            host=record.host,
            heartbeat_age=round(record.age(now), 3),
            stale=record.stale(now),
        )


@dataclass(frozen=True, slots=True)
class RunningJob:
    """A job a worker has claimed and not yet acknowledged."""

    job_id: str
    worker: str
    platform: str
    channel: str
    running_seconds: float | None
    idle_seconds: float
    deliveries: int
    worker_live: bool


@dataclass(frozen=True, slots=True)
class FeedbackStats:
    """People's ratings of the answers: those given in the last ``window_seconds``, and every current one."""

    window_seconds: float = 0.0
    recent: dict[str, int] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def share(counts: dict[str, int]) -> float | None:
        """The share of 👍 among ``counts`` (0..1), None when there are none."""
        total = sum(counts.values())
        return round(counts.get("up", 0) / total, 3) if total else None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data, with the share of 👍 of each."""
        return {
            **asdict(self),
            "recent_share_up": self.share(self.recent),
            "total_share_up": self.share(self.totals),
        }


@dataclass(frozen=True, slots=True)
class BotDeliveries:
    """One bot's open replies (delivery records): who holds them, and those waiting for an adapter to claim them."""

    platform: str
    bot: str
    owners: dict[str, int]  # adapter process -> replies it holds under a live lease
    orphaned: int  # replies whose lease lapsed (their adapter died, or handed them over): waiting for an owner
    oldest_lapse_seconds: float | None  # how long the longest-waiting of those has waited past its lease

    @property
    def open(self) -> int:
        """Every open reply of the bot."""
        return sum(self.owners.values()) + self.orphaned

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data, with the open count."""
        return {**asdict(self), "open": self.open}


@dataclass(frozen=True, slots=True)
class DeliveryCounts:
    """The open replies of every bot, for ``queue status`` and ``health --component slack|discord``."""

    bots: list[BotDeliveries] = field(default_factory=list)

    @property
    def open(self) -> int:
        """Open replies in all."""
        return sum(bot.open for bot in self.bots)

    @property
    def orphaned(self) -> int:
        """Replies waiting for an owner in all."""
        return sum(bot.orphaned for bot in self.bots)

    @property
    def oldest_lapse_seconds(self) -> float | None:
        """The longest any reply has waited for an owner past its lease (None when none waits)."""
        return max((b.oldest_lapse_seconds for b in self.bots if b.oldest_lapse_seconds is not None), default=None)

    def of_platform(self, platform: str) -> DeliveryCounts:
        """Only the bots of ``platform``."""
        return DeliveryCounts([bot for bot in self.bots if bot.platform == platform])

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data: the totals, then each bot."""
        return {
            "open": self.open,
            "orphaned": self.orphaned,
            "oldest_lapse_seconds": self.oldest_lapse_seconds,
            "bots": [bot.to_json() for bot in self.bots],
        }


@dataclass(frozen=True, slots=True)
class QueueStatus:
    """Everything ``komt-bot queue status`` shows."""

    prefix: str
    waiting: int
    running: int
    oldest_waiting_seconds: float | None
    dead_letter: int
    recent_seconds: float
    recent: dict[str, int]
    totals: dict[str, int]
    workers: list[WorkerView] = field(default_factory=list)
    components: list[ComponentView] = field(default_factory=list)
    running_jobs: list[RunningJob] = field(default_factory=list)
    feedback: FeedbackStats = field(default_factory=FeedbackStats)
    deliveries: DeliveryCounts = field(default_factory=DeliveryCounts)

    @property
    def orphaned(self) -> list[RunningJob]:
        """Running jobs whose worker has no fresh heartbeat record."""
        return [job for job in self.running_jobs if not job.worker_live]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data (no secrets in it)."""
        return {
            **asdict(self),
            "workers": [worker.to_json() for worker in self.workers],
            "orphaned": len(self.orphaned),
            "feedback": self.feedback.to_json(),
            "deliveries": self.deliveries.to_json(),
        }


@dataclass(frozen=True, slots=True)
class JobSummary:
    """One line of ``komt-bot queue jobs``: never more than a preview of the question."""

    job_id: str
    state: str
    platform: str
    channel: str
    attempt: int
    worker: str
    error_code: str
    created: float | None
    started: float | None
    finished: float | None
    question: str

    @property
    def shown_state(self) -> str:
        """The state, with ``dead_letter`` spelled out for dead-lettered failures (not a job state: a failed job
        whose error code says so)."""
        return ErrorCode.DEAD_LETTER.value if self.error_code == ErrorCode.DEAD_LETTER else self.state

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data."""
        return {**asdict(self), "shown_state": self.shown_state}


@dataclass(frozen=True, slots=True)
class JobDetail:
    """One job in full: its record, the conversation and its events so far."""

    job_id: str
    record: JobRecord
    conversation: list[dict[str, str]]
    position: int | None
    events: list[Event]
    feedback: FeedbackCounts = field(default_factory=FeedbackCounts)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data (the raw request is replaced by the parsed conversation)."""
        return {
            "job_id": self.job_id,
            "record": self.record.public_fields(),
            "conversation": self.conversation,
            "position": self.position,
            "events": [e.model_dump(exclude_defaults=True) for e in self.events],
            "feedback": self.feedback.to_json(),
        }


@dataclass(frozen=True, slots=True)
class RequeueResult:
    """What one requeue did."""

    job_id: str
    previous_state: str
    dead_letter_removed: int


@dataclass(frozen=True, slots=True)
class PurgePlan:
    """What a purge would touch, for the confirmation question."""

    waiting: list[str]
    running: list[str]
    dead_letter: int


@dataclass(frozen=True, slots=True)
class PurgeResult:
    """What a purge did."""

    cancelled_waiting: int
    stopped_running: int
    dead_letter_dropped: int
    running_left: int


def summary(record: JobRecord) -> JobSummary:
    """One listing line of a job."""
    return JobSummary(
        job_id=record.job_id,
        state=record.state,
        platform=record.platform,
        channel=record.channel,
        attempt=record.attempt,
        worker=record.worker,
        error_code=record.error_code,
        created=record.created,
        started=record.started,
        finished=record.finished,
        question=preview(record.question),
    )


def conversation_json(record: JobRecord) -> list[dict[str, str]]:
    """The conversation as JSON-ready turns."""
    return [{"role": turn.role, "text": turn.text} for turn in record.conversation]
