"""Everything komt-bot says to people about the state of their question: Korean first, English after."""

from __future__ import annotations

import functools

from komt_bot.errors import BacklogFullError, EmptyPromptError, KomtError, PromptTooLongError, QueueError
from komt_bot.jobs import ErrorCode


def queued(ahead: int | None, wait_seconds: float | None = None) -> str:
    """The placeholder while a job waits, with the estimated wait when one is known."""
    if not ahead:
        return "⏳ 곧 답변을 시작합니다… / starting shortly…"
    korean, english = "", ""
    if wait_seconds is not None:
        if wait_seconds < 90:
            # coarse past 10 s, so the message (and the platform's edits) change about when the position does
            seconds = max(1, round(wait_seconds)) if wait_seconds < 10 else 5 * round(wait_seconds / 5)
            korean, english = f" · 약 {seconds}초", f" · about {seconds} s"
        else:
            minutes = round(wait_seconds / 60)
            korean, english = f" · 약 {minutes}분", f" · about {minutes} min"
    return f"⏳ 대기 중 — 앞에 {ahead}개{korean} / queued, {ahead} ahead{english}"


WRITING_MARK = " ✍️"
EMPTY_ANSWER = "(빈 답변 / empty answer)"
BLANKED = "…"  # what the reply editor leaves in messages a restarted answer no longer needs
WRITING = "✍️ 답변 작성 중… / writing the answer…"  # a placeholder while the answer streams elsewhere
CONTINUED = "⬇️ 답변이 아래 메시지로 이어집니다 / the answer continues below"
RESTARTED = "🔄 작업자가 바뀌어 답변을 처음부터 다시 씁니다 / a worker restarted, rewriting the answer"
STOPPED = "⏹️ 답변을 중단했습니다 / stopped"
STOP_REFUSED = "🙅 질문한 사람이나 관리자만 중단할 수 있습니다 / only the person who asked (or an admin) can stop this"
EMPTY = "🤔 질문이 비어 있습니다. 멘션 뒤에 질문을 적어 주세요 / the question is empty: write it after the mention"
BUSY = "🚦 지금은 요청이 많습니다. 잠시 후 다시 시도해 주세요 / the bot is busy, please try again in a moment"
TIMEOUT = "⌛ 답변이 너무 오래 걸려 기다리기를 멈췄습니다 / the answer took too long, gave up waiting"
RECONNECTING = "🔄 작업 대기열에 다시 연결하는 중… / reconnecting to the job queue…"
QUEUE_DOWN = "🔌 작업 대기열에 연결할 수 없습니다. 관리자에게 알려 주세요 / cannot reach the job queue, tell an admin"
NOT_ALLOWED = "🔒 이 채널이나 사용자에게는 허용되지 않았습니다 / komt-bot is not enabled here"
DMS_OFF = "🔒 DM에서는 사용할 수 없습니다 / komt-bot does not answer direct messages"
TRUNCATED = "✂️ (최대 길이에 도달해 답변이 잘렸습니다 / the answer hit the length limit)"

# Slack's assistant threads: the status line under the thread while a question waits, and the suggested prompts.
THINKING = "💭 질문을 읽는 중… / reading the question…"
SUGGESTED_PROMPTS_TITLE = "무엇을 도와드릴까요? / what can I help with?"
SUGGESTED_PROMPTS = (
    "김치찌개를 맛있게 끓이는 방법을 알려 주세요.",
    "제주도 2박 3일 여행 일정을 짜 주세요.",
    "이 문장을 자연스러운 영어로 번역해 주세요: 회의는 내일 오후 3시에 시작합니다.",
    "파이썬에서 리스트와 튜플의 차이는 무엇인가요?",
)

# The 👍/👎 buttons under a finished answer, and what the person who clicked is told (privately).
FEEDBACK_UP = "좋은 답변 / good answer"
FEEDBACK_DOWN = "아쉬운 답변 / bad answer"
FEEDBACK_THANKS = "🙏 평가해 주셔서 고맙습니다 / thanks for the feedback"
FEEDBACK_CHANGED = "🔁 평가를 바꿨습니다 / your rating was changed"
FEEDBACK_EXPIRED = "⌛ 오래된 답변이라 평가를 남길 수 없습니다. 고맙습니다 / this answer is too old to rate, thank you"


# The terminal chat (`komt-bot chat`, `serve --chat`): no mentions there, and it can say how to start a worker.
TERMINAL_WELCOME = (
    "komt-bot — 질문을 입력하세요 (/reset 새 대화, /quit 또는 Ctrl-D 종료, 답변 중 Ctrl-C는 답변만 중단) / "
    "ask away (/reset: new conversation, /quit or Ctrl-D: leave, Ctrl-C during an answer: stop it)"
)
TERMINAL_RESET = "(새 대화 / new conversation)"
TERMINAL_EMPTY = "🤔 질문이 비어 있습니다. 질문을 입력해 주세요 / the question is empty: type a question"
TERMINAL_NO_WORKER = (
    "⚠️ 실행 중인 작업자가 없어 질문이 대기열에서 기다립니다. 다른 터미널에서 `komt-bot worker`로 시작하세요 / "
    "no worker is running, so the question waits in the queue: start one in another terminal with `komt-bot worker`"
)

TERMINAL_NOT_TAKEN = "⌛ 질문을 맡은 작업자가 없어 기다리기를 멈췄습니다 / no worker took the question, gave up waiting"


def duration(seconds: float) -> tuple[str, str]:
    """``seconds`` for a person, in Korean and in English: "45초" / "45 s", "10분" / "10 min"."""
    if seconds < 90:
        return f"{round(seconds)}초", f"{round(seconds)} s"
    return f"{round(seconds / 60)}분", f"{round(seconds / 60)} min"


def terminal_wait_limit(seconds: float) -> str:
    """How long the terminal chat waits for a worker to take a question."""
    korean, english = duration(seconds)
    return f"⏳ 작업자를 최대 {korean} 기다립니다 / it waits up to {english} for a worker"


def still_waiting(ahead: int, waited: float, limit: float) -> str:
    """A waiting job's place in the queue, said again while nothing changes (the terminal)."""
    waited_ko, waited_en = duration(waited)
    limit_ko, limit_en = duration(limit)
    return (
        f"⏳ 아직 대기 중: {ahead + 1}번째, {waited_ko}째 (최대 {limit_ko}) / "
        f"still waiting: number {ahead + 1} in the queue, {waited_en} so far (up to {limit_en})"
    )


ENGINE_UNAVAILABLE = (
    "🔌 모델 서버에 연결할 수 없습니다. 잠시 후 다시 물어봐 주세요 / "
    "the model server cannot be reached: ask again later"
)


def queue_position(ahead: int) -> str:
    """Where a waiting job stands, for a surface that shows every change (the terminal)."""
    return f"⏳ 대기 중: {ahead + 1}번째 / waiting: number {ahead + 1} in the queue"


def too_long(length: int, limit: int) -> str:
    """A question over the size limit."""
    return f"📏 질문이 너무 깁니다 ({length:,}자, 최대 {limit:,}자) / the question is too long ({length:,} > {limit:,})"


def rate_limited(seconds: float) -> str:
    """A person over their per-minute allowance."""
    wait = max(1, round(seconds))
    return f"🐢 요청이 너무 잦습니다. {wait}초 후 다시 시도해 주세요 / too many requests, try again in {wait}s"


def failed(code: str | None, detail: str | None) -> str:
    """The job ended with an error event (``code`` is an :class:`~komt_bot.jobs.ErrorCode`; any other, or none,
    gets the generic line with ``detail``)."""
    if code == ErrorCode.DEAD_LETTER:
        return "💥 여러 번 시도했지만 답변을 만들지 못했습니다 / the answer failed after several attempts"
    if code == ErrorCode.PROMPT_TOO_LONG:
        return "📏 대화가 너무 길어 모델에 넣을 수 없습니다 / the conversation is too long for the model"
    if code == ErrorCode.EMPTY_PROMPT:
        return EMPTY
    if code == ErrorCode.ENGINE_UNAVAILABLE:
        return ENGINE_UNAVAILABLE
    reason = f" ({detail[:200]})" if detail else ""
    return f"💥 답변 중 오류가 났습니다 / the answer failed{reason}"


def for_error(error: KomtError) -> str:
    """What to tell the person for an error raised before a job exists."""
    if isinstance(error, BacklogFullError):
        return BUSY
    if isinstance(error, EmptyPromptError):
        return EMPTY
    if isinstance(error, PromptTooLongError):
        return too_long(error.length, error.limit)
    if isinstance(error, QueueError):
        return QUEUE_DOWN
    return failed(None, str(error))


def is_status(text: str) -> bool:
    """Whether a message text is one of komt-bot's status lines (queue position, errors, ...), not an answer.

    Adapters use it to rebuild a conversation from a thread's messages without the bot's own notices.
    """
    text = text.strip()
    return text in (BLANKED, EMPTY_ANSWER, "") or text.split(" ", 1)[0] in _status_marks()


def strip_mark(text: str) -> str:
    """The text without the reply editor's "still writing" mark."""
    return text.removesuffix(WRITING_MARK)


def answer_text(text: str) -> str:
    """The answer in one of komt-bot's own messages: "" for a status line or placeholder, else the text without
    the writing mark and without a status line the reply editor put after the answer (stopped, truncated, ...).

    ``text`` is the message as a person reads it (already decoded from the platform's markup). Whitespace is
    kept, so the pieces of a long answer join back exactly. Adapters use it to rebuild a conversation.
    """
    text = strip_mark(text)
    if is_status(text):
        return ""
    head, separator, tail = text.rpartition("\n\n")
    return head if separator and tail.strip() and is_status(tail) else text


@functools.cache
def _status_marks() -> frozenset[str]:
    """The leading emoji of every status line komt-bot writes instead of, or after, an answer."""
    samples = [
        queued(None),
        queued(2),
        RESTARTED,
        STOPPED,
        STOP_REFUSED,
        EMPTY,
        BUSY,
        TIMEOUT,
        QUEUE_DOWN,
        RECONNECTING,
        NOT_ALLOWED,
        DMS_OFF,
        TRUNCATED,
        WRITING,
        CONTINUED,
        too_long(2, 1),
        rate_limited(1),
        failed(None, None),
    ]
    return frozenset(text.split(" ", 1)[0] for text in samples)
