"""The benchmark's requests: komt's own Korean evaluation questions, in the model card's template."""

from __future__ import annotations

from dataclasses import dataclass

from komt_bot.eval.questions import load_questions as load_eval_questions
from komt_bot.prompt import render_turn


@dataclass(frozen=True, slots=True)
class BenchRequest:
    """One question and when it arrives, relative to the start of the run."""

    question: str
    arrival: float

    @property
    def prompt(self) -> str:
        """The question in the model card's template (what (a) and (b) generate from; (c)'s worker builds it)."""
        return render_turn(self.question)


def load_questions() -> list[str]:
    """The 37 Korean questions of komt's own evaluation (mixed lengths)."""
    return [question.instruction for question in load_eval_questions()]


def make_requests(count: int, *, stagger: float) -> list[BenchRequest]:
    """``count`` prompts in the komt template, arriving all at once (stagger 0) or every ``stagger`` seconds."""
    questions = load_questions()
    return [BenchRequest(questions[i % len(questions)], i * stagger) for i in range(count)]
