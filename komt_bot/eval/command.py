"""``komt-bot eval``: the Typer command — options, what is already done (``--resume``, ``--judge-only``), output."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from komt_bot.errors import EvalError, JudgeError, QueueError
from komt_bot.eval.judge import JudgeClient, JudgeConfig
from komt_bot.eval.progress import progress_display
from komt_bot.eval.questions import Question, load_questions, load_reference
from komt_bot.eval.records import ItemRecord, RecordWriter, read_records
from komt_bot.eval.report import deployment_of, render, summarize
from komt_bot.eval.run import EvalRun, Progress, deployment_name, needs_answer
from komt_bot.queue import open_queue
from komt_bot.settings import Settings, load_settings

DEFAULT_CONCURRENCY = 8


@dataclass(frozen=True, slots=True)
class EvalOptions:
    """What ``komt-bot eval`` was asked to do."""

    questions: Path | None = None
    limit: int | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    out: Path | None = None
    resume: bool = False
    judge_only: Path | None = None
    judge_url: str | None = None
    judge_model: str | None = None

    def check(self) -> None:
        """Refuse combinations that cannot work, before anything is asked."""
        if self.resume and self.out is None:
            raise EvalError("--resume continues an --out FILE: give it")
        if self.judge_only is not None and self.questions is not None:
            raise EvalError("--judge-only takes the questions from its file: leave out --questions")
        if self.out is not None and not self.resume and self.out.is_file() and self.out.stat().st_size > 0:
            raise EvalError(f"{self.out} already holds a run: continue it with --resume, or choose a new --out")
        if self.judge_only is not None and self.out is not None and self.out.resolve() == self.judge_only.resolve():
            raise EvalError("--judge-only FILE and --out FILE are the same: write the new verdicts to a new --out")


def plan(options: EvalOptions) -> tuple[list[Question], dict[str, ItemRecord]]:
    """The questions of this run and what is already known of each (saved answers and verdicts)."""
    known: dict[str, ItemRecord] = {}
    if options.judge_only is not None:
        saved, _bad = read_records(options.judge_only)
        if not any(r.has_answer for r in saved.values()):
            raise EvalError(f"{options.judge_only} holds no answers to judge")
        questions = [Question(r.id, r.question) for r in saved.values()]
        known = {key: r.as_answered() if r.has_answer else r for key, r in saved.items()}
    else:
        questions = load_questions(options.questions)
    questions = questions[: options.limit] if options.limit else questions
    if options.resume and options.out is not None and options.out.is_file():
        previous, _bad = read_records(options.out)
        for question in questions:
            record = previous.get(question.id)
            if record is None:
                continue
            if record.question != question.instruction:
                raise EvalError(f"{options.out} answers other questions (item {question.id} differs): use a new --out")
            # --judge-only keeps only the verdicts of the earlier pass; a plain resume keeps every step.
            if options.judge_only is None or record.status == "judged":
                known[question.id] = record
    return questions, known


async def evaluate(settings: Settings, options: EvalOptions, progress: Progress) -> dict[str, Any]:
    """Run the evaluation and return its summary (see :func:`komt_bot.eval.report.summarize`)."""
    config = JudgeConfig.resolve(settings.eval, url=options.judge_url, model=options.judge_model)
    questions, known = plan(options)
    writer = RecordWriter(options.out) if options.out is not None else None
    try:
        async with JudgeClient(config) as judge:
            await judge.check()
            run = EvalRun(questions, known, judge, progress, settings, concurrency=options.concurrency, writer=writer)
            if options.judge_only is None and any(needs_answer(known.get(q.id)) for q in questions):
                async with open_queue(settings, name="komt-eval") as queue:
                    run.queue = queue
                    run.deployment = deployment_name(await queue.presence.workers())
                    records = await run.run()
            else:
                records = await run.run()
    finally:
        if writer is not None:
            writer.close()
    return summarize(
        records,
        questions=len(questions),
        reference=load_reference(),
        deployment=run.deployment or deployment_of(records),
        judge=config,
    )


async def _with_sigterm(settings: Settings, options: EvalOptions, progress: Progress) -> dict[str, Any]:
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    installed = False
    if task is not None:
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):  # only the main thread may
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
            installed = True
    try:
        return await evaluate(settings, options, progress)
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGTERM)


def run_command(options: EvalOptions, *, as_json: bool) -> None:
    """Everything ``komt-bot eval`` does after parsing its options."""
    options.check()
    settings = load_settings()
    err = Console(stderr=True)
    kept = f"what was done is in {options.out}; continue with --resume --out {options.out}" if options.out else ""
    try:
        with progress_display(err) as progress:
            summary = asyncio.run(_with_sigterm(settings, options, progress))
    except (KeyboardInterrupt, asyncio.CancelledError) as e:
        raise EvalError(f"stopped: {kept}" if kept else "stopped") from e
    except (JudgeError, QueueError) as e:
        if not kept:
            raise
        raise EvalError(f"{e}; {kept}") from e
    if as_json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        render(summary, Console())


def eval_command(
    questions: Annotated[
        Path | None, typer.Option("--questions", help='JSONL, an "instruction" per line (default: komt\'s 37)')
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="only the first N questions")] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, help="questions asked, and answers judged, at once")
    ] = DEFAULT_CONCURRENCY,
    out: Annotated[
        Path | None, typer.Option("--out", help="append answers, judge replies and scores here (JSONL)")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="with --out: keep what it holds, ask and judge only what is missing")
    ] = False,
    judge_only: Annotated[
        Path | None, typer.Option("--judge-only", help="judge the answers saved in FILE (an --out) again")
    ] = None,
    judge_url: Annotated[
        str | None, typer.Option("--judge-url", help="the judge's base URL, ending in /v1 (KOMT_EVAL__JUDGE_URL)")
    ] = None,
    judge_model: Annotated[
        str | None, typer.Option("--judge-model", help="the judge's model (KOMT_EVAL__JUDGE_MODEL)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Score this deployment with komt's own judge protocol (37 questions, 0–5 each) beside the model card."""
    options = EvalOptions(questions, limit, concurrency, out, resume, judge_only, judge_url, judge_model)
    run_command(options, as_json=as_json)
