"""A tiny, random, Llama-2-shaped model with a Korean byte-fallback tokenizer and a random LoRA adapter.

Tests and benchmarks load it through exactly the same ``from_pretrained`` path as the real komt checkpoints, so the
loading, batching and Korean streaming code is exercised offline. The weights are random: the text it writes is
noise, but its tokens, bytes and shapes are real.

The tokenizer is a BPE trained (with the ``tokenizers`` library) on ``komt_bot/data/tiny_corpus.txt`` and laid out like
Llama-2's: ``<unk>``=0, ``<s>``=1, ``</s>``=2, ``<0x00>``..``<0xFF>``=3..258, then the learned pieces. Hangul that is
not in the corpus falls back to byte tokens the way Llama-2 spells rare syllables. When ``vocab_size`` asks for more
pieces than the corpus yields, the rest are filler pieces (two learned pieces glued together) that the encoder never
produces but the model can generate and the decoder can print.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from transformers import LlamaConfig, PreTrainedTokenizerBase

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")
LORA_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
BYTE_TOKENS = tuple(f"<0x{b:02X}>" for b in range(256))
FIRST_LEARNED_ID = len(SPECIAL_TOKENS) + len(BYTE_TOKENS)
DIM_MULTIPLE = 64  # bitsandbytes' CPU NF4 kernels assert on other multiples


@dataclass(frozen=True, slots=True)
class ModelShape:
    """The dimensions of a Llama-2-style model."""

    hidden_size: int
    layers: int
    heads: int
    intermediate_size: int
    vocab_size: int


TINY_SHAPE = ModelShape(hidden_size=64, layers=2, heads=4, intermediate_size=192, vocab_size=2048)
BENCH_SHAPE = ModelShape(hidden_size=512, layers=8, heads=8, intermediate_size=1408, vocab_size=8192)


def round_up(value: int, multiple: int = DIM_MULTIPLE) -> int:
    """``value`` rounded up to a multiple of ``multiple``."""
    return -(-value // multiple) * multiple


def shape_for(hidden_size: int, layers: int, vocab_size: int) -> ModelShape:
    """A Llama-2-proportioned shape: 64-dim heads (16 for tiny models), a ~8/3 MLP, all multiples of 64."""
    head_dim = 64 if hidden_size >= 256 else 16
    return ModelShape(
        hidden_size=hidden_size,
        layers=layers,
        heads=max(1, hidden_size // head_dim),
        intermediate_size=round_up(hidden_size * 8 // 3),
        vocab_size=vocab_size,
    )


def corpus_text() -> str:
    """The Korean + English text the tiny tokenizer is trained on."""
    return resources.files("komt_bot").joinpath("data", "tiny_corpus.txt").read_text(encoding="utf-8")


def _train_pieces(text: str, max_pieces: int) -> tuple[list[str], list[tuple[str, str]]]:
    """Learned BPE pieces (in training order) and merges for ``text``, Metaspace-style."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    trainer_tok = Tokenizer(models.BPE())
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(vocab_size=max_pieces, special_tokens=[], show_progress=False)
    trainer_tok.train_from_iterator(text.splitlines(), trainer=trainer)
    model_json = json.loads(trainer_tok.to_str())["model"]
    pieces = sorted(model_json["vocab"], key=model_json["vocab"].__getitem__)
    merges = [_as_pair(merge) for merge in model_json["merges"]]
    return [p for p in pieces if p not in SPECIAL_TOKENS and p not in BYTE_TOKENS], merges


def _as_pair(merge: Any) -> tuple[str, str]:
    # tokenizers serialises merges as ["a", "b"] (newer) or "a b" (older).
    if isinstance(merge, str):
        left, right = merge.split(" ", 1)
        return left, right
    return str(merge[0]), str(merge[1])


def _filler_pieces(pieces: list[str], count: int, seed: int) -> list[str]:
    """``count`` new pieces made of two learned pieces each: decodable text the encoder never produces."""
    rng = random.Random(seed)
    taken = set(pieces)
    fillers: list[str] = []
    while len(fillers) < count:
        candidate = rng.choice(pieces) + rng.choice(pieces).replace("▁", "")
        if candidate not in taken:
            taken.add(candidate)
            fillers.append(candidate)
    return fillers


def build_tokenizer(vocab_size: int, *, seed: int = 0) -> PreTrainedTokenizerBase:
    """A Llama-2-layout byte-fallback tokenizer with exactly ``vocab_size`` entries, trained on the tiny corpus."""
    from transformers import LlamaTokenizer

    if vocab_size < FIRST_LEARNED_ID + 64:
        raise ValueError(f"vocab_size must be at least {FIRST_LEARNED_ID + 64}, got {vocab_size}")
    pieces, merges = _train_pieces(corpus_text(), vocab_size - FIRST_LEARNED_ID)
    pieces = pieces[: vocab_size - FIRST_LEARNED_ID]
    pieces += _filler_pieces(pieces, vocab_size - FIRST_LEARNED_ID - len(pieces), seed)
    vocab = {token: i for i, token in enumerate((*SPECIAL_TOKENS, *BYTE_TOKENS, *pieces))}
    known = set(vocab)
    merges = [(a, b) for a, b in merges if a in known and b in known and a + b in known]
    return LlamaTokenizer(vocab=vocab, merges=merges, legacy=False, add_prefix_space=True, add_bos_token=True)


def llama_config(shape: ModelShape) -> LlamaConfig:
    """A Llama-2-style config (Llama-2's special token ids, untied embeddings) for ``shape``."""
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.heads,
        vocab_size=shape.vocab_size,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )


def lora_config() -> Any:
    """The komt adapter's LoRA layout with random (non-zero) weights, so loading it visibly changes the output."""
    from peft import LoraConfig

    return LoraConfig(
        r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        target_modules=list(LORA_TARGET_MODULES),
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )


def build_model_from_shape(dest: Path, shape: ModelShape, *, seed: int = 0) -> tuple[Path, Path]:
    """Write a random Llama of ``shape`` to ``dest/base`` and a random LoRA for it to ``dest/lora``."""
    import torch
    from peft import get_peft_model
    from transformers import GenerationConfig, LlamaForCausalLM

    from komt_bot.engine.loading import quiet_third_party_warnings

    base_dir, lora_dir = dest / "base", dest / "lora"
    tokenizer = build_tokenizer(shape.vocab_size, seed=seed)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama_config(shape))
    model.generation_config = cast(Any, GenerationConfig)(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model.save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    model.name_or_path = str(base_dir)
    torch.manual_seed(seed + 1)
    with quiet_third_party_warnings():
        adapter = get_peft_model(model, lora_config())
    adapter.save_pretrained(lora_dir)
    return base_dir, lora_dir


def build_tiny_model(
    dest: Path,
    *,
    hidden_size: int = TINY_SHAPE.hidden_size,
    layers: int = TINY_SHAPE.layers,
    vocab_size: int = TINY_SHAPE.vocab_size,
    seed: int = 0,
) -> tuple[Path, Path]:
    """Build a random Llama-2-like model and LoRA under ``dest``; returns ``(dest/base, dest/lora)``.

    Defaults give a ~1 MB model for tests (hidden 64, 2 layers). The benchmark size is
    ``build_tiny_model(dest, **BENCH_KWARGS)`` (hidden 512, 8 layers, vocab 8192, ~136 MB). Dimensions are rounded up
    to multiples of 64 so the NF4 path works on CPU too. Both directories load with ``from_pretrained``.
    """
    shape = shape_for(round_up(hidden_size), layers, round_up(vocab_size))
    return build_model_from_shape(Path(dest), shape, seed=seed)


BENCH_KWARGS: dict[str, int] = {
    "hidden_size": BENCH_SHAPE.hidden_size,
    "layers": BENCH_SHAPE.layers,
    "vocab_size": BENCH_SHAPE.vocab_size,
}
