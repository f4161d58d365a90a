"""The processes a soak run owns: one private ``redis-server``, real ``komt-bot worker`` processes (and, in Slack
mode, real ``komt-bot slack`` processes: :mod:`.slack_rig`).

Every process is started in a session of its own (a Ctrl-C in the terminal reaches only the harness, which then
stops them in order), writes its output to a log file in the run's directory, and is registered in a
:class:`Fleet`, whose :meth:`Fleet.stop_all` ends whatever is still running: thawed, asked to stop, then killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

import redis.asyncio as aioredis

import komt_bot
from komt_bot.errors import SoakError
from komt_bot.queue import JobQueue

POLL_SECONDS = 0.05
STOP_SECONDS = 25.0  # a worker drains for 5 s (KOMT_WORKER__DRAIN_SECONDS) and exits within 15 s more
KILL_WAIT_SECONDS = 5.0
REDIS_READY_SECONDS = 30.0
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}  # the tiny model is local: no traffic leaves the host


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def tail(path: Path, lines: int = 30) -> list[str]:
    """The last ``lines`` lines of a log file (empty when it does not exist)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


class ManagedProcess:
    """One child process with its log file; started, signalled and stopped only through these methods."""

    def __init__(self, name: str, argv: list[str], log_path: Path, *, env: Mapping[str, str], cwd: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.env = dict(env)
        self.cwd = cwd
        self.frozen = False
        self.stop_last = False
        self._popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The process id, once started."""
        return self._popen.pid if self._popen else None

    @property
    def alive(self) -> bool:
        """Started and not exited."""
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit status once it exited (negative: the signal that ended it)."""
        return self._popen.poll() if self._popen else None

    def start(self) -> None:
        """Start the process (again, after it exited: the same command, appending to the same log)."""
        if self.alive:
            raise SoakError(f"{self.name} is already running")
        self._close_log()
        self._log = self.log_path.open("ab")
        self.frozen = False
        self._popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
        )

    def send(self, sig: signal.Signals) -> None:
        """Send ``sig`` if the process still runs."""
        if self._popen is not None and self.alive:
            with contextlib.suppress(ProcessLookupError):
                self._popen.send_signal(sig)

    def freeze(self) -> None:
        """SIGSTOP: the process stops dead, sockets open, as a machine under swap or a debugger would."""
        self.send(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        """SIGCONT after :meth:`freeze`."""
        if self.frozen:
            self.send(signal.SIGCONT)
            self.frozen = False

    async def wait_exit(self, timeout: float) -> bool:
        """Wait (without blocking the event loop) up to ``timeout`` seconds for the process to exit."""
        deadline = time.monotonic() + timeout
        while self.alive:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(POLL_SECONDS)
        self._reap()
        return True

    def kill(self) -> None:
        """SIGKILL and reap (a killed process exits at once)."""
        self.send(signal.SIGKILL)
        self._reap(KILL_WAIT_SECONDS)

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        """Thaw, SIGTERM, wait up to ``timeout`` seconds, then SIGKILL. Blocking: for the end of a run."""
        self.thaw()
        self.send(signal.SIGTERM)
        self.reap_or_kill(timeout)

    def reap_or_kill(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for an exit already asked for, then SIGKILL (one SIGTERM only: a second
        one makes a komt-bot process exit at once, without draining)."""
        self._reap(timeout)
        if self.alive:
            self.kill()
        self._close_log()

    def _reap(self, timeout: float = 0.0) -> None:
        if self._popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout)
        if not self.alive:
            self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


class Fleet:
    """Every process one soak run started, in one working directory, so all of them can be stopped whatever
    happened. Processes marked ``stop_last`` (Redis) are stopped after the others."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: list[ManagedProcess] = []

    @classmethod
    def create(cls) -> Fleet:
        """A fleet in a new temporary directory."""
        return cls(Path(tempfile.mkdtemp(prefix="komt-soak-")))

    def add(self, process: ManagedProcess) -> ManagedProcess:
        """Register (and start) a process."""
        self.processes.append(process)
        process.start()
        return process

    def stop_all(self) -> None:
        """Stop everything: SIGTERM to all at once, wait together, SIGKILL what is left; then the ``stop_last`` ones.

        Safe to call again: stopping a process that has exited does nothing.
        """
        for group in ([p for p in self.processes if not p.stop_last], [p for p in self.processes if p.stop_last]):
            for process in group:
                process.thaw()
                process.send(signal.SIGTERM)
            deadline = time.monotonic() + STOP_SECONDS
            for process in group:
                process.reap_or_kill(max(0.1, deadline - time.monotonic()))

    def close(self, *, keep: bool = False) -> None:
        """Stop everything and remove the working directory (unless ``keep``)."""
        self.stop_all()
        if not keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


def redis_binary() -> str:
    """The ``redis-server`` to run, or a :class:`SoakError` saying it is missing."""
    found = shutil.which("redis-server")
    if not found:
        raise SoakError("redis-server is not installed (apt-get install redis-server)")
    return found


class RedisServer:
    """A private ``redis-server`` on 127.0.0.1 with an append-only file, as a production Redis would run."""

    def __init__(self, fleet: Fleet, port: int) -> None:
        self.port = port
        self.dir = fleet.workdir / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        argv = [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "no"]
        argv += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--dir", str(self.dir)]
        process = ManagedProcess("redis", argv, fleet.workdir / "redis.log", env=os.environ, cwd=self.dir)
        process.stop_last = True
        self.process = fleet.add(process)

    @property
    def url(self) -> str:
        """Where clients reach it."""
        return f"redis://127.0.0.1:{self.port}/0"

    async def ready(self, timeout: float = REDIS_READY_SECONDS) -> None:
        """Return once it answers PING (after loading its append-only file)."""
        client = aioredis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1, socket_timeout=2)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    if await client.ping():
                        return
                except Exception:
                    if not self.process.alive:
                        raise SoakError(f"redis-server exited: {' | '.join(tail(self.process.log_path, 5))}") from None
                    if time.monotonic() > deadline:
                        raise SoakError(f"redis-server did not answer within {timeout:.0f} s") from None
                await asyncio.sleep(POLL_SECONDS)
        finally:
            await client.aclose()

    async def restart(self) -> float:
        """SIGTERM (Redis flushes the append-only file and exits), then the same command on the same port and
        directory. Returns the seconds from the signal until it answers again."""
        began = time.monotonic()
        self.process.send(signal.SIGTERM)
        if not await self.process.wait_exit(REDIS_READY_SECONDS):
            raise SoakError("redis-server did not stop within 30 s of SIGTERM")
        self.process.start()
        await self.ready()
        return time.monotonic() - began


def worker_command(name: str) -> list[str]:
    """The command line of one real worker."""
    return [sys.executable, "-m", "komt_bot", "worker", "--name", name]


def worker_environment(variables: Mapping[str, str], threads: int) -> dict[str, str]:
    """This process's environment without its ``KOMT_*`` variables, plus ``variables`` and the thread count.

    Workers (and adapters) run in the run's directory (no ``config/komt-bot.toml`` there), so ``PYTHONPATH`` names
    where this komt_bot comes from.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOMT_")}
    source = str(Path(komt_bot.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH", "")) if p)
    env |= {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    env |= OFFLINE
    return env | dict(variables)


class ProcessPool:
    """Processes of one kind, each under a new name (``soak-w0``, ``soak-w1``, ...: a replacement never reuses one).

    A subclass says how to start one (:meth:`command`, :meth:`environment`) and when one serves (:meth:`serving`).
    """

    kind = "process"
    prefix = "soak-p"

    def __init__(self, fleet: Fleet, env: Mapping[str, str]) -> None:
        self.fleet = fleet
        self.env = dict(env)
        self.members: list[ManagedProcess] = []
        self.killed: set[str] = set()  # SIGKILLed or stopped by a fault, not ended on their own

    def command(self, name: str) -> list[str]:
        """The command line of the member ``name``."""
        raise NotImplementedError

    def environment(self, name: str) -> dict[str, str]:
        """The environment of the member ``name``."""
        return self.env

    async def serving(self, queue: JobQueue) -> set[str]:
        """The names of the live members that serve (their presence record is published)."""
        raise NotImplementedError

    def kill(self, member: ManagedProcess) -> None:
        """SIGKILL one member (a fault, not an exit of its own)."""
        self.killed.add(member.name)
        member.kill()

    def exits_of_their_own(self) -> list[str]:
        """A line for each member that exited while nobody killed or stopped it (a crash, an import error)."""
        return [
            f"{m.name} exited on its own with code {m.returncode}: {(tail(m.log_path, 1) or ['?'])[0]}"
            for m in self.members
            if not m.alive and m.name not in self.killed
        ]

    def start_new(self) -> ManagedProcess:
        """Start one more member under the next name."""
        name = f"{self.prefix}{len(self.members)}"
        log_path = self.fleet.workdir / f"{name}.log"
        member = ManagedProcess(name, self.command(name), log_path, env=self.environment(name), cwd=self.fleet.workdir)
        self.members.append(self.fleet.add(member))
        return member

    def live(self) -> list[ManagedProcess]:
        """The members whose processes run (frozen ones included)."""
        return [m for m in self.members if m.alive]

    async def wait_ready(self, queue: JobQueue, names: set[str], timeout: float) -> None:
        """Return once every member in ``names`` serves; fail if one exits or time runs out."""
        deadline = time.monotonic() + timeout
        while not names <= await self.serving(queue):
            for member in self.members:
                if member.name in names and not member.alive:
                    lines = " | ".join(tail(member.log_path, 8))
                    raise SoakError(f"{self.kind} {member.name} exited with code {member.returncode}: {lines}")
            if time.monotonic() > deadline:
                raise SoakError(f"{self.kind}s {sorted(names)} not serving within {timeout:.0f} s")
            await asyncio.sleep(0.2)


class WorkerPool(ProcessPool):
    """The run's workers: ``soak-w0``, ``soak-w1``, ..."""

    kind = "worker"
    prefix = "soak-w"

    def command(self, name: str) -> list[str]:
        """``komt-bot worker --name NAME``."""
        return worker_command(name)

    async def serving(self, queue: JobQueue) -> set[str]:
        """The names of the live workers that publish a presence record (their model is loaded)."""
        records = {record.name for record in await queue.presence.workers()}
        return {w.name for w in self.live() if w.name in records}
