"""The queue's Lua scripts, one file each, with the shared helpers of ``_common.lua`` in front."""

from __future__ import annotations

import functools
from importlib import resources


@functools.cache
def source(name: str) -> str:
    """The text of ``scripts/{name}.lua`` with ``_common.lua`` prepended."""
    folder = resources.files(__package__)
    common = folder.joinpath("_common.lua").read_text(encoding="utf-8")
    return common + "\n" + folder.joinpath(f"{name}.lua").read_text(encoding="utf-8")
