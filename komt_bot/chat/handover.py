"""Replies that outlive their adapter process: recorded in Redis, leased, handed over on a deploy, resumed.

Every open reply is a delivery record (:class:`~komt_bot.jobs.DeliveryRecord`): where it is (the sink's
:meth:`DurableSink.state`), the messages it has posted (:meth:`~komt_bot.chat.editor.ReplyEditor.snapshot`), and the
adapter process that holds it under a lease. :class:`OpenReplies` is that process's side:

* :meth:`OpenReplies.recorder` gives each new reply a :class:`ReplyRecorder`, which :func:`komt_bot.chat.ask.deliver`
  keeps up to date (a new message, a stream opened) and ends when the final text is shown or the job was stopped;
* :meth:`OpenReplies.run` renews this process's leases, and claims the replies of its platform and bot whose
  owner's lease lapsed (a crash, a freeze, a deploy's hand-over) -- at start and every few seconds -- and has the
  adapter resume each: rebuild its sink and editor from the record, replay the job's output stream from the start
  into the messages that already exist, and follow it to the end;
* :meth:`OpenReplies.hand_over` (SIGTERM) lets every lease lapse at once, so the next process or a sibling replica
  continues without waiting. An adapter's shutdown never cancels a job: only a person's Stop or the job's own
  timeout does.

A reply this process lost to another (its lease lapsed while it was frozen, and another took it over) is cancelled
here at once, so two processes never keep writing one reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from komt_bot.chat.editor import ReplyEditor, ReplySink
from komt_bot.errors import QueueError
from komt_bot.jobs import DeliveryRecord
from komt_bot.metrics import Metrics
from komt_bot.queue import JobQueue

log = logging.getLogger(__name__)

LEASE_SECONDS = 10.0  # a reply whose process stopped renewing is resumed elsewhere this long after
RENEW_SECONDS = 3.0
CLAIM_SECONDS = 3.0
CLAIM_BATCH = 50


class DurableSink(ReplySink, Protocol):
    """A sink whose reply another process can continue: everything it needs to go on, as JSON data."""

    def state(self) -> dict[str, Any]:
        """Where the reply is and the platform state of its messages (see each platform's ``resumed`` sink)."""
        ...


def owner_name(platform: str) -> str:
    """``slack-host-pid-xxxx``: unique per adapter process, readable in ``queue status``."""
    return f"{platform}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"


class ReplyRecorder:
    """Keeps one reply's delivery record in step with its sink and editor."""

    def __init__(self, replies: OpenReplies, job_id: str, sink: DurableSink, editor: ReplyEditor) -> None:
        self.replies = replies
        self.job_id = job_id
        self.sink = sink
        self.editor = editor
        self._saved: str | None = None

    async def open(self) -> None:
        """Create the record (before the reply's first message is posted), and hold it."""
        self.replies.hold(self)
        await self.replies.queue.open_delivery(
            self.job_id,
            platform=self.replies.platform,
            bot=self.replies.bot,
            owner=self.replies.owner,
            place=self.sink.state(),
            lease_seconds=self.replies.lease_seconds,
        )

    def adopt(self, record: DeliveryRecord) -> None:
        """Take over a claimed record as it stands (nothing is written until something changes)."""
        self.replies.hold(self)
        self._saved = _structure(record.place, record.messages)

    async def save(self, shown_entry: str = "") -> None:
        """Write the record when the reply's structure changed (a new message, a stream opened, a message gone);
        not for every edit of a message's text: a resumed reply rebuilds the text from the job's stream."""
        place, snapshot = self.sink.state(), self.editor.snapshot()
        structure = _structure(place, snapshot)
        if structure == self._saved:
            return
        owned = await self.replies.queue.save_delivery(
            self.job_id, owner=self.replies.owner, place=place, messages=snapshot, shown_entry=shown_entry
        )
        self._saved = structure
        if not owned:
            raise ReplyTakenOver(self.job_id)

    async def end(self) -> None:
        """The reply is finished (or stopped): the record goes."""
        self.replies.release(self.job_id)
        with contextlib.suppress(QueueError):
            await self.replies.queue.end_delivery(self.job_id, owner=self.replies.owner)


def _structure(place: dict[str, Any], snapshot: list[dict[str, Any]]) -> str:
    """What of a reply must be in its record for another process to go on: the place, and each message's handle,
    kind and whether it is gone (its text is rebuilt from the job's output stream)."""
    messages = [(m.get("handle"), m.get("kind"), m.get("gone")) for m in snapshot]
    return json.dumps({"place": place, "messages": messages}, sort_keys=True, ensure_ascii=False)


class ReplyTakenOver(Exception):
    """Another adapter process holds this reply now (this one stalled past its lease): write nothing more."""


class OpenReplies:
    """One adapter process's open replies of one platform and bot (module docstring).

    ``resume`` continues a claimed reply (the adapter rebuilds its sink from the record); ``spawn`` runs it as one
    of the adapter's reply tasks, so a shutdown treats it like any other reply.
    """

    def __init__(
        self,
        queue: JobQueue,
        platform: str,
        bot: str,
        *,
        resume: Callable[[DeliveryRecord], Awaitable[None]],
        spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]],
        metrics: Metrics | None = None,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        self.queue = queue
        self.platform = platform
        self.bot = bot
        self.owner = owner_name(platform)
        self.lease_seconds = lease_seconds
        self.metrics = metrics
        self._resume = resume
        self._spawn = spawn
        self._held: dict[str, asyncio.Task[Any] | None] = {}

    def __len__(self) -> int:
        """How many replies this process holds."""
        return len(self._held)

    def recorder(self, job_id: str, sink: DurableSink, editor: ReplyEditor) -> ReplyRecorder:
        """The recorder of a reply this process writes."""
        return ReplyRecorder(self, job_id, sink, editor)

    def hold(self, recorder: ReplyRecorder) -> None:
        """Count the reply as this process's (its task is cancelled if another process takes it over)."""
        self._held[recorder.job_id] = asyncio.current_task()

    def release(self, job_id: str) -> None:
        """Forget a reply (finished, or handed over)."""
        self._held.pop(job_id, None)

    async def run(self) -> None:
        """Renew this process's leases and resume lapsed replies, until cancelled."""
        next_claim = 0.0
        while True:
            try:
                await self._renew()
                if time.monotonic() >= next_claim:
                    await self._claim()
                    next_claim = time.monotonic() + CLAIM_SECONDS
            except QueueError as e:
                log.warning("%s replies: %s (trying again)", self.platform, e)
            await asyncio.sleep(RENEW_SECONDS)

    async def hand_over(self) -> None:
        """Let every reply this process holds go at once (a deploy): the next process resumes them."""
        held = list(self._held)
        self._held.clear()
        if not held:
            return
        try:
            await self.queue.release_deliveries(self.owner, held)
        except QueueError as e:
            log.warning("could not hand over %d replies (%s): they are resumed once their lease lapses", len(held), e)
            return
        log.info("handed over %d open replies", len(held))
        if self.metrics is not None:
            self.metrics.replies_handed_over.labels(self.platform).inc(len(held))

    async def _renew(self) -> None:
        if not self._held:
            return
        lost = await self.queue.renew_deliveries(
            self.platform, self.bot, self.owner, list(self._held), self.lease_seconds
        )
        for job_id in lost:
            task = self._held.pop(job_id, None)
            if task is not None and not task.done():
                log.warning("reply to job %s is another process's now: this one stops writing it", job_id)
                task.cancel()

    async def _claim(self) -> None:
        records = await self.queue.claim_deliveries(
            self.platform, self.bot, self.owner, lease_seconds=self.lease_seconds, limit=CLAIM_BATCH
        )
        for record in records:
            if record.job_id in self._held:
                continue  # still written here (its lease lapsed during a Redis outage): renewed from now on
            self._held[record.job_id] = None
            log.info("resuming the reply to job %s (was %s's)", record.job_id, record.owner or "handed over")
            if self.metrics is not None:
                self.metrics.replies_resumed.labels(self.platform).inc()
            task = self._spawn(self._resumed(record))
            if record.job_id in self._held:
                self._held[record.job_id] = task

    async def _resumed(self, record: DeliveryRecord) -> None:
        await self._resume(record)  # cancelled by a shutdown: still held, so it is handed over again
        if self._held.get(record.job_id) is asyncio.current_task():
            self._held.pop(record.job_id, None)
