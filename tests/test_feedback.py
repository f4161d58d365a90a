"""Ratings of answers on the queue: one vote a person, kept with the job, shown by ``queue show`` and ``status``."""

from __future__ import annotations

import re

import pytest
import redis.asyncio as aioredis

from komt_bot import messages
from komt_bot.chat.feedback import button_value, parse_button_value, record_click
from komt_bot.errors import JobNotFoundError
from komt_bot.jobs import FeedbackCounts
from komt_bot.metrics import Metrics
from komt_bot.queue import JobQueue
from komt_bot.queue.inspect import QueueAdmin
from komt_bot.settings import Settings
from tests.test_admin import Cli, ask, claim_one, make_cli


@pytest.fixture
async def queue(redis_client: aioredis.Redis, settings: Settings) -> JobQueue:
    q = JobQueue(redis_client, settings.queue)
    await q.ensure_group()
    return q


async def answered(queue: JobQueue) -> str:
    """A job that finished with an answer; its id."""
    job_id = (await queue.submit(ask())).job_id
    await queue.finish(await claim_one(queue, "w"), state="done", finish_reason="stop", usage={})
    return job_id


async def test_one_vote_a_person_and_a_second_click_changes_it(queue: JobQueue) -> None:
    job_id = await answered(queue)
    assert await queue.record_feedback(job_id, "U1", "down") == FeedbackCounts(up=0, down=1, previous=None)
    assert await queue.record_feedback(job_id, "U1", "down") == FeedbackCounts(up=0, down=1, previous="down")
    assert await queue.record_feedback(job_id, "U1", "up") == FeedbackCounts(up=1, down=0, previous="down")
    assert await queue.record_feedback(job_id, "U2", "down") == FeedbackCounts(up=1, down=1, previous=None)
    assert (await queue.feedback(job_id)).to_json() == {"up": 1, "down": 1}

    stats = await queue.feedback_stats(now=queue.clock())
    assert (stats.recent, stats.totals) == ({"up": 1, "down": 1}, {"up": 1, "down": 1})
    assert stats.to_json()["recent_share_up"] == 0.5


async def test_the_votes_expire_with_the_job_and_an_expired_job_refuses_new_ones(
    queue: JobQueue, redis_client: aioredis.Redis
) -> None:
    job_id = await answered(queue)
    await queue.record_feedback(job_id, "U1", "up")
    job_ttl = await redis_client.ttl(queue.keys.job(job_id))
    assert 0 < await redis_client.ttl(queue.keys.feedback(job_id)) <= job_ttl

    await redis_client.delete(queue.keys.job(job_id))  # what expiry does
    with pytest.raises(JobNotFoundError):
        await queue.record_feedback(job_id, "U2", "down")
    with pytest.raises(JobNotFoundError):
        await queue.record_feedback("0123456789abcdef", "U2", "down")
    assert (await queue.feedback(job_id)).to_json() == {"up": 1, "down": 0}


async def test_a_click_is_acknowledged_quietly_counted_once_and_an_expired_one_politely(queue: JobQueue) -> None:
    job_id = await answered(queue)
    metrics = Metrics()

    def clicks(rating: str) -> float | None:
        return metrics.registry.get_sample_value("komt_feedback_total", {"platform": "slack", "rating": rating})

    async def click(person: str, rating: str, job: str = job_id) -> str:
        parsed = parse_button_value(button_value("up" if rating == "up" else "down", job))
        assert parsed is not None
        return await record_click(queue, parsed[1], person, parsed[0], platform="slack", metrics=metrics)

    assert await click("U1", "down") == messages.FEEDBACK_THANKS
    assert await click("U1", "down") == messages.FEEDBACK_THANKS
    assert (clicks("down"), clicks("up")) == (1, None)  # the same rating again adds nothing
    assert await click("U1", "up") == messages.FEEDBACK_CHANGED
    assert clicks("up") == 1
    assert await click("U1", "up", "fedcba9876543210") == messages.FEEDBACK_EXPIRED
    assert parse_button_value("sideways:abc") is None and parse_button_value("up:NOT-HEX") is None


async def test_queue_show_and_status_report_the_votes(queue: JobQueue, settings: Settings) -> None:
    cli: Cli = make_cli(settings)
    job_id = await answered(queue)
    await queue.record_feedback(job_id, "U1", "down")
    await queue.record_feedback(job_id, "U2", "down")
    await queue.record_feedback(job_id, "U3", "up")

    assert (await cli.json("queue", "show", job_id))["feedback"] == {"up": 1, "down": 2}
    assert (await QueueAdmin(queue).detail(job_id)).to_json()["feedback"] == {"up": 1, "down": 2}
    assert "👍 1 · 👎 2 (33% 👍)" in (await cli.ok("queue", "show", job_id)).stdout

    status = await cli.json("queue", "status")
    assert status["feedback"]["recent"] == {"up": 1, "down": 2}
    assert status["feedback"]["totals"] == {"up": 1, "down": 2}
    assert status["feedback"]["recent_share_up"] == pytest.approx(0.333)
    table = (await cli.ok("queue", "status")).stdout
    assert re.search(r"feedback, last 60 min\s+│\s+👍 1 · 👎 2 \(33% 👍\)", table), table

    unrated = (await queue.submit(ask())).job_id
    assert (await cli.json("queue", "show", unrated))["feedback"] == {"up": 0, "down": 0}
