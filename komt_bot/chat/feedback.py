"""The feedback buttons (👍/👎) under a finished answer, the same on every platform.

A button carries its rating and the answer's job id (``up:{job id}``), so a click finds the job in Redis whichever
replica posted the button, and however long ago. :func:`record_click` records it on the job (one vote a person:
a second click changes it) and returns the quiet acknowledgement the platform shows only to the person who
clicked; an answer whose job record has expired gets a polite "too old" instead of an error.
"""

from __future__ import annotations

import logging
import re

from komt_bot import messages
from komt_bot.errors import JobNotFoundError, QueueError
from komt_bot.jobs import Rating, as_rating
from komt_bot.metrics import Metrics
from komt_bot.queue import JobQueue

log = logging.getLogger(__name__)


_VALUE = re.compile(r"(up|down):([0-9a-f]{1,64})")
VALUE_PATTERN = _VALUE.pattern  # for platforms that match a button's id with a pattern of their own


def button_value(rating: Rating, job_id: str) -> str:
    """What the ``rating`` button of the answer of ``job_id`` carries."""
    return f"{rating}:{job_id}"


def parse_button_value(value: str) -> tuple[Rating, str] | None:
    """``(rating, job id)`` from a button's value, or None for anything that is not one of ours."""
    match = _VALUE.fullmatch(value)
    rating = as_rating(match[1]) if match else None
    return (rating, match[2]) if match and rating else None


async def record_click(
    queue: JobQueue, job_id: str, person: str, rating: Rating, *, platform: str, metrics: Metrics | None = None
) -> str:
    """Record ``person``'s click on the ``rating`` button of the answer of ``job_id``; what to tell them privately.

    Never raises for an expired job or an unreachable queue: each has its own acknowledgement.
    """
    try:
        counts = await queue.record_feedback(job_id, person, rating)
    except JobNotFoundError:
        log.info("feedback %s on %s job %s: the job has expired", rating, platform, job_id)
        return messages.FEEDBACK_EXPIRED
    except QueueError as e:
        log.warning("could not record feedback on job %s: %s", job_id, e)
        return messages.QUEUE_DOWN
    if counts.previous != rating and metrics is not None:
        metrics.feedback.labels(platform=platform, rating=rating).inc()
    log.info("feedback %s on %s job %s (now up %d, down %d)", rating, platform, job_id, counts.up, counts.down)
    changed = counts.previous is not None and counts.previous != rating
    return messages.FEEDBACK_CHANGED if changed else messages.FEEDBACK_THANKS
