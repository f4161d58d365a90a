"""komt-bot's settings: environment (prefix ``KOMT_``, nested with ``__``) over an optional TOML file.

Nothing here is read at import time: call :func:`load_settings` where a command starts. The TOML file is
``$KOMT_CONFIG`` or, when it exists, ``config/komt-bot.toml``; environment variables win over it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, PrivateAttr, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from komt_bot import messages
from komt_bot.errors import ConfigError
from komt_bot.settings_sources import read_toml, warn_unknown_env

DEFAULT_CONFIG_PATH = Path("config/komt-bot.toml")
DEFAULT_STOP_SEQUENCES = ("###", "</s>", "<|end|>")


class QueueSettings(BaseModel):
    """The Redis Streams job queue."""

    prefix: str = Field("komt", min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    max_backlog: int = Field(100, ge=1, description="jobs waiting before new ones are refused as 'busy'")
    max_attempts: int = Field(3, ge=1, description="deliveries before a job goes to the dead-letter stream")
    max_running_per_person: int = Field(
        0, ge=0, description="one person's jobs running at once while other people's wait; 0: no cap"
    )
    claim_idle_seconds: float = Field(10.0, gt=0, description="a worker silent this long loses its jobs")
    heartbeat_seconds: float = Field(2.0, gt=0)
    job_ttl_seconds: int = Field(86_400, ge=60, description="how long a finished job's record and output stay")
    idempotency_ttl_seconds: int = Field(86_400, ge=60)
    job_timeout_seconds: float = Field(600.0, gt=0, description="an adapter gives up waiting after this long")
    outage_seconds: float = Field(
        60.0, gt=0, description="Redis unreachable this long before readers, workers and adapters give up"
    )
    max_connections: int = Field(64, ge=4, description="Redis connections one process opens at most")
    embedded_dir: Path | None = Field(
        None, description="where serve's embedded redis-server keeps its data; unset: $XDG_STATE_HOME/komt-bot/redis"
    )


class ModelSettings(BaseModel):
    """Which model the worker loads, and how."""

    base: str = "davidkim205/komt-llama2-13b-v1"
    adapter: str | None = "davidkim205/komt-llama2-13b-v1-lora"
    quantization: Literal["auto", "nf4", "none"] = "auto"
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    load_format: Literal["auto", "dummy"] = "auto"
    dummy_shape: str = Field("tiny", description="with load_format=dummy: llama2-7b, llama2-13b, small, tiny")
    merge_adapter: bool = Field(False, description="merge the LoRA into an unquantized base for speed")
    engine: Literal["batching", "sequential", "openai"] = Field(
        "batching", description="batching, sequential, or openai (an OpenAI-compatible server: [openai])"
    )
    max_batch_size: int = Field(16, ge=1, description="requests decoded together")
    kv_cache_blocks: int | None = Field(None, ge=1, description="KV cache pages; unset sizes it from batch")
    max_prompt_tokens: int = Field(1536, ge=16)
    max_batch_tokens: int | None = Field(
        None, ge=16, description="tokens one model step processes (prefill chunk); unset: 256 on CPU, 2048 on CUDA"
    )

    @field_validator("adapter", mode="before")
    @classmethod
    def _empty_adapter_is_none(cls, value: Any) -> Any:
        return None if value in ("", "none", "None") else value


class GenerationSettings(BaseModel):
    """Sampling defaults (the model card's)."""

    temperature: float = Field(0.8, ge=0.0, le=5.0)
    top_p: float = Field(0.8, gt=0.0, le=1.0)
    top_k: int = Field(100, ge=0)
    max_new_tokens: int = Field(512, ge=1, le=8192)
    stop: tuple[str, ...] = DEFAULT_STOP_SEQUENCES


class OpenAISettings(BaseModel):
    """The OpenAI-compatible server (vLLM, SGLang, ``transformers serve``) that ``model.engine = "openai"`` uses."""

    base_url: str = Field("http://127.0.0.1:8000/v1", description="the server's API root, ending in /v1")
    model: str = Field("komt", description="the served model name: the LoRA's name in --lora-modules, or the base")
    api_key: SecretStr | None = Field(None, description="sent as a Bearer token; unset: no Authorization header")
    max_concurrency: int = Field(64, ge=1, description="requests one worker sends at once (the engine's capacity)")
    connect_timeout_seconds: float = Field(5.0, gt=0, description="a server that does not accept this fast is down")
    read_timeout_seconds: float = Field(60.0, gt=0, description="a stream silent this long is given up")
    unavailable_seconds: float = Field(
        120.0, ge=0, description="a question waits this long for a server that refuses connections (a restart)"
    )

    @field_validator("base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")


class WorkerSettings(BaseModel):
    """The worker process."""

    name: str | None = Field(None, description="unique per worker; default host-pid")
    capacity: int | None = Field(None, ge=1, description="jobs held at once; default the engine's batch size")
    coalesce_ms: int = Field(
        200, ge=0, description="answer text is published at most this often (an answer's first text at once)"
    )
    drain_seconds: float = Field(30.0, ge=0, description="on SIGTERM, finish running jobs for this long")


class LimitSettings(BaseModel):
    """What the adapters accept from people."""

    max_question_chars: int = Field(8000, ge=1)
    rate_limit_per_minute: int = Field(6, ge=0, description="requests per user per minute; 0 = unlimited")
    _prompt_tokens: int | None = PrivateAttr(None)

    @property
    def prompt_tokens(self) -> int | None:
        """The model's prompt budget (``model.max_prompt_tokens``) when these limits belong to a :class:`Settings`:
        komt_bot.chat.ask refuses questions that could never fit it (see komt_bot.prompt.question_char_limit)."""
        return self._prompt_tokens


class SlackLimitSettings(BaseModel):
    """Slack's rate limits as komt-bot spends them: per method and workspace (posting per channel), shared by every
    open reply of the process. Defaults are Slack's documented tiers; a 429 slows a method down at once anyway."""

    update_per_minute: float = Field(50, gt=0, description="chat.update (Tier 3: 50+ a minute)")
    update_burst: int = Field(20, ge=1, description="chat.update calls at once from a rested budget")
    append_per_minute: float = Field(100, gt=0, description="chat.appendStream (Tier 4: 100+ a minute)")
    append_burst: int = Field(40, ge=1)
    stream_per_minute: float = Field(20, gt=0, description="chat.startStream and chat.stopStream each (Tier 2)")
    stream_burst: int = Field(5, ge=1)
    post_per_minute_per_channel: float = Field(60, gt=0, description="chat.postMessage in one channel (about 1/s)")
    post_burst: int = Field(5, ge=1)
    share: float = Field(
        1.0, gt=0, le=1, description="this replica's part of each limit (0.5 for one of two replicas on a workspace)"
    )


class SlackSettings(BaseModel):
    """The Slack adapter."""

    bot_token: SecretStr | None = None
    app_token: SecretStr | None = Field(None, description="xapp-...: Socket Mode; unset: the HTTP Events API")
    signing_secret: SecretStr | None = Field(None, description="verifies HTTP requests (not used by Socket Mode)")
    host: str = Field("0.0.0.0", description="HTTP mode: the address the events endpoint listens on")
    port: int = Field(3000, ge=0, le=65535, description="HTTP mode: the port of /slack/events (0: any free port)")
    api_url: str = "https://slack.com/api/"
    command: str = Field("/komt", pattern=r"^/[a-z0-9_-]+$", description="the slash command to answer")
    allowed_channels: list[str] = Field(default_factory=list, description="channel ids; empty: every channel")
    allowed_users: list[str] = Field(default_factory=list, description="user ids; empty: everyone")
    admin_users: list[str] = Field(default_factory=list, description="may stop anyone's answer")
    allow_dms: bool = Field(True, description="answer direct messages")
    continue_threads: bool = Field(True, description="answer every message in a thread the bot has replied in")
    native_streaming: bool = Field(True, description="chat.startStream/appendStream where the workspace allows")
    limits: SlackLimitSettings = Field(default_factory=SlackLimitSettings)
    history_limit: int = Field(100, ge=0, le=1000, description="earlier thread messages read as the conversation")
    max_message_bytes: int = Field(
        3800, ge=200, le=3900, description="split answers before this many UTF-8 bytes (msg_too_long is near 4000)"
    )
    suggested_prompts: list[str] = Field(
        default_factory=lambda: list(messages.SUGGESTED_PROMPTS),
        max_length=4,
        description="questions offered when someone opens the assistant (Slack shows at most 4); empty: none",
    )

    @field_validator("suggested_prompts")
    @classmethod
    def _no_empty_prompts(cls, value: list[str]) -> list[str]:
        prompts = [prompt.strip() for prompt in value]
        if not all(prompts):
            raise ValueError("a suggested prompt is empty")
        return prompts

    @field_validator("api_url")
    @classmethod
    def _trailing_slash(cls, value: str) -> str:
        # slack_sdk joins method names with urljoin: without the slash "/api" is silently dropped.
        return value if value.endswith("/") else value + "/"


class DiscordLimitSettings(BaseModel):
    """Discord's rate limits as komt-bot spends them, shared by every open reply of the process: message posts and
    edits per channel, interaction responses per interaction. A 429 or an empty ``X-RateLimit-Remaining`` slows a
    route down at once anyway."""

    channel_per_second: float = Field(1.0, gt=0, description="posts or edits in one channel (about 5 per 5 s)")
    channel_burst: int = Field(5, ge=1)
    interaction_per_second: float = Field(1.0, gt=0, description="edits of one interaction's messages")
    interaction_burst: int = Field(5, ge=1)


class DiscordSettings(BaseModel):
    """The Discord adapter."""

    token: SecretStr | None = None
    api_url: str = "https://discord.com/api/v10"
    gateway_url: str = "wss://gateway.discord.gg/"
    guild_ids: list[int] = Field(default_factory=list)
    reply_in_thread: bool = False
    allow_dms: bool = True
    allowed_guilds: list[int] = Field(default_factory=list)
    allowed_channels: list[int] = Field(default_factory=list)
    allowed_roles: list[int] = Field(default_factory=list)
    allowed_users: list[int] = Field(default_factory=list)
    admin_roles: list[int] = Field(default_factory=list, description="may stop anyone's answer")
    message_content_intent: bool = Field(
        True, description="ask for the privileged intent (reply chains, threads); falls back without it if not granted"
    )
    continue_threads: bool = Field(True, description="answer every message in a thread the bot started")
    history_limit: int = Field(50, ge=0, le=100, description="earlier messages read to build a conversation")
    limits: DiscordLimitSettings = Field(default_factory=DiscordLimitSettings)


class MetricsSettings(BaseModel):
    """Prometheus endpoint (off unless a port is set)."""

    port: int | None = Field(None, ge=0, le=65535, description="serve /metrics on this port; 0 picks a free one")
    host: str = Field("0.0.0.0", description="address the metrics endpoint listens on")


class LogSettings(BaseModel):
    """Logging."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = Field("text", description="text: readable lines; json: one object per line")


class EvalSettings(BaseModel):
    """`komt-bot eval`: the judge, any OpenAI-compatible chat-completions server."""

    judge_url: str | None = Field(None, description="base URL ending in /v1, e.g. https://api.openai.com/v1")
    judge_model: str | None = Field(None, description="the judge's model name, e.g. gpt-4o")
    judge_api_key: SecretStr | None = Field(None, description="sent as a Bearer token; unset: no Authorization")

    @field_validator("judge_url", "judge_model", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value


class Settings(BaseSettings):
    """Every setting of komt-bot. See config/komt-bot.example.toml for a commented copy."""

    model_config = SettingsConfigDict(
        env_prefix="KOMT_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    redis_url: SecretStr | None = Field(
        None, description="unset: `serve` runs an embedded redis-server that the other commands find"
    )
    queue: QueueSettings = Field(default_factory=QueueSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    openai: OpenAISettings = Field(default_factory=OpenAISettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    slack: SlackSettings = Field(default_factory=SlackSettings)
    discord: DiscordSettings = Field(default_factory=DiscordSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    eval: EvalSettings = Field(default_factory=EvalSettings)

    @field_validator("redis_url", mode="before")
    @classmethod
    def _redis_url_has_a_scheme(cls, value: Any) -> Any:
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if text == "":
            return None
        if isinstance(text, str) and urlsplit(text).scheme not in ("redis", "rediss", "unix"):
            # Never echo the value: it may hold a password (the scheme alone is safe to name).
            accepted = "redis://HOST:PORT/DB (rediss:// for TLS, unix:///PATH for a socket)"
            if "://" in text:
                raise ValueError(f"the scheme {urlsplit(text).scheme}:// is not accepted: use {accepted}")
            raise ValueError(f"needs a scheme: {accepted}")
        return value

    @model_validator(mode="after")
    def _share_the_prompt_budget(self) -> Settings:
        self.limits._prompt_tokens = self.model.max_prompt_tokens
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = _config_path()
        if toml_path is not None:
            sources.append(InitSettingsSource(settings_cls, init_kwargs=read_toml(settings_cls, toml_path)))
        return tuple(sources)

    def masked(self) -> dict[str, Any]:
        """The settings as JSON-ready data with every secret shown as ``**********``."""
        return self.model_dump(mode="json")


def _config_path() -> Path | None:
    explicit = os.environ.get("KOMT_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"KOMT_CONFIG: no such file: {path}")
        return path
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.is_file() else None


def _shown_input(where: str, value: Any) -> str:
    """The offending value for the error line, unless it could be a secret or is too big to read."""
    if any(word in where for word in ("TOKEN", "SECRET", "REDIS_URL", "API_KEY")) or isinstance(value, dict | list):
        return ""
    text = repr(value)
    return f" (got {text[:80]})"


def load_settings(**overrides: Any) -> Settings:
    """Read the settings, turning any invalid value into one readable :class:`ConfigError`.

    A ``KOMT_`` variable or TOML key that names no setting is a warning naming the closest real one.
    """
    warn_unknown_env(Settings, os.environ)
    try:
        return Settings(**overrides)
    except ValidationError as e:
        first = e.errors()[0]
        where = "KOMT_" + "__".join(str(part).upper() for part in first["loc"]) if first["loc"] else "settings"
        message = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{where}: {message}{_shown_input(where, first.get('input'))}") from e
    except ValueError as e:  # malformed TOML or env JSON
        raise ConfigError(f"settings: {e}") from e
