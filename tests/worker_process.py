"""A worker process with a scripted engine, for tests that kill, freeze or signal a real worker process.

Usage: python -m tests.worker_process PREFIX NAME [--delay S] [--drain S] [--chars N] [--capacity N]
       [--redis-url URL] [--claim-idle S]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

from komt_bot.queue import JobQueue, connect
from komt_bot.settings import load_settings
from komt_bot.worker import Worker
from tests.fake_engine import ScriptedEngine


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("prefix")
    parser.add_argument("name")
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--drain", type=float, default=30.0)
    parser.add_argument("--chars", type=int, default=200)
    parser.add_argument("--capacity", type=int, default=4)
    parser.add_argument("--claim-idle", type=float, default=1.0)
    parser.add_argument("--redis-url", default=os.environ.get("KOMT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    settings = load_settings(
        redis_url=args.redis_url,
        queue={"prefix": args.prefix, "claim_idle_seconds": args.claim_idle, "heartbeat_seconds": 0.2},
        worker={"drain_seconds": args.drain},
    )
    client = connect(settings)
    engine = ScriptedEngine("가" * args.chars, piece_chars=2, delay=args.delay, capacity=args.capacity)
    worker = Worker(JobQueue(client, settings.queue), engine, settings, name=args.name)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, worker.stop)
    print("worker ready", flush=True)
    try:
        await worker.run()
    finally:
        await client.aclose()


if __name__ == "__main__":
    asyncio.run(main())
