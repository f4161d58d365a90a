"""``komt-bot bench``: sequential generate vs the engine vs the whole queue path (to be written)."""

from __future__ import annotations


def bench_command() -> None:
    """Run the three-way benchmark."""
    raise NotImplementedError
