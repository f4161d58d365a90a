"""Who used the machine during one benchmark run: CPU seconds per process and per part, and Redis's commands.

A process's CPU is split into its main thread (the event loop: Redis I/O, decoding, publishing, the clients) and
every other thread (the engine's generation thread and torch's own); the split needs Linux's per-thread times
(elsewhere everything counts as other threads). Redis reports its own CPU and, per command, how many it ran
(``INFO commandstats``; commands a script runs are counted too, one call of the script apart). Both are
server-wide: on a Redis that other clients use at the same time their commands are counted too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import psutil

UNCOUNTED_COMMANDS = {"info"}  # the snapshots' own


@dataclass(frozen=True, slots=True)
class ProcessCpu:
    """CPU seconds a process has used so far: its main thread's and the rest."""

    main: float
    others: float

    def __sub__(self, earlier: ProcessCpu) -> ProcessCpu:
        return ProcessCpu(self.main - earlier.main, self.others - earlier.others)


def process_cpu(pid: int) -> ProcessCpu:
    """``pid``'s CPU seconds so far (threads that already ended count among the others)."""
    process = psutil.Process(pid)
    times = process.cpu_times()
    main = next((t.user_time + t.system_time for t in process.threads() if t.id == pid), 0.0)
    return ProcessCpu(main, times.user + times.system - main)


@dataclass(frozen=True, slots=True)
class RedisCounters:
    """Redis's CPU seconds so far and its command calls by name."""

    cpu: float
    calls: dict[str, int]

    def __sub__(self, earlier: RedisCounters) -> RedisCounters:
        calls = {name: n - earlier.calls.get(name, 0) for name, n in self.calls.items()}
        return RedisCounters(self.cpu - earlier.cpu, {name: n for name, n in sorted(calls.items()) if n > 0})


async def redis_counters(redis: Any) -> RedisCounters:
    """What ``INFO cpu`` and ``INFO commandstats`` say now."""
    cpu = await redis.info("cpu")
    stats = await redis.info("commandstats")
    calls = {
        name.removeprefix("cmdstat_"): int(values["calls"])
        for name, values in stats.items()
        if name.removeprefix("cmdstat_") not in UNCOUNTED_COMMANDS
    }
    return RedisCounters(float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]), calls)


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    """Path (c)'s counters at one moment: the worker process, this process (the clients) and Redis."""

    worker: ProcessCpu
    clients: float
    redis: RedisCounters


async def queue_snapshot(worker_pid: int, redis: Any) -> QueueSnapshot:
    """The counters now."""
    return QueueSnapshot(process_cpu(worker_pid), time.process_time(), await redis_counters(redis))


@dataclass(frozen=True, slots=True)
class QueueUsage:
    """What path (c) used between two snapshots."""

    cpu_seconds: dict[str, float]
    redis_calls: dict[str, int]

    @classmethod
    def between(cls, before: QueueSnapshot, after: QueueSnapshot) -> QueueUsage:
        """The difference of two snapshots."""
        worker = after.worker - before.worker
        redis = after.redis - before.redis
        cpu = {
            "worker event loop": worker.main,
            "worker generation": worker.others,
            "clients": after.clients - before.clients,
            "redis": redis.cpu,
        }
        return cls({name: round(seconds, 2) for name, seconds in cpu.items()}, redis.calls)


def engine_cpu(before: ProcessCpu, after: ProcessCpu) -> dict[str, float]:
    """Path (b)'s CPU between two :func:`process_cpu` readings of this process."""
    used = after - before
    return {"event loop": round(used.main, 2), "generation": round(used.others, 2)}
