"""The worker: takes jobs from the queue, feeds the engine, publishes the answer as it is written."""

from komt_bot.worker.worker import Worker, default_worker_name

__all__ = ["Worker", "default_worker_name"]
