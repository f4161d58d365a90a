"""The shared platform budget: priorities, the reserve intermediate edits leave, and slowing down on a 429."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import generate_latest

from komt_bot.chat.budget import EditSkipped, PlatformBudget, Priority, RateBucket, Throttled, Tier
from komt_bot.metrics import Metrics


class Clock:
    """A clock a test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_edits_leave_the_reserve_to_first_words_and_finals() -> None:
    clock = Clock()
    bucket = RateBucket("chat.update", Tier(1.0, 20), clock=clock)
    edits = 0
    while bucket.try_take(Priority.EDIT):
        edits += 1
    assert edits == 5  # three quarters of the burst are kept for what people wait for
    finals = 0
    while bucket.try_take(Priority.FINAL):
        finals += 1
    assert finals == 15
    clock.now += 2.0  # two tokens back: an edit still may not dip into the reserve, a first words may
    assert not bucket.try_take(Priority.EDIT)
    assert bucket.try_take(Priority.FIRST)


def test_a_429_pauses_the_bucket_and_halves_its_rate_then_it_recovers() -> None:
    clock = Clock()
    bucket = RateBucket("chat.update", Tier(2.0, 4), clock=clock)
    bucket.throttled(3.0)
    assert bucket.rate == 1.0
    clock.now += 2.9
    assert not bucket.try_take(Priority.FIRST)  # still paused
    clock.now += 1.1  # one second past the pause at half rate: one token
    assert bucket.try_take(Priority.FIRST)
    for _ in range(10 * 10):
        bucket.succeeded()
    assert bucket.rate == 2.0


async def test_waiters_are_served_first_words_then_finals() -> None:
    bucket = RateBucket("chat.update", Tier(50.0, 1))
    assert bucket.try_take(Priority.FIRST)  # empty now: everyone below waits for a token
    served: list[str] = []

    async def call(name: str, priority: Priority) -> None:
        await bucket.take(priority)
        served.append(name)

    finals = [asyncio.create_task(call(f"final-{i}", Priority.FINAL)) for i in range(3)]
    await asyncio.sleep(0)
    first = asyncio.create_task(call("first", Priority.FIRST))
    await asyncio.gather(*finals, first)
    assert served[0] == "first"
    assert served[1:] == ["final-0", "final-1", "final-2"]


async def test_a_cancelled_waiter_leaves_its_place() -> None:
    bucket = RateBucket("chat.update", Tier(20.0, 1))
    assert bucket.try_take(Priority.FIRST)
    gone = asyncio.create_task(bucket.take(Priority.FIRST))
    await asyncio.sleep(0)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    await bucket.take(Priority.FINAL)  # served although the cancelled one was ahead


class RateLimitedError(Exception):
    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after


def seconds_of(error: Exception) -> float | None:
    return error.retry_after if isinstance(error, RateLimitedError) else None


async def test_call_retries_a_final_after_a_429_and_skips_an_edit() -> None:
    budget = PlatformBudget({"chat.update": Tier(100.0, 10)})
    answers: list[Exception | str] = [RateLimitedError(0.05), "ok"]

    async def send() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert await budget.call("chat.update", "T1", Priority.FINAL, send, retry_after=seconds_of) == "ok"
    bucket = budget.bucket("chat.update", "T1")
    assert bucket is not None and bucket.throttles == 1

    async def limited() -> str:
        raise RateLimitedError(0.05)

    with pytest.raises(EditSkipped):
        await budget.call("chat.update", "T1", Priority.EDIT, limited, retry_after=seconds_of)


async def test_call_gives_up_after_429s_in_a_row() -> None:
    budget = PlatformBudget({"chat.update": Tier(1000.0, 100)})

    async def limited() -> str:
        raise RateLimitedError(0.0)

    with pytest.raises(Throttled):
        await budget.call("chat.update", "T1", Priority.FINAL, limited, retry_after=seconds_of)


def test_edit_interval_stretches_with_open_replies_and_replicas_share_a_limit() -> None:
    budget = PlatformBudget({"chat.update": Tier(1.0, 20)}, share=0.5)
    assert budget.tiers["chat.update"] == Tier(0.5, 10)
    assert budget.edit_interval("chat.update", 1.0) == 1.0
    with budget.reply(), budget.reply(), budget.reply(), budget.reply():
        assert budget.edit_interval("chat.update", 1.0) == 8.0  # 4 answers sharing half a call a second
    assert budget.open_replies == 0
    assert budget.bucket("files.upload") is None  # not limited here


def test_metrics_show_each_limit_s_state_and_the_open_replies() -> None:
    budget = PlatformBudget({"chat.update": Tier(1.0, 20)})
    metrics = Metrics()
    metrics.watch_budget("slack", budget)
    bucket = budget.bucket("chat.update", "T1")
    assert bucket is not None and bucket.try_take(Priority.FIRST)
    bucket.throttled(0.0)
    with budget.reply():
        scraped = generate_latest(metrics.registry).decode()
    (tokens,) = [line for line in scraped.splitlines() if line.startswith('komt_reply_budget_tokens{limit="chat.up')]
    assert float(tokens.split()[-1]) < 1  # emptied by the 429
    assert 'komt_reply_budget_rate{limit="chat.update@T1",platform="slack"} 0.5' in scraped
    assert 'komt_replies_open{platform="slack"} 1.0' in scraped
