"""docker/ and config/ name only settings, commands and files that exist, and cover every setting.

The settings model is walked field by field, so a new setting without a line in the examples fails here. The two
Slack app manifests ask for every scope and event the adapter uses and differ only in how Slack reaches it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer.core
import typer.main
import yaml
from pydantic import BaseModel

from adapters.slack.http import EVENTS_PATH
from komt_bot.cli import app
from komt_bot.settings import Settings, SlackSettings, load_settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker" / "compose.yaml"
PUBLIC_REDIS = ROOT / "docker" / "compose.public-redis.yaml"
EXAMPLE_TOML = ROOT / "config" / "komt-bot.example.toml"
EXAMPLE_ENV = ROOT / "config" / ".env.example"
SLACK_MANIFESTS = {
    "socket": ROOT / "config" / "slack-app-manifest.yaml",
    "http": ROOT / "config" / "slack-app-manifest-http.yaml",
}
SLACK_DOC = ROOT / "docs" / "SLACK.md"
COMMENTED_TOML_KEY = re.compile(r"^# ([a-z_]+) = (.+)$")
ENV_LINE = re.compile(r"^(?:# )?(KOMT_[A-Z0-9_]+)=(.*)$")
NOT_SETTINGS = {"KOMT_CONFIG"}  # read by load_settings itself, not a field


def setting_paths(model: type[BaseModel] = Settings, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every leaf setting as a path of field names, e.g. ``("queue", "max_backlog")``."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from setting_paths(annotation, (*prefix, name))
        else:
            yield (*prefix, name)


def env_name(path: tuple[str, ...]) -> str:
    return "KOMT_" + "__".join(part.upper() for part in path)


def parse_cli(args: list[str]) -> Any:
    """Resolve ``komt-bot ARGS`` to its command and parse its options, as running it would (without running it)."""
    command: Any = typer.main.get_command(app)
    ctx = typer.Context(command, info_name="komt-bot")
    rest = list(args)
    while isinstance(command, typer.core.TyperGroup):
        assert rest, f"komt-bot {' '.join(args)}: a subcommand is missing"
        name, *rest = rest
        sub = command.get_command(ctx, name)
        assert sub is not None, f"komt-bot has no command {name!r} (in {args})"
        ctx = typer.Context(sub, info_name=name, parent=ctx)
        command = sub
    command.make_context(command.name or "", rest, parent=ctx.parent)
    return command


def komt_args(command: list[str]) -> list[str]:
    """The komt-bot arguments of a ``["CMD", "komt-bot", ...]`` health check or an exec-form command line."""
    words = command[1:] if command[0] in ("CMD", "CMD-SHELL") else command
    assert words[0] == "komt-bot", command
    return words[1:]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("KOMT_"):
            monkeypatch.delenv(name)
    return monkeypatch


# -- docker/compose.yaml ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def test_compose_runs_redis_with_aof_a_gpu_worker_and_both_adapters(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"redis", "worker", "worker-openai", "slack", "discord"}
    redis_command = services["redis"]["command"]
    assert redis_command[redis_command.index("--appendonly") + 1] == "yes"
    assert any(volume.endswith(":/data") for volume in services["redis"]["volumes"])
    [gpu] = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    assert "models:/models" in services["worker"]["volumes"]
    assert {"redis-data", "models"} <= set(compose["volumes"])
    assert [services[name]["command"] for name in ("worker", "slack", "discord")] == [
        ["worker"],
        ["slack"],
        ["discord"],
    ]


def test_compose_names_only_existing_files(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if "build" in service:
            context = (COMPOSE.parent / service["build"]["context"]).resolve()
            assert (context / service["build"]["dockerfile"]).is_file(), name
        for env_file in service.get("env_file", []):
            path = COMPOSE.parent / (env_file["path"] if isinstance(env_file, dict) else env_file)
            assert path.is_file() or path.with_name(path.name + ".example").is_file(), (name, path)


def test_compose_commands_and_health_checks_are_real_cli_commands(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if name == "redis":
            continue
        parse_cli(service["command"])
        health = komt_args(service["healthcheck"]["test"])
        assert health[0] == "health"
        parse_cli(health)
        assert health[health.index("--component") + 1] == ("worker" if name.startswith("worker") else name)


def test_platforms_and_the_openai_worker_are_opt_in_profiles(compose: dict[str, Any]) -> None:
    services = compose["services"]
    # `docker compose up` starts Redis and the GPU worker only: an adapter without its token would restart forever.
    assert {name: service.get("profiles") for name, service in services.items()} == {
        "redis": None,
        "worker": None,
        "worker-openai": ["openai"],
        "slack": ["slack"],
        "discord": ["discord"],
    }
    remote = services["worker-openai"]
    assert remote["build"]["dockerfile"] == "docker/Dockerfile.worker-remote" and "deploy" not in remote
    assert compose["name"] == "komt-bot"  # the same project whichever directory compose runs from


def test_the_public_redis_file_sets_the_password_everywhere_it_is_needed(compose: dict[str, Any]) -> None:
    public: dict[str, Any] = yaml.safe_load(PUBLIC_REDIS.read_text())
    services = public["services"]
    assert set(services) == set(compose["services"])
    redis = services["redis"]
    assert redis["command"][redis["command"].index("--requirepass") + 1] == "${REDIS_PASSWORD}"
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert redis["environment"]["REDISCLI_AUTH"] == "${REDIS_PASSWORD}"  # the health check's redis-cli logs in
    for name, service in services.items():
        if name != "redis":
            url = service["environment"]["KOMT_REDIS_URL"]  # compose's environment wins over config/.env
            assert url.startswith("redis://:${REDIS_PASSWORD:?") and url.endswith("}@redis:6379/0"), name


def test_compose_environment_names_only_settings(compose: dict[str, Any], clean_env: pytest.MonkeyPatch) -> None:
    known = {env_name(path) for path in setting_paths()}
    for service in compose["services"].values():
        for variable, value in service.get("environment", {}).items():
            assert variable in known, variable
            clean_env.setenv(variable, str(value))
    assert load_settings().metrics.port == 9100


# -- docker/Dockerfile.* --------------------------------------------------------------------------------------------


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def extras_installed(dockerfile: Path) -> set[str]:
    runs = " ".join(args for keyword, args in instructions(dockerfile) if keyword == "RUN")
    return {extra for group in re.findall(r'pip install "\.\[([a-z,]+)\]"', runs) for extra in group.split(",")}


@pytest.mark.parametrize("name", ["Dockerfile.worker", "Dockerfile.bot", "Dockerfile.worker-remote"])
def test_dockerfiles_copy_existing_files_and_run_real_commands(name: str) -> None:
    dockerfile = ROOT / "docker" / name
    steps = instructions(dockerfile)
    for keyword, args in steps:
        if keyword == "COPY":
            *sources, _dest = shlex.split(args)
            assert all((ROOT / source).exists() for source in sources), args
        if keyword == "HEALTHCHECK":
            parse_cli(komt_args(json.loads(args[args.index("CMD") + 3 :].strip())))
    entrypoint = json.loads(dict(steps)["ENTRYPOINT"])
    command = json.loads(dict(steps)["CMD"])
    parse_cli(komt_args([*entrypoint, *command]))
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras_installed(dockerfile) <= set(optional)


def test_the_worker_image_installs_its_dependencies_before_copying_the_source() -> None:
    steps = instructions(ROOT / "docker" / "Dockerfile.worker")
    first_install = next(i for i, (k, v) in enumerate(steps) if k == "RUN" and 'pip install ".[worker]"' in v)
    first_source = next(i for i, (k, v) in enumerate(steps) if k == "COPY" and "komt_bot" in v)
    assert first_install < first_source
    assert steps[-1] != ("RUN", 'pip install ".[worker]"')
    assert any(k == "RUN" and "pip install --no-deps ." in v for k, v in steps[first_source:])


def test_the_worker_image_is_cuda_with_the_worker_extra_and_the_bot_image_has_no_torch() -> None:
    worker = instructions(ROOT / "docker" / "Dockerfile.worker")
    assert any(k == "ARG" and "nvidia/cuda:" in v for k, v in worker)
    assert "worker" in extras_installed(ROOT / "docker" / "Dockerfile.worker")
    assert ("VOLUME", '["/models"]') in worker
    assert "HF_HOME=/models" in dict(worker)["ENV"]
    bot = instructions(ROOT / "docker" / "Dockerfile.bot")
    assert extras_installed(ROOT / "docker" / "Dockerfile.bot") == {"slack", "discord"}
    assert not any("torch" in v or "cuda" in v for _k, v in bot)
    remote = instructions(ROOT / "docker" / "Dockerfile.worker-remote")
    assert extras_installed(ROOT / "docker" / "Dockerfile.worker-remote") == {"remote"}
    assert not any("torch" in v or "cuda" in v for _k, v in remote)
    assert "KOMT_MODEL__ENGINE=openai" in dict(remote)["ENV"]


# -- config/komt-bot.example.toml ---------------------------------------------------------------------------------


def toml_with_every_key() -> dict[str, Any]:
    """The example with its commented settings (``# name = value``) switched on."""
    lines = [COMMENTED_TOML_KEY.sub(r"\1 = \2", line) for line in EXAMPLE_TOML.read_text().splitlines()]
    return tomllib.loads("\n".join(lines))


def flatten(data: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for key, value in data.items():
        if isinstance(value, dict):
            yield from flatten(value, (*prefix, key))
        else:
            yield (*prefix, key)


def test_the_example_toml_lists_every_setting_and_nothing_else() -> None:
    assert set(flatten(toml_with_every_key())) == set(setting_paths())


def test_the_example_toml_loads_via_komt_config_with_the_defaults(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("KOMT_CONFIG", str(EXAMPLE_TOML))
    loaded = load_settings()
    assert loaded.redis_url is not None
    assert loaded.slack.bot_token is None and loaded.discord.token is None and loaded.metrics.port is None
    clean_env.delenv("KOMT_CONFIG")
    defaults = load_settings().model_dump(exclude={"redis_url"})
    assert loaded.model_dump(exclude={"redis_url"}) == defaults, "the example's values must be the defaults"


def test_every_commented_value_in_the_example_toml_is_valid(clean_env: pytest.MonkeyPatch) -> None:
    everything = load_settings(**toml_with_every_key())
    assert everything.slack.bot_token is not None
    assert everything.metrics.port == 9100


# -- config/.env.example ------------------------------------------------------------------------------------------


def env_example() -> dict[str, str]:
    """Every ``KOMT_NAME=value`` line of the example, commented or not."""
    found = {}
    for line in EXAMPLE_ENV.read_text().splitlines():
        match = ENV_LINE.match(line)
        if match:
            found[match[1]] = match[2]
    return found


def test_the_env_example_lists_every_setting_and_nothing_else() -> None:
    assert set(env_example()) - NOT_SETTINGS == {env_name(path) for path in setting_paths()}


def test_every_value_in_the_env_example_is_valid(clean_env: pytest.MonkeyPatch) -> None:
    for name, value in env_example().items():
        if name not in NOT_SETTINGS:
            clean_env.setenv(name, value)
    loaded = load_settings()
    assert loaded.slack.allowed_channels == ["C0123ABC"]
    assert loaded.generation.stop == ("###", "</s>", "<|end|>")
    assert loaded.discord.token is not None


# -- config/slack-app-manifest*.yaml ------------------------------------------------------------------------------


def slack_manifest(mode: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(SLACK_MANIFESTS[mode].read_text())
    return data


@pytest.mark.parametrize("mode", sorted(SLACK_MANIFESTS))
def test_the_slack_manifests_ask_for_every_scope_event_and_feature_the_adapter_uses(mode: str) -> None:
    manifest = slack_manifest(mode)
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"app_mentions:read", "assistant:write", "channels:history", "groups:history"} <= scopes
    assert {"im:history", "chat:write", "commands"} <= scopes
    settings = manifest["settings"]
    assert set(settings["event_subscriptions"]["bot_events"]) == {
        "app_mention",
        "message.channels",
        "message.groups",
        "message.im",
        "assistant_thread_started",
        "assistant_thread_context_changed",
    }
    assert settings["interactivity"]["is_enabled"] is True  # Stop and the feedback buttons
    features = manifest["features"]
    assert features["assistant_view"]["assistant_description"]
    assert features["app_home"]["messages_tab_enabled"] is True  # assistant threads live in the app's DMs
    [command] = features["slash_commands"]
    assert command["command"] == SlackSettings().command
    assert settings["socket_mode_enabled"] is (mode == "socket")


def test_the_http_manifest_is_the_socket_mode_one_with_request_urls_to_the_events_endpoint() -> None:
    socket_mode, http = slack_manifest("socket"), slack_manifest("http")
    urls = [
        http["settings"]["event_subscriptions"].pop("request_url"),
        http["settings"]["interactivity"].pop("request_url"),
        http["features"]["slash_commands"][0].pop("url"),
    ]
    for url in urls:
        parts = urlsplit(url)
        assert (parts.scheme, parts.path) == ("https", EVENTS_PATH), url
    http["settings"]["socket_mode_enabled"] = True
    assert http == socket_mode


def test_the_slack_guide_names_both_manifests_and_a_real_check_command() -> None:
    guide = SLACK_DOC.read_text()
    for path in SLACK_MANIFESTS.values():
        assert f"config/{path.name}" in guide
    checks = re.findall(r"^komt-bot health .*$", guide, flags=re.MULTILINE)
    assert checks, "docs/SLACK.md shows how to check the adapter works"
    for line in checks:
        args = shlex.split(line)[1:]
        parse_cli(args)
        assert args[args.index("--component") + 1] == "slack"


# -- the docs -------------------------------------------------------------------------------------------------------


def project_text_files() -> Iterator[Path]:
    for path in ROOT.rglob("*"):
        parts = path.relative_to(ROOT).parts
        if parts[0].startswith(".") or parts[0] in ("build", "models", "node_modules") or "__pycache__" in parts:
            continue
        if (
            path.is_file()
            and path.suffix in {".md", ".py", ".yaml", ".toml", ".example", ""}
            and path.stat().st_size < 1e6
        ):
            yield path


def test_no_file_points_outside_the_project() -> None:
    # A clone has nothing beside it: the docs carry the facts themselves.
    outside = "../" + "shared"
    offenders = [str(p.relative_to(ROOT)) for p in project_text_files() if outside in p.read_text(errors="ignore")]
    assert offenders == []


def test_documented_compose_commands_name_existing_files_and_services(compose: dict[str, Any]) -> None:
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), COMPOSE, PUBLIC_REDIS]
    text = "\n".join(path.read_text() for path in docs)
    text = re.sub(r"\\\n\s*(#\s*)?", " ", text)  # continuation lines, also inside comments
    commands = re.findall(r"docker compose [^`\n]*", text)
    assert commands
    for command in commands:
        words = shlex.split(command.split("#")[0].strip().rstrip(")"))
        files = [words[i + 1] for i, word in enumerate(words) if word == "-f"]
        assert all((ROOT / name).is_file() for name in files), command
        if "compose.public-redis.yaml" in command:
            assert "--env-file" in words or "REDIS_PASSWORD" in command, command
