"""The soak's load in its default mode (``--via ask``): every conversation runs in the harness's process through
:func:`komt_bot.chat.ask.ask` -- the flow every chat adapter uses -- into a recording sink (:mod:`.recording`)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any, cast

from komt_bot.chat.ask import ask
from komt_bot.chat.editor import ReplyEditor, ReplyLimits
from komt_bot.dev.options import QUESTIONS, SoakOptions
from komt_bot.dev.recording import Conversation, RecordingSink
from komt_bot.dev.verdict import Verdict, evidence, judge
from komt_bot.jobs import Event, JobRequest, Origin, Turn
from komt_bot.queue import JobQueue

ASK_GRACE_SECONDS = 60.0  # past the ask's own timeout, the harness stops waiting for it (counted missing)


class AskLoad:
    """Conversations asked in-process, each into its own recording sink."""

    def __init__(self, options: SoakOptions, queue: JobQueue, on_answer: Callable[[], None]) -> None:
        self.options = options
        self.queue = queue
        run_id = uuid.uuid4().hex[:8]
        self.conversations = [
            Conversation(
                index=i,
                idempotency_key=f"soak-{run_id}-{i}",
                question=f"{QUESTIONS[i % len(QUESTIONS)]} ({i})",
                sink=RecordingSink(on_first_answer=on_answer),
            )
            for i in range(options.conversations)
        ]

    async def run(self) -> None:
        """Every conversation, ``--concurrency`` at a time."""
        gate = asyncio.Semaphore(self.options.concurrency or len(self.conversations))
        limits = ReplyLimits(max_size=self.options.message_size)
        await asyncio.gather(*(self._converse(c, gate, limits) for c in self.conversations))

    async def _converse(self, conversation: Conversation, gate: asyncio.Semaphore, limits: ReplyLimits) -> None:
        """One person asks one question; the reply goes into the conversation's recording sink."""
        options = self.options
        async with gate:
            editor = ReplyEditor(conversation.sink, limits)
            origin = Origin(
                platform="soak", channel="soak", thread=str(conversation.index), user=f"soak-{conversation.index}"
            )
            request = JobRequest(conversation=[Turn(role="user", text=conversation.question)], origin=origin)
            conversation.submitted = time.monotonic()
            try:
                async with asyncio.timeout(options.ask_timeout + ASK_GRACE_SECONDS):
                    conversation.outcome = await ask(
                        self.queue,
                        request,
                        editor,
                        idempotency_key=conversation.idempotency_key,
                        timeout_seconds=options.ask_timeout,
                    )
            except TimeoutError:
                conversation.crash = f"ask() did not return within {options.ask_timeout + ASK_GRACE_SECONDS:.0f} s"
            except Exception as e:
                conversation.crash = f"ask() raised {type(e).__name__}: {e}"
            finally:
                conversation.ended = time.monotonic()

    def counts(self) -> tuple[int, int]:
        """(conversations ended, conversations that showed answer text)."""
        conversations = self.conversations
        return (
            sum(c.ended is not None for c in conversations),
            sum(c.sink.first_answer_at is not None for c in conversations),
        )

    def give_up(self, why: str) -> None:
        """Count every conversation still open as missing."""
        for conversation in self.conversations:
            if conversation.outcome is None and conversation.crash is None:
                conversation.crash = why

    async def judge(self) -> list[tuple[Conversation, Verdict, list[Event]]]:
        """Check each conversation against its sink and its job's output stream."""
        judged = []
        for conversation in self.conversations:
            verdict, events = await judge(self.queue, conversation, self.options.message_size)
            judged.append((conversation, verdict, events))
        return judged

    async def platform(self, verdicts: list[Verdict]) -> dict[str, Any]:
        """Nothing: no platform in between."""
        return {}

    async def evidence(self, conversation: Conversation, verdict: Verdict, events: list[Event]) -> dict[str, Any]:
        """The evidence of one conversation that went wrong: its reply, events and job hash."""
        job: dict[str, str] = {}
        if verdict.job_id:
            raw = cast(dict[str, str], await self.queue.redis.hgetall(self.queue.keys.job(verdict.job_id)))
            job = {k: v for k, v in raw.items() if k != "request"}
        return evidence(conversation, verdict, events, job)
