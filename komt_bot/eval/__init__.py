"""``komt-bot eval``: komt's own judge protocol on a live deployment, with the model card's table beside it.

Each of komt's 37 Korean evaluation questions goes through the queue exactly as a chat adapter asks it
(:mod:`.run`); an LLM judge on any OpenAI-compatible server scores every answer 0..5 (:mod:`.judge`); the
report puts this deployment's row into the card's table (:mod:`.report`). Every step is appended to a JSONL file
(:mod:`.records`), so a stopped run resumes where it was and saved answers can be judged again by another judge.
"""

from komt_bot.eval.command import EvalOptions, eval_command, evaluate
from komt_bot.eval.judge import PROMPT_VERSION, JudgeClient, JudgeConfig, Judgement, judge_messages, parse_score
from komt_bot.eval.questions import Question, ReferenceRow, load_questions, load_reference
from komt_bot.eval.records import ItemRecord, RecordWriter, read_records
from komt_bot.eval.report import render, summarize
from komt_bot.eval.run import EvalRun, deployment_name, describe_worker

__all__ = [
    "PROMPT_VERSION",
    "EvalOptions",
    "EvalRun",
    "ItemRecord",
    "JudgeClient",
    "JudgeConfig",
    "Judgement",
    "Question",
    "RecordWriter",
    "ReferenceRow",
    "deployment_name",
    "describe_worker",
    "eval_command",
    "evaluate",
    "judge_messages",
    "load_questions",
    "load_reference",
    "parse_score",
    "read_records",
    "render",
    "summarize",
]
