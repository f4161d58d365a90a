"""The tiny real model the engine tests load (built once per session by the project's own builder), and helpers.

Other test modules only need the ``tiny_model_dir`` fixture (re-exported by conftest.py).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from komt_bot.engine.base import GenerationUpdate

_BYTE = re.compile(r"<0x([0-9A-F]{2})>")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with ``base/`` (random Llama, Korean byte-fallback tokenizer) and ``lora/`` (random LoRA)."""
    from komt_bot.engine.fakes.tiny import build_tiny_model

    dest = tmp_path_factory.mktemp("tiny-model")
    build_tiny_model(dest)
    return dest


def reference_text(tokenizer: Any, ids: list[int]) -> str:
    """What an answer made of ``ids`` should read as: the raw bytes of its tokens, decoded once at the end.

    Written independently of komt_bot.engine.detokenizer. Bytes that can never be valid UTF-8 (random models sample
    them) are dropped, as the engine does; ``tokenizer.decode`` agrees on valid UTF-8 but prints U+FFFD for them.
    """
    specials = set(tokenizer.all_special_ids)
    raw = bytearray()
    for token_id, token in zip(ids, tokenizer.convert_ids_to_tokens(ids), strict=True):
        if token_id in specials:
            continue
        byte = _BYTE.fullmatch(token)
        raw += bytes([int(byte.group(1), 16)]) if byte else token.replace("▁", " ").encode()
    text = raw.decode("utf-8", errors="ignore")
    return text[1:] if text.startswith(" ") else text


async def collect(stream: AsyncIterator[GenerationUpdate]) -> list[GenerationUpdate]:
    """Every update of a stream."""
    return [update async for update in stream]


def joined(updates: list[GenerationUpdate]) -> str:
    """The whole answer."""
    return "".join(update.text for update in updates)


def stop_across_tokens(updates: list[GenerationUpdate]) -> tuple[str, str]:
    """A stop sequence made of the end of one streamed piece and the start of the next, and the text before it."""
    pieces = [update.text for update in updates if update.text]
    for left, right in itertools.pairwise(pieces):
        stop = left[-1] + right[0]
        if not stop.isspace() and stop.strip() == stop and "\ufffd" not in stop:
            full = joined(updates)
            return stop, full[: full.find(stop)]
    raise AssertionError(f"no two pieces to split a stop across in {pieces!r}")


def greedy_reference(loaded: Any, prompt: str, max_new_tokens: int) -> str:
    """The model card's one-at-a-time ``generate`` (greedy) for ``prompt``, as text."""
    import torch

    encoded = loaded.tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        output = loaded.model.generate(
            **encoded, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0, eos_token_id=2
        )
    return reference_text(loaded.tokenizer, output[0, encoded["input_ids"].shape[1] :].tolist())
