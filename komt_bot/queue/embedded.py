"""The embedded Redis of ``komt-bot serve``: a private ``redis-server`` that every komt-bot command here finds.

Without ``KOMT_REDIS_URL``, ``serve`` runs ``redis-server`` itself, in a directory of its own
(``queue.embedded_dir``, default ``$XDG_STATE_HOME/komt-bot/redis``, i.e. ``~/.local/state/komt-bot/redis``):

* it listens on 127.0.0.1 with a password of its own; port and password are kept in ``redis.conf`` (mode 0600), so a
  restarted ``serve`` listens where the last one did and a worker in another terminal reconnects by itself;
* its data is an append-only file in that directory, so queued jobs survive a restart of ``serve``;
* ``redis.json`` there (mode 0600) says where it listens while it runs: every other command started without
  ``KOMT_REDIS_URL`` (``queue status``, ``health``, ``chat``, ``worker``) connects there
  (:func:`discover`), for as long as that server runs;
* it runs in a session of its own (Ctrl-C in the terminal reaches ``serve``, which drains its worker into Redis
  first) and is stopped when ``serve`` stops; on Linux it also gets SIGTERM when ``serve`` dies however it ends
  (SIGHUP from a closed terminal, SIGKILL), a parent-death signal: Redis flushes its append-only file and exits.
  One left behind elsewhere (no parent-death signal) is adopted by the next ``serve``.

Without a ``redis-server`` binary ``serve`` falls back to an in-process fakeredis, with a warning that says what that
loses (:func:`serve_redis`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

import redis
from pydantic import SecretStr

from komt_bot.errors import QueueError
from komt_bot.settings import Settings

log = logging.getLogger(__name__)

STATE_FILE = "redis.json"
CONFIG_FILE = "redis.conf"
LOG_FILE = "redis.log"
LOCK_FILE = "lock"
START_TIMEOUT_SECONDS = 60.0  # a big append-only file takes a while to load
STOP_TIMEOUT_SECONDS = 15.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h
FALLBACK_WARNING = (
    "redis-server is not installed: `komt-bot serve` uses an in-process Redis (fakeredis) instead. Queued jobs are "
    "lost when serve stops, and no other command (queue status, health, chat, a second worker) can reach it. "
    "Install redis-server to keep them (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis)."
)


def embedded_dir(settings: Settings) -> Path:
    """Where the embedded redis-server keeps its configuration, data and state file."""
    if settings.queue.embedded_dir is not None:
        return settings.queue.embedded_dir.expanduser()
    state_home = os.environ.get("XDG_STATE_HOME", "")
    base = Path(state_home) if Path(state_home).is_absolute() else Path.home() / ".local" / "state"
    return base / "komt-bot" / "redis"


@dataclass(frozen=True, slots=True)
class ServerRecord:
    """``redis.json``: where the embedded server listens and who runs it."""

    url: str
    pid: int  # the redis-server process
    owner: int  # the komt-bot serve that stops it
    started: float


def read_record(directory: Path) -> ServerRecord | None:
    """The state file in ``directory``, or None when there is none (or it is unreadable)."""
    try:
        data = json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
        return ServerRecord(str(data["url"]), int(data["pid"]), int(data["owner"]), float(data["started"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def discover(settings: Settings) -> str | None:
    """The URL of this machine's embedded Redis while its redis-server runs, else None."""
    record = read_record(embedded_dir(settings))
    return record.url if record is not None and pid_alive(record.pid) else None


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs (one that exited but was not reaped yet does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):  # Linux: a zombie still answers kill(0)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def answers(url: str) -> bool:
    """Whether the Redis at ``url`` answers a PING now."""
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by this user only, atomically."""
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(text)
    os.replace(temporary, path)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child sent SIGTERM when ``parent`` dies (Linux ``PR_SET_PDEATHSIG``), or None
    where there is no such thing."""
    if not sys.platform.startswith("linux"):
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    libc = ctypes.CDLL(libc_name, use_errno=True)

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold the directory's lock: two commands never start or adopt the server at once."""
    with open(directory / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class EmbeddedRedis:
    """The embedded redis-server in ``directory``, as one ``komt-bot serve`` runs it: started or adopted, then
    stopped by :meth:`stop`."""

    def __init__(self, directory: Path, binary: str) -> None:
        self.directory = directory
        self.binary = binary
        self.url = ""
        self.pid: int | None = None
        self.adopted = False  # a server an earlier serve left running, not started here
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        """Start the server (or adopt one a killed ``serve`` left running), write the state file, return its URL.

        Raises :class:`QueueError` when another ``serve`` runs it, or when it does not start.
        """
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with _locked(self.directory):
            record = read_record(self.directory)
            if record is not None and pid_alive(record.pid) and answers(record.url):
                if record.owner != os.getpid() and pid_alive(record.owner):
                    raise QueueError(
                        f"another komt-bot serve (pid {record.owner}) already runs the embedded Redis in "
                        f"{self.directory}: talk to it with `komt-bot chat`, add a worker with `komt-bot worker`"
                    )
                log.warning("adopting the embedded redis-server (pid %d) an earlier komt-bot serve left", record.pid)
                self.url, self.pid, self.adopted = record.url, record.pid, True
            else:
                self._spawn()
            assert self.pid is not None
            record = ServerRecord(self.url, self.pid, os.getpid(), time.time())
            _write_private(self.directory / STATE_FILE, json.dumps(asdict(record)))
        return self.url

    def describe(self) -> str:
        """Which server this is and where, for the first lines of ``serve`` (no password)."""
        how = "adopted from an earlier komt-bot serve" if self.adopted else "started"
        return f"embedded Redis: redis-server (pid {self.pid}, {how}) on {self.where}, data in {self.directory}"

    @property
    def where(self) -> str:
        """host:port, without the password."""
        return self.url.rsplit("@", 1)[-1].removesuffix("/0")

    def _config(self) -> tuple[int, str]:
        """The port and password of the last run (kept in redis.conf), or new ones."""
        port, password = 0, ""
        with contextlib.suppress(OSError):
            for line in (self.directory / CONFIG_FILE).read_text(encoding="utf-8").splitlines():
                key, _, value = line.partition(" ")
                if key == "port" and value.isdigit():
                    port = int(value)
                elif key == "requirepass":
                    password = value.strip('"')
        if not password:
            password = secrets.token_urlsafe(24)
        if not port or not _port_free(port):
            port = _free_port()
        return port, password

    def _write_config(self, port: int, password: str) -> Path:
        directory = str(self.directory).replace("\\", "\\\\").replace('"', '\\"')
        lines = [
            f"port {port}",
            "bind 127.0.0.1",
            "protected-mode yes",
            f'requirepass "{password}"',
            f'dir "{directory}"',
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            "daemonize no",
            'logfile ""',
        ]
        path = self.directory / CONFIG_FILE
        _write_private(path, "\n".join(lines) + "\n")
        return path

    def _spawn(self) -> None:
        for _attempt in range(3):  # the port can be taken between choosing it and redis binding it
            port, password = self._config()
            config = self._write_config(port, password)
            self.url = f"redis://:{password}@127.0.0.1:{port}/0"
            with open(self.directory / LOG_FILE, "ab") as log_file:
                self._process = subprocess.Popen(
                    [self.binary, str(config)],
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    cwd=self.directory,
                    start_new_session=True,  # Ctrl-C in the terminal stops serve first, then serve stops Redis
                    preexec_fn=_die_with_parent(os.getpid()),  # ends with serve, whatever ends serve
                )
            self.pid = self._process.pid
            if self._wait_until_ready():
                return
            if "Address already in use" not in self._log_tail():
                break
        raise QueueError(
            f"the embedded redis-server did not start: {self._log_tail() or 'no output'} "
            f"(log: {self.directory / LOG_FILE})"
        )

    def _wait_until_ready(self) -> bool:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            if answers(self.url):
                return True
            time.sleep(0.05)
        self._process.kill()
        self._process.wait()
        return False

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            lines = (self.directory / LOG_FILE).read_text(encoding="utf-8", errors="replace").strip().splitlines()
            return lines[-1].strip() if lines else ""
        return ""

    def stop(self) -> None:
        """Stop the server (its append-only file is flushed) and remove the state file."""
        if self.pid is None:
            return
        with _locked(self.directory):
            record = read_record(self.directory)
            if record is not None and record.pid == self.pid:
                (self.directory / STATE_FILE).unlink(missing_ok=True)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        if not self._wait_exit(STOP_TIMEOUT_SECONDS):
            log.warning("the embedded redis-server (pid %d) did not stop: killing it", self.pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self._wait_exit(5.0)
        self.pid = None

    def _wait_exit(self, timeout: float) -> bool:
        if self._process is not None:
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout  # adopted: not our child, so poll
        while pid_alive(self.pid or 0):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True


@contextlib.contextmanager
def serve_redis(settings: Settings, announce: Callable[[str], None] = log.info) -> Iterator[Settings]:
    """The settings ``serve`` runs with: as they are with ``KOMT_REDIS_URL``; else pointing at the embedded
    redis-server, started for the duration of the block; else (no binary) as they are, for the in-process fallback
    of ``open_queue(embedded_ok=True)``, with a warning saying what that loses.

    ``announce`` gets one line saying which Redis that is (its address, never its password)."""
    if settings.redis_url is not None:
        parts = urlsplit(settings.redis_url.get_secret_value())
        address = parts.path if parts.scheme == "unix" else f"{parts.hostname}:{parts.port or 6379}"
        announce(f"Redis: {address} (KOMT_REDIS_URL)")
        yield settings
        return
    binary = shutil.which("redis-server")
    if binary is None:
        log.warning(FALLBACK_WARNING)
        yield settings
        return
    server = EmbeddedRedis(embedded_dir(settings), binary)
    url = server.start()
    announce(server.describe())
    try:
        yield settings.model_copy(update={"redis_url": SecretStr(url)})
    finally:
        server.stop()
