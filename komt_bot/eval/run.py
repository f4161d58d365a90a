"""One evaluation run: every question through the queue as a chat adapter asks it, every answer to the judge.

Each question is checked and asked with :func:`komt_bot.chat.ask.ask` — a one-turn conversation,
``Origin(platform="eval")``, no sampling overrides — so what is measured is the deployment itself: its workers,
engine, sampling defaults and stop sequences. Answers and verdicts are written to the ``--out`` file as they come;
a question already answered there is not asked again, and one already judged is not judged again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from komt_bot.chat.ask import Outcome, Refusal, ask, check
from komt_bot.chat.editor import MessageView, ReplyEditor, ReplyLimits
from komt_bot.errors import EvalError, KomtError, QueueError
from komt_bot.eval.judge import JudgeClient
from komt_bot.eval.questions import Question
from komt_bot.eval.records import ItemRecord, RecordWriter
from komt_bot.jobs import JobRequest, Origin, Turn
from komt_bot.queue import JobQueue
from komt_bot.queue.presence import WorkerRecord
from komt_bot.settings import Settings

log = logging.getLogger(__name__)

EVAL_PLATFORM = "eval"
CANCEL_SECONDS = 5.0
_WHOLE_ANSWER = 10**9  # the editor never splits an eval answer into messages
EVENT_BLOCK_SECONDS = 0.5
RECANCEL_SECONDS = 0.2


class Progress(Protocol):
    """What a run tells whoever watches it."""

    def start(self, questions: int, to_ask: int, to_judge: int) -> None:
        """The run begins: how many questions, how many still to ask and to judge."""

    def answered(self, record: ItemRecord) -> None:
        """A question was answered (or failed)."""

    def judged(self, record: ItemRecord) -> None:
        """An answer was judged (or could not be)."""


async def _no_wait(_seconds: float) -> None:
    return None


class _DiscardSink:
    """A reply sink that shows nothing: the eval reads the answer from the editor."""

    async def post(self, view: MessageView) -> str:
        return "eval"

    async def edit(self, handle: str, view: MessageView) -> None:
        return None


def describe_worker(worker: WorkerRecord) -> str:
    """The deployment row's name: base model, adapter, quantization and engine, as the worker reports them."""
    name = f"{worker.model} + {worker.adapter}" if worker.adapter else worker.model
    return f"{name} ({worker.quantization or 'none'}, {worker.engine})"


def deployment_name(workers: Iterable[WorkerRecord], *, now: float | None = None) -> str:
    """The name of what the live workers serve (several kinds joined by " | "); :class:`EvalError` when none is."""
    clock = time.time() if now is None else now
    names = sorted({describe_worker(w) for w in workers if not w.stale(clock)})
    if not names:
        raise EvalError("no live worker serves this queue: start `komt-bot worker` (or check KOMT_QUEUE__PREFIX)")
    return " | ".join(names)


async def stop_tasks(tasks: Iterable[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait until every one has ended, cancelling again those that have not.

    Once is not always enough on Python 3.11: library code that waits with ``wait_for`` returns the result instead
    of raising when a cancellation lands as its awaitable completes, so a task can miss the one cancellation it was
    sent and go on to its next step.
    """
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _done, pending = await asyncio.wait(pending, timeout=RECANCEL_SECONDS)


def needs_answer(record: ItemRecord | None) -> bool:
    """Whether a question still has to be asked."""
    return record is None or not record.has_answer


def needs_judgement(record: ItemRecord | None) -> bool:
    """Whether an answer still has to be judged (no answer yet counts: it will need one)."""
    return record is None or record.status != "judged"


@dataclass
class EvalRun:
    """Ask what is missing, judge what is unjudged, write every step, return the final record of each question.

    Without a ``queue`` nothing is asked (``--judge-only`` and resumed runs with every answer already saved): a
    question without a saved answer stays as it was.
    """

    questions: list[Question]
    known: dict[str, ItemRecord]
    judge: JudgeClient
    progress: Progress
    settings: Settings
    concurrency: int = 8
    queue: JobQueue | None = None
    writer: RecordWriter | None = None
    deployment: str | None = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    _asking: set[str] = field(default_factory=set)

    async def run(self) -> list[ItemRecord]:
        """Run every question; the first error that stops the run (judge gone, Redis gone) is raised as itself."""
        to_ask = sum(1 for q in self.questions if needs_answer(self.known.get(q.id))) if self.queue else 0
        to_judge = sum(1 for q in self.questions if self._judgeable(q) and needs_judgement(self.known.get(q.id)))
        self.progress.start(len(self.questions), to_ask, to_judge)
        ask_slots = asyncio.Semaphore(self.concurrency)
        judge_slots = asyncio.Semaphore(self.concurrency)
        results: dict[str, ItemRecord] = {}

        async def one(question: Question) -> None:
            record = self.known.get(question.id)
            if needs_answer(record) and self.queue is not None:
                async with ask_slots:
                    record = await self._answer(self.queue, question)
                self._write(record)
                self.progress.answered(record)
            if record is None:
                return
            results[question.id] = record
            if record.has_answer and needs_judgement(record):
                async with judge_slots:
                    record = record.judged(
                        await self.judge.judge(record.question, record.answer or ""), self.judge.config
                    )
                results[question.id] = record
                self._write(record)
                self.progress.judged(record)

        tasks = [asyncio.create_task(one(q), name=f"eval-{q.id}") for q in self.questions]
        try:
            for finished in asyncio.as_completed(tasks):
                await finished
        finally:
            await stop_tasks(tasks)
            if self.queue is not None and self._asking:  # stopped: leave no job of ours running in the deployment
                await asyncio.gather(*(self._cancel(self.queue, key) for key in sorted(self._asking)))
        return [results[q.id] for q in self.questions if q.id in results]

    def _judgeable(self, question: Question) -> bool:
        return self.queue is not None or not needs_answer(self.known.get(question.id))

    def _write(self, record: ItemRecord) -> None:
        if self.writer is not None:
            self.writer.write(record)

    async def _answer(self, queue: JobQueue, question: Question) -> ItemRecord:
        """Ask one question as an adapter does and wait for the whole answer."""
        base = ItemRecord(id=question.id, question=question.instruction, status="failed", deployment=self.deployment)
        checked = check(question.instruction, self.settings.limits)
        if isinstance(checked, Refusal):
            return base.model_copy(update={"error": f"not asked ({checked.kind}): {checked.text}"})
        request = JobRequest(
            conversation=[Turn(role="user", text=checked)],
            origin=Origin(platform=EVAL_PLATFORM, thread=self.run_id, message=question.id),
        )
        key = f"eval:{self.run_id}:{question.id}"
        # The interval is also how long deliver() blocks on the output stream, so it must not be 0; nothing is shown,
        # so the editor never waits it out.
        limits = ReplyLimits(max_size=_WHOLE_ANSWER, edit_interval=EVENT_BLOCK_SECONDS)
        editor = ReplyEditor(_DiscardSink(), limits, sleep=_no_wait)
        started = time.monotonic()
        self._asking.add(key)  # until the job has ended: run() cancels what a stopped run leaves here
        outcome = await ask(
            queue, request, editor, idempotency_key=key, timeout_seconds=self.settings.queue.job_timeout_seconds
        )
        if outcome.kind == "timeout":
            await self._cancel(queue, key)
        self._asking.discard(key)
        if outcome.kind == "queue_down":
            raise QueueError("lost the queue (Redis does not answer)")
        seconds = round(time.monotonic() - started, 3)
        if outcome.kind == "done":
            return base.model_copy(
                update={
                    "status": "answered",
                    "answer": outcome.text,
                    "finish_reason": outcome.finish_reason,
                    "job_id": outcome.job_id,
                    "answer_seconds": seconds,
                }
            )
        return base.model_copy(
            update={"error": await self._why(queue, outcome), "job_id": outcome.job_id, "answer_seconds": seconds}
        )

    async def _why(self, queue: JobQueue, outcome: Outcome) -> str:
        if outcome.kind == "timeout":
            return f"no answer within {self.settings.queue.job_timeout_seconds:g} s (KOMT_QUEUE__JOB_TIMEOUT_SECONDS)"
        if outcome.kind == "refused":
            return "the queue refused the job (backlog full)"
        if outcome.kind == "cancelled":
            return "the job was cancelled"
        detail = ""
        if outcome.job_id:
            with contextlib.suppress(KomtError):
                job = await queue.job(outcome.job_id)
                detail = f": {job.error_code or '?'}: {job.error}" if job.error or job.error_code else ""
        return f"the job failed{detail}"

    async def _cancel(self, queue: JobQueue, key: str) -> None:
        async def cancel() -> None:
            job_id = await queue.job_for_key(key)
            if job_id:
                await queue.cancel(job_id)

        try:
            async with asyncio.timeout(CANCEL_SECONDS):
                await cancel()
        except (KomtError, TimeoutError) as e:
            log.warning("could not cancel the eval job %s: %s", key, e)
