"""The Slack side of a soak run (``--via slack``): real ``komt-bot slack`` processes in HTTP mode, and Slack's
deliveries of events to them through a load balancer.

* :class:`AdapterPool` runs ``soak-a0``, ``soak-a1``, ... each on a free port of its own (a replacement gets a new
  one), pointed at the fake Slack (``KOMT_SLACK__API_URL``) and the run's Redis; one serves once its presence
  record (which carries its port) is published.
* :class:`Balancer` plays Slack behind a load balancer: each signed ``app_mention`` goes to the next live adapter
  in turn; one that refuses the connection, fails or does not answer within Slack's 3 s gets the delivery again on
  the next adapter, with ``X-Slack-Retry-Num`` as Slack would send it, until the delivery deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from komt_bot.dev.fakes.slack_requests import signed_headers
from komt_bot.dev.processes import Fleet, ManagedProcess, ProcessPool, free_port
from komt_bot.queue import JobQueue

EVENTS_PATH = "/slack/events"  # adapters/slack/http.py: where the Events API endpoint listens
SLACK_ACK_SECONDS = 3.0  # Slack retries an event its app did not acknowledge within 3 s
NO_ADAPTER_WAIT_SECONDS = 0.2


def adapter_command() -> list[str]:
    """The command line of one real Slack adapter."""
    return [sys.executable, "-m", "komt_bot", "slack"]


class AdapterPool(ProcessPool):
    """The run's ``komt-bot slack`` processes, each listening on 127.0.0.1 on a port of its own."""

    kind = "adapter"
    prefix = "soak-a"

    def __init__(self, fleet: Fleet, env: Mapping[str, str]) -> None:
        super().__init__(fleet, env)
        self.ports: dict[str, int] = {}
        self.stopped: set[str] = set()  # SIGTERMed by a fault (a deploy); their exits are no crash

    def command(self, name: str) -> list[str]:
        """``komt-bot slack``."""
        return adapter_command()

    def environment(self, name: str) -> dict[str, str]:
        """The shared environment and a free port for this adapter's events endpoint."""
        self.ports[name] = free_port()
        return self.env | {"KOMT_SLACK__PORT": str(self.ports[name])}

    async def serving(self, queue: JobQueue) -> set[str]:
        """The live adapters whose presence record (``component: slack``, with their port) is published."""
        ports = {
            (record.model_extra or {}).get("port")
            for record in await queue.presence.components()
            if record.component == "slack"
        }
        return {a.name for a in self.live() if self.ports.get(a.name) in ports}

    async def in_flight(self, queue: JobQueue) -> dict[str, int]:
        """The open replies each live adapter's presence record counts (refreshed every few seconds)."""
        by_port = {
            (record.model_extra or {}).get("port"): int((record.model_extra or {}).get("in_flight") or 0)
            for record in await queue.presence.components()
            if record.component == "slack"
        }
        return {a.name: by_port[self.ports[a.name]] for a in self.live() if self.ports.get(a.name) in by_port}

    def routable(self) -> list[ManagedProcess]:
        """The live adapters a load balancer sends to: not those being stopped (a deploy takes them out first)."""
        return [a for a in self.live() if a.name not in self.stopped]

    def url(self, adapter: ManagedProcess) -> str:
        """Where ``adapter`` takes Slack's requests."""
        return f"http://127.0.0.1:{self.ports[adapter.name]}{EVENTS_PATH}"

    async def restart(self, adapter: ManagedProcess, timeout: float) -> float | None:
        """SIGTERM (a deploy) and wait for the exit; returns the seconds it took, None if it had to be killed."""
        self.killed.add(adapter.name)
        self.stopped.add(adapter.name)
        began = time.monotonic()
        adapter.send(signal.SIGTERM)
        if await adapter.wait_exit(timeout):
            return time.monotonic() - began
        adapter.kill()
        return None


@dataclass
class Delivery:
    """How one event reached an adapter."""

    adapter: str | None = None  # the one that answered 200
    attempts: int = 0  # requests sent
    first_sent: float | None = None  # time.time() of the first request
    errors: list[str] = field(default_factory=list)  # why earlier requests failed


class Balancer:
    """Slack, and a load balancer in front of the adapters: round robin over the live ones."""

    def __init__(self, pool: AdapterPool, session: aiohttp.ClientSession, signing_secret: str) -> None:
        self.pool = pool
        self.session = session
        self.signing_secret = signing_secret
        self._turn = itertools.count()
        self.taken: dict[str, int] = {}  # events each adapter acknowledged

    def _next(self) -> ManagedProcess | None:
        live = self.pool.routable()
        return live[next(self._turn) % len(live)] if live else None

    async def deliver(self, payload: dict[str, Any], deadline: float) -> Delivery:
        """Deliver one Events API payload, retried on the next adapter until one says 200 or ``deadline``
        (``time.monotonic()``) passes."""
        delivery = Delivery()
        body = json.dumps(payload).encode()
        while time.monotonic() < deadline:
            adapter = self._next()
            if adapter is None:
                await asyncio.sleep(NO_ADAPTER_WAIT_SECONDS)
                continue
            headers = {"Content-Type": "application/json", **signed_headers(body, secret=self.signing_secret)}
            if delivery.attempts:
                headers |= {"X-Slack-Retry-Num": str(delivery.attempts), "X-Slack-Retry-Reason": "http_error"}
            delivery.attempts += 1
            if delivery.first_sent is None:
                delivery.first_sent = time.time()
            error = await self._post(self.pool.url(adapter), body, headers)
            if error is None:
                delivery.adapter = adapter.name
                self.taken[adapter.name] = self.taken.get(adapter.name, 0) + 1
                return delivery
            delivery.errors.append(f"{adapter.name}: {error}")
            if len(self.pool.routable()) <= 1:
                await asyncio.sleep(NO_ADAPTER_WAIT_SECONDS)  # the only one is starting or stopping
        return delivery

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> str | None:
        """One request; None when the adapter acknowledged it, else why not."""
        try:
            async with (
                asyncio.timeout(SLACK_ACK_SECONDS),
                self.session.post(url, data=body, headers=headers) as response,
            ):
                await response.read()
                return None if response.status == 200 else f"HTTP {response.status}"
        except TimeoutError:
            return f"no answer within {SLACK_ACK_SECONDS:g} s"
        except aiohttp.ClientError as e:
            return type(e).__name__
