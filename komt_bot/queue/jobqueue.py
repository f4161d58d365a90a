"""The job queue of one deployment: the asking side (:mod:`.asking`), the working side (:mod:`.working`),
people's ratings of the answers (:mod:`.feedback`) and the open replies' delivery records (:mod:`.deliveries`)."""

from __future__ import annotations

from komt_bot.queue.asking import AskingOps
from komt_bot.queue.deliveries import DeliveryOps
from komt_bot.queue.feedback import FeedbackOps
from komt_bot.queue.working import WorkingOps


class JobQueue(AskingOps, WorkingOps, FeedbackOps, DeliveryOps):
    """All queue operations of one deployment (one key prefix) on one Redis client.

    Key names live in :mod:`komt_bot.queue.keys`, the typed records in :mod:`komt_bot.jobs` and the Lua that
    changes a job's state in ``scripts/``. Every method raises :class:`~komt_bot.errors.QueueError` when Redis
    stays unreachable past ``outage_seconds``.
    """

    async def close(self) -> None:
        """Stop the output reader (the Redis client belongs to whoever made it)."""
        await self.reader.close()
