"""The Stop button, the same on every platform: find the job a question made, check who pressed, cancel it.

Adapters key every job with an idempotency key derived from the question (``slack:{team}:{channel}:{ts}``,
``discord:{message id}``) and put what identifies the question in the button, so a press finds its job in Redis
whichever replica posted the button. :func:`stop_job` does the rest and says how it went; the adapter turns
that into its platform's reply (a private refusal, a silent acknowledgement, ...).
"""

from __future__ import annotations

import logging
from typing import Literal

from komt_bot.errors import JobNotFoundError, QueueError
from komt_bot.queue import JobQueue

log = logging.getLogger(__name__)

StopResult = Literal["stopped", "refused", "ended", "queue_down"]
"""``stopped``: the job was queued or running and is now cancelled (its reply will say so); ``refused``: the
presser neither asked the question nor is an admin; ``ended``: there is nothing to stop (no such job any more, or
it already finished); ``queue_down``: Redis could not be reached."""

_STOPPABLE = ("queued", "running")


async def stop_job(queue: JobQueue, idempotency_key: str, *, presser: str, admin: bool) -> StopResult:
    """Cancel the job ``idempotency_key`` made, if ``presser`` asked its question (the job's user) or ``admin``.

    Never raises for a missing job or an unreachable queue: every case is one of the :data:`StopResult` values.
    """
    try:
        job_id = await queue.job_for_key(idempotency_key)
        if job_id is None:
            return "ended"
        record = await queue.job(job_id)
        if record.state not in _STOPPABLE:
            return "ended"
        if presser != record.user and not admin:
            return "refused"
        state = await queue.cancel(job_id)
    except JobNotFoundError:
        return "ended"
    except QueueError as e:
        log.warning("could not stop the job of %s: %s", idempotency_key, e)
        return "queue_down"
    if state not in _STOPPABLE:
        return "ended"  # it finished between the check and the cancel
    log.info("job %s (%s) stopped by %s, was %s", job_id, idempotency_key, presser, state)
    return "stopped"
