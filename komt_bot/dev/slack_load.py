"""The soak's load in Slack mode (``--via slack``): every conversation is a person's mention in a channel of the
fake Slack, delivered as a signed ``app_mention`` to real ``komt-bot slack`` processes, and answered (or not) in the
question's thread, where the harness reads it the way a person would.

One run:

1. starts the fake Slack (:mod:`komt_bot.dev.fakes.slack`) in an event loop and thread of its own, enforcing
   Slack's documented tiers with ``--slack-limits``;
2. starts ``--adapters N`` ``komt-bot slack`` processes in HTTP mode (:mod:`.slack_rig`) and waits for their
   presence records;
3. for each conversation posts the question in one of ``--channels`` channels (Slack limits posting per channel:
   a busy workspace has many) and delivers the event through the load balancer (:class:`~.slack_rig.Balancer`);
4. watches every open thread (one snapshot of all of them a poll) until its reply is finished and its job ended,
   or the job ended ``--reply-grace`` seconds ago and the reply is still being written (half-written);
5. judges each thread against its job's output stream (:mod:`.slack_verdict`) and measures the platform side.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import signal
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

import aiohttp
from redis.exceptions import RedisError

from komt_bot.dev.fakes.platform_limits import RateLimits, slack_tiers
from komt_bot.dev.fakes.slack import FakeSlack
from komt_bot.dev.fakes.slack_requests import event_body, message_event
from komt_bot.dev.fakes.slack_wire import BOT_USER, TEAM
from komt_bot.dev.fakes.threaded import ThreadedFake
from komt_bot.dev.options import QUESTIONS, SLACK_MESSAGE_BYTES, SoakOptions
from komt_bot.dev.processes import STOP_SECONDS, Fleet, worker_environment
from komt_bot.dev.report import percentile
from komt_bot.dev.slack_rig import AdapterPool, Balancer
from komt_bot.dev.slack_thread import SlackConversation, Thread, finished, shows_answer, snapshot
from komt_bot.dev.slack_verdict import judge_slack, slack_evidence
from komt_bot.dev.verdict import Verdict
from komt_bot.errors import QueueError
from komt_bot.jobs import Event
from komt_bot.queue import JobQueue

SIGNING_SECRET = "soak-signing-secret"
POLL_SECONDS = 0.25
JOB_POLL_SECONDS = 1.0
ASK_GRACE_SECONDS = 60.0  # past the adapters' job timeout, the harness stops waiting for a reply
ADAPTER_THREADS = 1


class SlackLoad:
    """Conversations through the fake Slack and real ``komt-bot slack`` processes. ``async with`` starts the fake
    and the adapters (the fleet stops the processes); :meth:`run` runs every conversation to its end."""

    def __init__(
        self, options: SoakOptions, queue: JobQueue, fleet: Fleet, redis_url: str, on_answer: Callable[[], None]
    ) -> None:
        self.options = options
        self.queue = queue
        self.on_answer = on_answer
        limits = RateLimits(slack_tiers(), clock=time.monotonic) if options.slack_limits else None
        self.fake = ThreadedFake(FakeSlack(limits=limits), name="fake-slack")
        self.fleet = fleet
        self.redis_url = redis_url
        self.adapters: AdapterPool | None = None
        self.conversations = [
            SlackConversation(
                index=i,
                question=f"{QUESTIONS[i % len(QUESTIONS)]} ({i})",
                channel=f"C0SOAK{i % options.channels:03d}",
                user=f"U0SOAK{i:05d}",
            )
            for i in range(options.conversations)
        ]
        self._ended = {c.index: asyncio.Event() for c in self.conversations}
        self._threads: dict[int, Thread] = {}  # each posted question's thread, by conversation
        self._session: aiohttp.ClientSession | None = None

    # -- the platform ------------------------------------------------------------------------------------------

    async def __aenter__(self) -> SlackLoad:
        await self.fake.start()
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
        await self.fake.stop()

    async def start_adapters(self, say: Callable[[str], None]) -> AdapterPool:
        """Start ``--adapters`` adapters and wait until each serves."""
        variables = self.options.adapter_variables(self.redis_url, self.fake.fake.api_url, SIGNING_SECRET)
        pool = AdapterPool(self.fleet, worker_environment(variables, ADAPTER_THREADS))
        for _ in range(self.options.adapters):
            pool.start_new()
        limits = "enforcing Slack's tiers" if self.options.slack_limits else "no rate limits"
        say(f"fake Slack at {self.fake.fake.api_url} ({limits}); starting {self.options.adapters} komt-bot slack")
        await pool.wait_ready(self.queue, {a.name for a in pool.members}, self.options.start_timeout)
        self.adapters = pool
        return pool

    async def stop_adapters(self) -> None:
        """SIGTERM every adapter still running and wait for them, before the fake Slack goes away."""
        live = self.adapters.live() if self.adapters else []
        for adapter in live:
            adapter.send(signal.SIGTERM)
        for adapter in live:
            if not await adapter.wait_exit(STOP_SECONDS):
                adapter.kill()

    async def held(self) -> dict[str, int]:
        """Open replies per adapter: the conversations still open whose event it took, or the replies its presence
        record counts (those it resumed for another) if more."""
        taken = Counter(c.adapter for c in self.conversations if c.adapter and c.ended is None)
        reported = await self.adapters.in_flight(self.queue) if self.adapters else {}
        return {name: max(taken.get(name, 0), reported.get(name, 0)) for name in {*taken, *reported}}

    # -- the conversations -------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Every conversation, ``--concurrency`` at a time, until each has ended."""
        assert self.adapters is not None and self._session is not None, "start_adapters() first"
        balancer = Balancer(self.adapters, self._session, SIGNING_SECRET)
        gate = asyncio.Semaphore(self.options.concurrency or len(self.conversations))
        watcher = asyncio.create_task(self._watch(), name="soak-slack-watch")
        talks = asyncio.gather(*(self._converse(c, balancer, gate) for c in self.conversations))
        both: list[asyncio.Future[Any]] = [talks, watcher]
        try:
            await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
            if watcher.done():
                watcher.result()  # it only ends by failing: say why rather than wait for nothing
            await talks
        finally:
            for task in (watcher, talks):
                task.cancel()
            await asyncio.gather(watcher, talks, return_exceptions=True)

    async def _converse(self, c: SlackConversation, balancer: Balancer, gate: asyncio.Semaphore) -> None:
        """One person mentions the bot; Slack delivers the event; the watcher says when the reply has ended."""
        async with gate:
            text = f"<@{BOT_USER}> {c.question}"
            payload = await self.fake.read(
                lambda fake: event_body(message_event(fake.add_message(c.channel, text, user=c.user)))
            )
            c.ts, c.submitted = str(payload["event"]["ts"]), time.monotonic()
            self._threads[c.index] = (c.channel, c.ts)
            delivery = await balancer.deliver(payload, c.submitted + self.options.start_timeout)
            c.sent_wall, c.adapter, c.deliveries = delivery.first_sent, delivery.adapter, delivery.attempts
            c.delivery_errors = delivery.errors
            if delivery.adapter is None:
                c.crash = f"no adapter took the event in {delivery.attempts} tries: {delivery.errors[-3:]}"
                self._end(c)
            await self._ended[c.index].wait()

    def _end(self, c: SlackConversation, crash: str | None = None) -> None:
        if c.ended is None:
            c.ended = time.monotonic()
            c.crash = c.crash or crash
            self._ended[c.index].set()

    async def _watch(self) -> None:
        """Poll every open thread (one snapshot of all) and the open jobs; end the conversations that are done."""
        last_jobs = -math.inf
        while True:
            watched = [c for c in self.conversations if c.index in self._threads and c.ended is None]
            if watched:
                places = [self._threads[c.index] for c in watched]
                shots = await self.fake.read(functools.partial(snapshot, threads=places))
                if time.monotonic() - last_jobs >= JOB_POLL_SECONDS:
                    last_jobs = time.monotonic()
                    await self._poll_jobs(watched)
                for c, place in zip(watched, places, strict=True):
                    c.shown = shots[place]
                    await self._review(c)
            await asyncio.sleep(POLL_SECONDS)

    async def _review(self, c: SlackConversation) -> None:
        now = time.monotonic()
        if not c.answer_seen and shows_answer(c.shown):
            c.answer_seen = True
            self.on_answer()
        if finished(c.shown):
            if c.job_id is None:
                await self._poll_jobs([c])  # a refusal before any job (busy, ...) ends here too
            if c.job_ended is not None or c.job_id is None:
                self._end(c)
        elif c.job_ended is not None and now - c.job_ended > self.options.reply_grace:
            self._end(c, f"still being written {self.options.reply_grace:g} s after the job ended")
        elif c.submitted is not None and now - c.submitted > self.options.ask_timeout + ASK_GRACE_SECONDS:
            self._end(c, f"no finished reply within {self.options.ask_timeout + ASK_GRACE_SECONDS:.0f} s")

    async def _poll_jobs(self, watched: list[SlackConversation]) -> None:
        """Find the job of each conversation (the adapter's idempotency key) and whether it has ended."""
        try:
            for c in watched:
                if c.job_id is None and c.ts is not None:
                    c.job_id = await self.queue.job_for_key(f"slack:{TEAM}:{c.channel}:{c.ts}")
            running = [c for c in watched if c.job_id is not None and c.job_ended is None]
            if not running:
                return
            pipe = self.queue.redis.pipeline(transaction=False)
            for c in running:
                pipe.xrevrange(self.queue.keys.out(cast(str, c.job_id)), count=1)
            for c, entries in zip(running, await pipe.execute(), strict=True):
                if entries and Event.decode(entries[0][0], entries[0][1]).terminal:
                    c.job_ended = time.monotonic()
        except (RedisError, QueueError):
            return  # Redis is restarting (a fault): the next poll looks again

    # -- after the load ----------------------------------------------------------------------------------------

    def counts(self) -> tuple[int, int]:
        """(conversations ended, conversations that showed answer text)."""
        return sum(c.ended is not None for c in self.conversations), sum(c.answer_seen for c in self.conversations)

    def give_up(self, why: str) -> None:
        """End every conversation still open (the run's time limit passed)."""
        for c in self.conversations:
            self._end(c, why)

    async def judge(self) -> list[tuple[SlackConversation, Verdict, list[Event]]]:
        """Read every thread once more (late duplicates show here) and check each conversation."""
        shots = await self.fake.read(lambda fake: snapshot(fake, self._threads.values()))
        judged = []
        for c in self.conversations:
            if c.index in self._threads:
                c.shown = shots[self._threads[c.index]]
            if c.job_id is None and c.ts is not None:
                c.job_id = await self.queue.job_for_key(f"slack:{TEAM}:{c.channel}:{c.ts}")
            verdict, events = await judge_slack(self.queue, c, SLACK_MESSAGE_BYTES)
            judged.append((c, verdict, events))
        return judged

    async def platform(self, verdicts: list[Verdict]) -> dict[str, Any]:
        """What the platform saw: calls, 429s, and the latencies measured at the fake."""

        def calls(fake: FakeSlack) -> tuple[dict[str, int], int]:
            return dict(Counter(call.method for call in fake.calls)), fake.refused

        by_method, refused = await self.fake.read(calls)
        total = sum(by_method.values())
        answered = [v for v in verdicts if v.answered]

        def figures(name: str, values: list[float | None], *fractions: float) -> dict[str, float | None]:
            known = [v for v in values if v is not None]
            return {f"{name}_p{round(f * 100)}": _rounded(percentile(known, f)) for f in fractions}

        return {
            "calls": total,
            "rate_limited": refused,
            "rate_limited_share": round(refused / total, 4) if total else 0.0,
            "calls_by_method": dict(sorted(by_method.items())),
            "slack_limits": self.options.slack_limits,
            "adapters_started": len(self.adapters.members) if self.adapters else 0,
            **figures("first_words", [v.first_words for v in answered], 0.5, 0.95),
            **figures("final_after_done", [v.final_after_done for v in answered], 0.5, 0.95),
            **figures("placeholder", [v.placeholder for v in verdicts], 0.5, 0.95),
        }

    async def evidence(self, c: SlackConversation, verdict: Verdict, events: list[Event]) -> dict[str, Any]:
        """The evidence of one conversation that went wrong."""
        job: dict[str, str] = {}
        if verdict.job_id:
            with contextlib.suppress(RedisError):
                raw = cast(dict[str, str], await self.queue.redis.hgetall(self.queue.keys.job(verdict.job_id)))
                job = {k: v for k, v in raw.items() if k != "request"}
        return slack_evidence(c, verdict, events, job)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
