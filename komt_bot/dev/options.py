"""One soak run's parameters (``komt-bot dev soak``'s options) and the environment they give each process."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from komt_bot.errors import SoakError
from komt_bot.settings import QueueSettings

Via = Literal["ask", "slack"]
QUESTIONS = (
    "한국의 수도는 어디인가요?",
    "김치찌개 끓이는 법을 알려 주세요.",
    "What is the capital of Korea?",
    "파이썬에서 리스트를 정렬하는 방법은?",
    "서울에서 부산까지 기차로 얼마나 걸리나요?",
)
SLACK_BOT_TOKEN = "xoxb-soak"  # what the fake Slack's auth.test accepts: any xoxb- token
SLACK_MESSAGE_BYTES = 3800  # KOMT_SLACK__MAX_MESSAGE_BYTES of the soak's adapters (the setting's default)


@dataclass(frozen=True, slots=True)
class SoakOptions:
    """One soak run's parameters (the command's options)."""

    conversations: int = 100
    concurrency: int | None = None  # default: all at once
    workers: int = 2
    tokens: int = 64
    model: Path | None = None  # a directory with base/ and lora/ (``komt-bot dev tiny-model DIR``)
    kill_every: float | None = None
    freeze: float | None = None
    restart_redis: bool = False
    claim_idle: float = 5.0
    heartbeat: float = 1.0
    max_backlog: int | None = None  # default: room for every conversation
    ask_timeout: float = 600.0
    max_seconds: float = 3600.0  # the whole load; what has not ended by then is missing
    start_timeout: float = 300.0
    message_size: int = 2000  # Discord's limit, in characters (``via="ask"``)
    busy_ok: bool = False
    threads: int | None = None  # torch threads per worker; default: the cores shared out among the workers
    seed: int = 0
    prefix: str = "soak"
    keep: bool = False  # keep the run's directory (logs, Redis data)
    # -- ``via="slack"``: the fake Slack and real ``komt-bot slack`` processes --------------------------------------
    via: Via = "ask"
    adapters: int = 1
    channels: int = 8
    slack_limits: bool = False  # the fake enforces Slack's documented tiers
    kill_adapter_every: float | None = None
    restart_adapter_every: float | None = None
    no_adapter_replace: bool = False
    reply_grace: float = 60.0  # after the job ended, the reply's time to show it complete (else: half-written)

    def check(self) -> None:
        """Refuse options that cannot work."""
        if self.freeze is not None and self.freeze <= self.claim_idle:
            raise SoakError(f"--freeze {self.freeze:g} must exceed --claim-idle {self.claim_idle:g} to be taken over")
        if self.kill_every is not None and self.kill_every <= 0:
            raise SoakError("--kill-every must be positive")
        if min(self.conversations, self.workers, self.tokens, self.concurrency or 1) < 1:
            raise SoakError("--conversations, --workers, --tokens and --concurrency must be at least 1")
        adapter_faults = self.kill_adapter_every is not None or self.restart_adapter_every is not None
        if self.via != "slack" and (adapter_faults or self.slack_limits or self.no_adapter_replace):
            raise SoakError(
                "--kill-adapter-every, --restart-adapter-every, --no-adapter-replace and --slack-limits "
                "need --via slack"
            )
        if min(self.adapters, self.channels) < 1:
            raise SoakError("--adapters and --channels must be at least 1")
        if any(s is not None and s <= 0 for s in (self.kill_adapter_every, self.restart_adapter_every)):
            raise SoakError("--kill-adapter-every and --restart-adapter-every must be positive")
        if self.no_adapter_replace and not adapter_faults:
            raise SoakError("--no-adapter-replace needs --kill-adapter-every or --restart-adapter-every")

    @property
    def backlog(self) -> int:
        """The backlog cap the asks run under."""
        return self.max_backlog or max(100, self.conversations)

    def queue_settings(self) -> QueueSettings:
        """The queue settings of this run (the same in the harness and in every worker)."""
        return QueueSettings(
            prefix=self.prefix,
            max_backlog=self.backlog,
            claim_idle_seconds=self.claim_idle,
            heartbeat_seconds=self.heartbeat,
        )

    def queue_variables(self, redis_url: str) -> dict[str, str]:
        """The ``KOMT_*`` variables every process of the run shares: its Redis, prefix and queue timings."""
        return {
            "KOMT_REDIS_URL": redis_url,
            "KOMT_QUEUE__PREFIX": self.prefix,
            "KOMT_QUEUE__MAX_BACKLOG": str(self.backlog),
            "KOMT_QUEUE__CLAIM_IDLE_SECONDS": str(self.claim_idle),
            "KOMT_QUEUE__HEARTBEAT_SECONDS": str(self.heartbeat),
            "KOMT_LIMITS__RATE_LIMIT_PER_MINUTE": "0",
            "KOMT_LOG__LEVEL": "WARNING",
        }

    def worker_variables(self, redis_url: str, model: Path) -> dict[str, str]:
        """The ``KOMT_*`` variables of every worker."""
        return self.queue_variables(redis_url) | {
            "KOMT_MODEL__BASE": str(model / "base"),
            "KOMT_MODEL__ADAPTER": str(model / "lora"),
            "KOMT_GENERATION__MAX_NEW_TOKENS": str(self.tokens),
            "KOMT_WORKER__DRAIN_SECONDS": "5",
        }

    def adapter_variables(self, redis_url: str, api_url: str, signing_secret: str) -> dict[str, str]:
        """The ``KOMT_*`` variables of every ``komt-bot slack`` (HTTP mode; each adds its own port)."""
        return self.queue_variables(redis_url) | {
            "KOMT_QUEUE__JOB_TIMEOUT_SECONDS": str(self.ask_timeout),
            "KOMT_SLACK__BOT_TOKEN": SLACK_BOT_TOKEN,
            "KOMT_SLACK__SIGNING_SECRET": signing_secret,
            "KOMT_SLACK__HOST": "127.0.0.1",
            "KOMT_SLACK__API_URL": api_url,
            "KOMT_SLACK__MAX_MESSAGE_BYTES": str(SLACK_MESSAGE_BYTES),
        }

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}
