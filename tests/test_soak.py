"""The soak harness, run in-process on a tiny case: a private Redis, one real worker, four conversations."""

from __future__ import annotations

from pathlib import Path

import pytest

from komt_bot.dev.soak import SoakOptions, run_soak


@pytest.mark.slow
async def test_a_small_soak_answers_every_conversation_once(tiny_model_dir: Path) -> None:
    # run_soak waits on positive signals only: Redis answering PING, the worker's presence record, every ask
    # returning. It stops the worker and Redis before it returns.
    summary = await run_soak(SoakOptions(conversations=4, workers=1, tokens=8, model=tiny_model_dir))

    assert summary.conversations == 4
    assert summary.answered == 4, summary.as_dict()
    assert summary.duplicated == 0
    assert summary.missing == 0
    assert summary.error_replies == {}
    assert summary.dead_lettered == 0
    assert summary.ok
    assert summary.first_visible_p50 is not None and summary.final_p95 is not None
    assert summary.machine["workers"] == 1 and summary.machine["tokens"] == 8
