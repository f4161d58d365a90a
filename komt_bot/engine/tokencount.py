"""Counting tokens with the base model's tokenizer, without the model: tokenizer files only, no weights, no torch.

The remote engine fits a conversation into ``model.max_prompt_tokens`` the way the built-in engines do, so it needs
the same tokenizer. ``tokenizer.json`` is read with the ``tokenizers`` package (the ``remote`` extra); a model that
ships only a sentencepiece ``tokenizer.model`` needs transformers' ``AutoTokenizer`` (the ``worker`` extra).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from komt_bot.engine.loading import check_source
from komt_bot.errors import EngineError

log = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"


@dataclass(frozen=True, slots=True)
class TokenCounter:
    """Counts tokens of text; ``with_special`` adds what the tokenizer adds to a prompt (Llama-2: the BOS token)."""

    name: str
    _count: Callable[[str, bool], int]

    def count(self, text: str, *, with_special: bool = False) -> int:
        """Tokens ``text`` takes (without special tokens unless ``with_special``)."""
        return self._count(text, with_special)


def load_token_counter(base: str) -> TokenCounter:
    """The tokenizer of ``base`` (a directory or hub id) as a :class:`TokenCounter`; a readable error if none loads.

    Tries ``tokenizer.json`` with ``tokenizers`` first (a hub id downloads that one file), then transformers'
    ``AutoTokenizer`` if transformers is installed.
    """
    source = check_source(base, "tokenizer of the base model")
    problems: list[str] = []
    file = _tokenizer_file(source, problems)
    if file is not None:
        try:
            return _from_tokenizers(base, file)
        except ImportError:
            problems.append("the tokenizers package is not installed (pip install 'komt-bot[remote]')")
        except Exception as e:
            problems.append(f"{file}: {_first_line(e)}")
    try:
        return _from_transformers(base, source)
    except ImportError:
        problems.append("transformers is not installed (needed for a tokenizer without tokenizer.json)")
    except Exception as e:
        problems.append(f"AutoTokenizer: {_first_line(e)}")
    raise EngineError(f"could not load the tokenizer of {base!r} to count prompt tokens: {'; '.join(problems)}")


def _tokenizer_file(source: str, problems: list[str]) -> Path | None:
    path = Path(source).expanduser()
    if path.is_dir():
        file = path / TOKENIZER_FILE
        if file.is_file():
            return file
        problems.append(f"no {TOKENIZER_FILE} in {path}")
        return None
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(source, TOKENIZER_FILE))
    except ImportError:
        problems.append("huggingface_hub is not installed")
    except Exception as e:
        problems.append(f"{source} has no downloadable {TOKENIZER_FILE} ({type(e).__name__})")
    return None


def _from_tokenizers(name: str, file: Path) -> TokenCounter:
    from tokenizers import Tokenizer

    tokenizer: Any = Tokenizer.from_file(str(file))

    def count(text: str, with_special: bool) -> int:
        return len(tokenizer.encode(text, add_special_tokens=with_special).ids)

    log.info("counting prompt tokens with %s", file)
    return TokenCounter(name, count)


def _from_transformers(name: str, source: str) -> TokenCounter:
    from transformers import AutoTokenizer

    tokenizer: Any = AutoTokenizer.from_pretrained(source)

    def count(text: str, with_special: bool) -> int:
        return len(tokenizer(text, add_special_tokens=with_special)["input_ids"])

    log.info("counting prompt tokens with transformers' tokenizer of %s", name)
    return TokenCounter(name, count)


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
