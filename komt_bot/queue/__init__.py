"""The Redis Streams job queue: its keys (:mod:`.keys`), its scripts, the operations (:class:`JobQueue`),
presence records (:mod:`.presence`) and what operators read and repair (:mod:`.inspect`)."""

from komt_bot.queue.connection import connect, embedded_redis, open_queue
from komt_bot.queue.jobqueue import JobQueue
from komt_bot.queue.keys import GROUP, QueueKeys

__all__ = ["GROUP", "JobQueue", "QueueKeys", "connect", "embedded_redis", "open_queue"]
