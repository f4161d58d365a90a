"""The platforms' rate limits, as the fake Slack and Discord enforce them: token buckets per method and scope.

Slack applies its tiers "per API method per workspace per app" and lets short bursts through; Discord counts per
route and channel (about 5 edits per 5 s) and says so in ``X-RateLimit-*`` headers. A :class:`RateLimits` holds
one bucket per (rule, scope) and answers, for each call, whether it goes through or how long to wait; it counts
what it refused, so a test (or the soak) can report the share of 429s.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Rule:
    """``rate`` calls a second on average, ``burst`` at once from a full bucket."""

    rate: float
    burst: int

    @classmethod
    def per_minute(cls, calls: float, burst: int) -> Rule:
        """A rule written the way the platforms document it."""
        return cls(calls / 60, burst)


@dataclass(slots=True)
class Bucket:
    """One token bucket: full at first, refilled at ``rule.rate`` a second up to ``rule.burst``."""

    rule: Rule
    tokens: float
    updated: float

    def take(self, now: float) -> float | None:
        """Take a token: None when there was one, else the seconds until there is."""
        self.tokens = min(float(self.rule.burst), self.tokens + (now - self.updated) * self.rule.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return None
        return (1 - self.tokens) / self.rule.rate

    def remaining(self) -> int:
        """Whole tokens left (for Discord's ``X-RateLimit-Remaining``)."""
        return int(self.tokens)

    def reset_after(self) -> float:
        """Seconds until the next token (Discord's ``X-RateLimit-Reset-After``, read when ``remaining`` is 0)."""
        return max(0.0, (1 - self.tokens) / self.rule.rate)


@dataclass
class RateLimits:
    """Buckets by rule name and scope (a workspace, a channel, a route), and what they let through."""

    rules: dict[str, Rule]
    clock: Callable[[], float] = time.monotonic
    allowed: int = 0
    refused: int = 0
    refused_by_rule: dict[str, int] = field(default_factory=dict)
    _buckets: dict[tuple[str, str], Bucket] = field(default_factory=dict)

    def bucket(self, rule: str, scope: str) -> Bucket | None:
        """The bucket of ``rule`` for ``scope``, None when no rule of that name is enforced."""
        if rule not in self.rules:
            return None
        key = (rule, scope)
        if key not in self._buckets:
            limit = self.rules[rule]
            self._buckets[key] = Bucket(limit, float(limit.burst), self.clock())
        return self._buckets[key]

    def check(self, rule: str, scope: str) -> float | None:
        """Count one call: None when it goes through, else its ``Retry-After`` in seconds."""
        bucket = self.bucket(rule, scope)
        wait = bucket.take(self.clock()) if bucket is not None else None
        if wait is None:
            self.allowed += 1
        else:
            self.refused += 1
            self.refused_by_rule[rule] = self.refused_by_rule.get(rule, 0) + 1
        return wait

    @property
    def refused_share(self) -> float:
        """The share of calls answered 429."""
        total = self.allowed + self.refused
        return self.refused / total if total else 0.0


def slack_tiers() -> dict[str, Rule]:
    """Slack's documented tiers as the fake enforces them (per method and workspace; posting per channel)."""
    return {
        "chat.update": Rule(1.0, 20),  # Tier 3: 50+ a minute, sporadic bursts welcome
        "chat.appendStream": Rule(2.0, 40),  # Tier 4: 100+ a minute
        "chat.startStream": Rule.per_minute(20, 5),  # Tier 2
        "chat.stopStream": Rule.per_minute(20, 5),
        "chat.postMessage": Rule(1.0, 5),  # about one message a second per channel
    }


def discord_buckets() -> dict[str, Rule]:
    """Discord's limits as the fake enforces them: 5 per 5 s per route and channel (or webhook), 50/s in all."""
    return {
        "channel": Rule(1.0, 5),
        "webhook": Rule(1.0, 5),
        "global": Rule(50.0, 50),
    }
