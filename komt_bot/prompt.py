"""The komt prompt: the model card's template, conversations within a token budget, and what answers may show.

The model card's template is ``### instruction: {x}\\n\\n### Response: ``. Earlier turns of a thread are rendered
the same way, one after another, and the oldest are dropped first until the prompt fits. Text from people cannot
open a new instruction or response block: the ``###`` markers they type are neutralised.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

from komt_bot.errors import EmptyPromptError, PromptTooLongError
from komt_bot.jobs import Turn

INSTRUCTION = "### instruction: "
RESPONSE = "### Response: "
TURN_SEPARATOR = "\n\n"
# "###" anywhere starts a template marker for the model (and is a stop sequence), so people's text never keeps it.
_MARKER = re.compile(r"#{3,}")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# In answers only newline and tab survive: a carriage return or vertical tab would make lines overwrite each other
# in a terminal, and no chat platform shows them usefully. C1 controls (U+0080..U+009F) go too.
_ANSWER_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SPECIAL_TOKENS = re.compile(r"</?s>|<unk>|<\|[a-z_]+\|>", re.IGNORECASE)

TokenCounter = Callable[[str], int]

# How the question limit follows the model's budget. A Llama-2 token spells about 4 characters of English prose,
# 3 of code and at most 1 or 2 of Korean; no natural text averages more than MAX_CHARS_PER_TOKEN characters a
# token. The template and the BOS token take TEMPLATE_TOKENS. So a question longer than
# MAX_CHARS_PER_TOKEN × (max_prompt_tokens − TEMPLATE_TOKENS) characters can never fit the prompt, and adapters
# refuse it at once instead of queueing it for a worker to fail with prompt_too_long (komt_bot.chat.ask).
MAX_CHARS_PER_TOKEN = 6
TEMPLATE_TOKENS = 16


def sanitize(text: str) -> str:
    """Make a person's text safe to place inside the template.

    Removes control characters and special-token spellings, and breaks runs of ``#`` so nobody can write
    ``### Response:`` and put words in the model's mouth. Surrogates from broken UTF-8 are replaced.
    """
    text = text.encode("utf-8", errors="replace").decode("utf-8")
    text = _CONTROL.sub("", text)
    text = _SPECIAL_TOKENS.sub("", text)
    text = _MARKER.sub(lambda m: "# " * len(m.group(0)), text)
    return text.strip()


def clean_answer(text: str) -> str:
    """Generated text as people may see it: every control character except newline and tab removed."""
    return _ANSWER_CONTROL.sub("", text)


def render_turn(instruction: str, response: str | None = None) -> str:
    """One exchange in the model card's format; ``response=None`` leaves the response open for the model."""
    head = f"{INSTRUCTION}{instruction}{TURN_SEPARATOR}{RESPONSE}"
    return head if response is None else f"{head}{response}"


def check_question(text: str, *, max_chars: int) -> str:
    """Sanitize a question, raising EmptyPromptError or PromptTooLongError where it cannot be asked."""
    if len(text) > max_chars:
        raise PromptTooLongError(len(text), max_chars)
    cleaned = sanitize(text)
    if not cleaned:
        raise EmptyPromptError("the question is empty")
    return cleaned


def question_char_limit(max_prompt_tokens: int) -> int:
    """The longest question (in characters) that could still fit a prompt of ``max_prompt_tokens`` tokens."""
    return MAX_CHARS_PER_TOKEN * max(1, max_prompt_tokens - TEMPLATE_TOKENS)


def merge_turns(turns: Iterable[Turn]) -> list[Turn]:
    """Join consecutive turns of one role: an answer split over several chat messages is one answer again, and
    several messages in a row from people are one instruction."""
    merged: list[Turn] = []
    for turn in turns:
        if merged and merged[-1].role == turn.role:
            joiner = "" if turn.role == "assistant" else "\n"
            merged[-1] = Turn(role=turn.role, text=merged[-1].text + joiner + turn.text)
        else:
            merged.append(turn)
    return merged


def _exchanges(conversation: Sequence[Turn]) -> tuple[list[tuple[str, str]], str]:
    """Pair the turns into (instruction, response) exchanges, plus the final open instruction."""
    if not conversation or conversation[-1].role != "user":
        raise EmptyPromptError("the conversation does not end with a question")
    exchanges: list[tuple[str, str]] = []
    pending: list[str] = []
    for turn in conversation[:-1]:
        text = sanitize(turn.text)
        if not text:
            continue
        if turn.role == "user":
            pending.append(text)
        elif pending:
            exchanges.append(("\n".join(pending), text))
            pending = []
    question = sanitize(conversation[-1].text)
    if not question:
        raise EmptyPromptError("the question is empty")
    return exchanges, "\n".join([*pending, question])


def build_prompt(conversation: Sequence[Turn], *, max_tokens: int, count_tokens: TokenCounter) -> str:
    """Render a conversation, dropping the oldest exchanges until it fits in ``max_tokens``.

    Raises PromptTooLongError when the last question alone does not fit.
    """
    exchanges, question = _exchanges(conversation)
    last = render_turn(question)
    last_tokens = count_tokens(last)
    if last_tokens > max_tokens:
        raise PromptTooLongError(last_tokens, max_tokens)
    kept: list[str] = []
    used = last_tokens
    for instruction, response in reversed(exchanges):
        block = render_turn(instruction, response) + TURN_SEPARATOR
        cost = count_tokens(block)
        if used + cost > max_tokens:
            break
        kept.append(block)
        used += cost
    return "".join(reversed(kept)) + last
