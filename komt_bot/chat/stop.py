"""The Stop button, the same on every platform: check who pressed, cancel the job.

Adapters key every job with an idempotency key derived from the question (``slack:{team}:{channel}:{ts}``,
``discord:{message id}``), and the job id is the one that key stands for (:func:`~komt_bot.jobs.job_id_for_key`),
known before the job is submitted. The Stop button carries that job id, like the 👍/👎 buttons, so a press finds
its job in Redis whichever replica posted the button. :func:`stop_job` does the rest and says how it went; the
adapter turns that into its platform's reply (a private refusal, a silent acknowledgement, ...).
"""

from __future__ import annotations

import logging
import re
from typing import Literal

from komt_bot.errors import JobNotFoundError, QueueError
from komt_bot.queue import JobQueue

log = logging.getLogger(__name__)

StopResult = Literal["stopped", "refused", "ended", "queue_down"]
"""``stopped``: the job was queued or running and is now cancelled (its reply will say so); ``refused``: the
presser neither asked the question nor is an admin; ``ended``: there is nothing to stop (no such job any more, or
it already finished); ``queue_down``: Redis could not be reached."""

_STOPPABLE = ("queued", "running")
_JOB_ID = re.compile(r"[0-9a-f]{16}")


async def stop_job(queue: JobQueue, job_id: str, *, presser: str, admin: bool) -> StopResult:
    """Cancel the job ``job_id``, if ``presser`` asked its question (the job's user) or ``admin``.

    One read of the job's record (its state and requester), then the cancel. Never raises for a missing job or
    an unreachable queue: every case is one of the :data:`StopResult` values.
    """
    try:
        record = await queue.job(job_id)
        if record.state not in _STOPPABLE:
            return "ended"
        if presser != record.user and not admin:
            return "refused"
        state = await queue.cancel(job_id)
    except JobNotFoundError:
        return "ended"
    except QueueError as e:
        log.warning("could not stop job %s: %s", job_id, e)
        return "queue_down"
    if state not in _STOPPABLE:
        return "ended"  # it finished between the check and the cancel
    log.info("job %s stopped by %s, was %s", job_id, presser, state)
    return "stopped"


async def stop_pressed(queue: JobQueue, value: str, *, platform: str, presser: str, admin: bool) -> StopResult:
    """A press on a Stop button whose value is ``value``: :func:`stop_job` on the job it names.

    The value is the job id. A button posted before buttons carried job ids (by an adapter of an earlier release,
    during a rolling upgrade) names its question instead; its job had a random id, so it is looked up under the
    question's idempotency key ``{platform}:{value}`` while that key is remembered. No job id has a colon or is
    all digits past 16 characters, so the two never mix. Drop the lookup once no such reply can still be running.
    """
    if _JOB_ID.fullmatch(value):
        return await stop_job(queue, value, presser=presser, admin=admin)
    try:
        job_id = await queue.job_for_key(f"{platform}:{value}")
    except QueueError as e:
        log.warning("could not look up the job of an older Stop button (%s): %s", value, e)
        return "queue_down"
    return "ended" if job_id is None else await stop_job(queue, job_id, presser=presser, admin=admin)
