"""Every Redis key name of one deployment, built in this one place.

Keys (``{p}`` is ``settings.queue.prefix``)::

    {p}:jobs            stream of job ids; consumer group "workers"; entries are XDEL'd when acknowledged
    {p}:waiting         sorted set job id -> submission sequence: the jobs not yet started (queue position)
    {p}:seq             counter behind that sequence
    {p}:job:{id}        hash: state, attempt, request, origin fields, times, worker, usage, error
    {p}:out:{id}        stream of the job's events: start{attempt} / delta{text} / done{...} / error{...}
    {p}:cancel:{id}     set when someone asks to stop the job
    {p}:idem:{key}      idempotency key -> job id (a redelivered platform event makes no second job)
    {p}:dlq             stream of dead-lettered jobs with their last error
    {p}:fair:line:{person}  list of one person's queued job ids, first come first served (fair share)
    {p}:fair:people     sorted set person -> tick of their last start: the people with a queued job, next first
    {p}:fair:served     sorted set person -> tick of their last start (the most recent 10,000 people)
    {p}:fair:clock      counter of starts (the ticks)
    {p}:fair:running    hash person -> their jobs taken and not ended (the per-person cap)
    {p}:fair:head       sorted set job id -> submission sequence: requeued jobs, which go before every line
    {p}:wake            stream of one entry, added to whenever a job is queued: blocked claimers wait past it
    {p}:index           sorted set job id -> created time (recent jobs, for the admin CLI)
    {p}:stats           hash of totals per final state
    {p}:recent:{state}  sorted set job id -> finish time (last hour, per final state)
    {p}:feedback:{id}   hash person -> rating ("up" / "down") of one answer, expiring with the job's record
    {p}:feedback_totals hash rating -> how many people's current rating it is, across every answer
    {p}:feedback_recent:{rating}  sorted set "{job id}/{person}" -> time of the rating (last hour)
    {p}:{platform}:...  an adapter's own marks (e.g. Slack's delivered messages, threads it answers in)
    {p}:rate:{user}:{w} requests of one person in one minute window (per-user rate limit)
    {p}:worker:{name}   a live worker's presence record (JSON, with a TTL)
    {p}:component:{n}   a live adapter's presence record (JSON, with a TTL)
    {p}:reader:{id}     a process's output reader's wake-up stream (a new reply interrupts its blocking XREAD)
    {p}:delivery:{id}   hash: an open reply of job {id}: platform, bot, owner, lease_until, place (JSON), messages
                        (JSON), shown_entry, created, claim_token; expires with the job (see queue/deliveries.py)
    {p}:deliveries:{platform}:{bot}  sorted set job id -> lease expiry of one bot's open replies (claims read it)
"""

from __future__ import annotations

from typing import Literal

# The protocol's constants; the scripts get them in their generated prelude (komt_bot.queue.scripts).
GROUP = "workers"
REQUEUED_CONSUMER = "requeued"  # holds entries put back for another worker
REQUEUED_IDLE_MS = 10**10  # "idle for months": any worker's next claim takes such an entry over first
RECENT_WINDOW_SECONDS = 3600

PresenceKind = Literal["worker", "component"]


class QueueKeys:
    """Every Redis key name of one deployment (one prefix)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.jobs = f"{prefix}:jobs"
        self.waiting = f"{prefix}:waiting"
        self.seq = f"{prefix}:seq"
        self.dlq = f"{prefix}:dlq"
        self.index = f"{prefix}:index"
        self.stats = f"{prefix}:stats"
        self.feedback_totals = f"{prefix}:feedback_totals"
        self.fair_people = f"{prefix}:fair:people"
        self.fair_served = f"{prefix}:fair:served"
        self.fair_clock = f"{prefix}:fair:clock"
        self.fair_running = f"{prefix}:fair:running"
        self.fair_head = f"{prefix}:fair:head"
        self.wake = f"{prefix}:wake"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def fair_line(self, person: str) -> str:
        """One person's line of queued jobs (``person`` is ``platform:user`` or ``anonymous``)."""
        return f"{self.prefix}:fair:line:{person}"

    def fair(self) -> dict[str, str]:
        """The fair share's KEYS, by the names the scripts read them with (``fair_line`` and ``job_prefix`` are
        prefixes the scripts append a person or a job id to)."""
        return {
            "fair_people": self.fair_people,
            "fair_served": self.fair_served,
            "fair_running": self.fair_running,
            "fair_clock": self.fair_clock,
            "fair_head": self.fair_head,
            "fair_line": self.fair_line(""),
            "job_prefix": self.job(""),
            "wake": self.wake,
        }

    def out(self, job_id: str) -> str:
        return f"{self.prefix}:out:{job_id}"

    def cancel(self, job_id: str) -> str:
        return f"{self.prefix}:cancel:{job_id}"

    def idempotency(self, key: str) -> str:
        return f"{self.prefix}:idem:{key}"

    def recent(self, state: str) -> str:
        return f"{self.prefix}:recent:{state}"

    def feedback(self, job_id: str) -> str:
        return f"{self.prefix}:feedback:{job_id}"

    def feedback_recent(self, rating: str) -> str:
        return f"{self.prefix}:feedback_recent:{rating}"

    def adapter(self, platform: str, *parts: str) -> str:
        """A key an adapter keeps for itself (Slack's delivered-message and thread marks)."""
        return ":".join([self.prefix, platform, *parts])

    def rate(self, user: str, window: int) -> str:
        return f"{self.prefix}:rate:{user}:{window}"

    def presence(self, kind: PresenceKind, name: str) -> str:
        """A worker's or an adapter's presence record (``name`` may be ``*`` for a SCAN pattern)."""
        return f"{self.prefix}:{kind}:{name}"

    def reader_wake(self, reader_id: str) -> str:
        return f"{self.prefix}:reader:{reader_id}"

    def delivery(self, job_id: str) -> str:
        return f"{self.prefix}:delivery:{job_id}"

    def deliveries(self, platform: str, bot: str) -> str:
        """One bot's open replies by lease expiry (``platform`` holds no ``:``, so the key parses back)."""
        return f"{self.prefix}:deliveries:{platform}:{bot}"

    def deliveries_pattern(self, platform: str | None = None) -> str:
        """A SCAN pattern for every bot's (or one platform's) delivery index."""
        return f"{self.prefix}:deliveries:{platform + ':' if platform else ''}*"

    def parse_deliveries(self, key: str) -> tuple[str, str]:
        """``(platform, bot)`` of a key made by :meth:`deliveries`."""
        platform, _, bot = key.removeprefix(f"{self.prefix}:deliveries:").partition(":")
        return platform, bot

    def for_job(self, job_id: str) -> dict[str, str]:
        """The KEYS every job-changing script takes, in order, by the name its Lua reads them with (``K.job``)."""
        return {
            "job": self.job(job_id),
            "out": self.out(job_id),
            "waiting": self.waiting,
            "jobs": self.jobs,
            "cancel": self.cancel(job_id),
            "stats": self.stats,
            "recent": self.recent(""),
            "index": self.index,
            "dlq": self.dlq,
            "seq": self.seq,
            **self.fair(),
        }
