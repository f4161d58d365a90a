"""komt-bot's errors, all in one place.

KomtError
├── ConfigError            a setting is missing or invalid (the CLI prints it and exits 2)
├── QueueError             Redis could not be reached or answered something unexpected
│   ├── BacklogFullError   the backlog cap refused a new job (adapters answer "busy")
│   ├── JobNotFoundError   no job has that id
│   └── JobStateError      the job is in a state an operator's cancel or requeue does not apply to
├── UsageProblem           a command was given arguments it cannot work with (printed as ``error: ...``)
├── PromptError            a question cannot be turned into a prompt
│   ├── EmptyPromptError   nothing left after the mention was removed
│   └── PromptTooLongError longer than the configured limit
├── EngineError            the model failed to load or to generate
│   ├── EnginePromptTooLongError  the prompt has more tokens than the engine takes (the job ends, not retried)
│   ├── EngineUnavailableError    the model server stayed away for as long as a question waits for it
│   └── GenerationFailedError     generating failed (a strike: the job is retried)
├── PlatformError          Slack or Discord refused a call for a reply (after the budget's retries)
│   └── ReplyGoneError     the reply's message was deleted (nothing more is written there)
├── EvalError              `komt-bot eval` cannot go on
│   └── JudgeError         the judge server is unreachable or answers something unusable
└── SoakError              `komt-bot dev soak` could not set up or run (not a finding about komt-bot)
"""

from __future__ import annotations


class KomtError(Exception):
    """Base of every error komt-bot raises on purpose."""


class ConfigError(KomtError):
    """A setting is missing or invalid."""


class QueueError(KomtError):
    """Redis could not be reached or answered something unexpected."""


class BacklogFullError(QueueError):
    """The backlog cap refused a new job."""

    def __init__(self, backlog: int, cap: int) -> None:
        super().__init__(f"queue is full: {backlog} jobs waiting (cap {cap})")
        self.backlog = backlog
        self.cap = cap


class JobNotFoundError(QueueError):
    """No job has the given id."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no such job: {job_id}")
        self.job_id = job_id


class JobStateError(QueueError):
    """The job exists but is in a state the operation does not apply to."""

    def __init__(self, job_id: str, state: str, wanted: str) -> None:
        super().__init__(f"job {job_id} is {state}: {wanted}")
        self.job_id = job_id
        self.state = state


class UsageProblem(KomtError):
    """A command was given arguments it cannot work with (printed as ``error: ...``, exit 2)."""


class PromptError(KomtError):
    """A question cannot be turned into a prompt."""


class EmptyPromptError(PromptError):
    """Nothing is left of the question."""


class PromptTooLongError(PromptError):
    """The question is longer than the configured limit."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"question is {length} characters, the limit is {limit}")
        self.length = length
        self.limit = limit


class EngineError(KomtError):
    """The model failed to load or to generate."""


class EnginePromptTooLongError(EngineError):
    """The prompt has more tokens than the engine takes (``model.max_prompt_tokens``): retrying cannot help."""

    def __init__(self, tokens: int, limit: int) -> None:
        super().__init__(f"prompt is {tokens} tokens, the limit is {limit}")
        self.tokens = tokens
        self.limit = limit


class EngineUnavailableError(EngineError):
    """The model server could not be reached for as long as a question waits for it (nothing was generated)."""


class GenerationFailedError(EngineError):
    """Generating an answer failed (the model raised, the server failed mid-answer, the engine closed)."""


class PlatformError(KomtError):
    """Slack or Discord refused a call for a reply (an error answer, a 5xx, a timeout, 429s past the budget's)."""


class ReplyGoneError(PlatformError):
    """The reply's message is not there any more (a person deleted it)."""


class EvalError(KomtError):
    """``komt-bot eval`` cannot go on (no worker, answers file for other questions, stopped)."""


class JudgeError(EvalError):
    """The judge server is unreachable, refuses the request, or answers something that is not a chat completion."""


class SoakError(KomtError):
    """The soak harness could not set up or run a soak (not a finding about komt-bot)."""
