"""Incremental detokenizing that never splits a UTF-8 character.

Llama-2's tokenizer spells rare Hangul as byte tokens (``<0xEB><0xB7><0x81>``), so decoding one token at a time prints
U+FFFD halves of a syllable. Here every token id maps to its raw bytes once per engine (:class:`TokenBytes`), and each
request feeds those bytes through Python's incremental UTF-8 decoder (:class:`IncrementalDetokenizer`), which holds an
incomplete tail back until the rest of the character arrives.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Sequence
from typing import Any

_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_SPACE_PIECE = "▁"


def token_to_bytes(token: str | None) -> bytes:
    """The raw bytes a SentencePiece-style token stands for: ``▁`` is a space, ``<0xNN>`` is one byte."""
    if token is None:
        return b""
    byte = _BYTE_TOKEN.fullmatch(token)
    if byte is not None:
        return bytes([int(byte.group(1), 16)])
    return token.replace(_SPACE_PIECE, " ").encode("utf-8")


class TokenBytes:
    """A token id → raw bytes table for one tokenizer (special tokens map to nothing)."""

    def __init__(self, table: Sequence[bytes]) -> None:
        self._table = tuple(table)

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> TokenBytes:
        """Build the table from a transformers tokenizer (slow once, then a list lookup per token)."""
        size = len(tokenizer)
        tokens = tokenizer.convert_ids_to_tokens(list(range(size)))
        specials = set(tokenizer.all_special_ids)
        return cls([b"" if i in specials else token_to_bytes(tok) for i, tok in enumerate(tokens)])

    def __len__(self) -> int:
        return len(self._table)

    def __getitem__(self, token_id: int) -> bytes:
        # A model's vocabulary can be padded past its tokenizer's: such ids print nothing, as in tokenizer.decode.
        if 0 <= token_id < len(self._table):
            return self._table[token_id]
        return b""


class IncrementalDetokenizer:
    """Turns one request's token ids into text, a piece at a time, without ever splitting a character.

    Like the Llama-2 decoder, the single leading space of the answer is dropped. An incomplete tail is held back
    until the rest of its character arrives. Bytes that can never become valid UTF-8 (a model can sample a lone
    ``<0xEB>`` followed by a plain token) are dropped rather than shown as U+FFFD: people never see a broken
    character in chat, and every valid character is kept exactly as ``tokenizer.decode`` would show it.
    """

    def __init__(self, token_bytes: TokenBytes, *, strip_leading_space: bool = True) -> None:
        self._token_bytes = token_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        self._at_start = strip_leading_space

    def feed(self, token_ids: Iterable[int]) -> str:
        """Text completed by ``token_ids`` (possibly empty while a character is still incomplete)."""
        return self._strip_first(self._decoder.decode(b"".join(self._token_bytes[i] for i in token_ids)))

    def flush(self) -> str:
        """Whatever is still held back, at the end of the answer (nothing if it is a truncated character)."""
        return self._strip_first(self._decoder.decode(b"", final=True))

    def _strip_first(self, text: str) -> str:
        # On text, not bytes: a dropped invalid byte before the first space must not shield that space.
        if self._at_start and text:
            self._at_start = False
            if text.startswith(" "):
                return text[1:]
        return text
