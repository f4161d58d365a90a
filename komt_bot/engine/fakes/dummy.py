"""``load_format = "dummy"``: a real-shaped Llama-2 with random weights, for benchmarks without the real checkpoint.

The random checkpoint (bf16 safetensors, one shard per decoder layer) and a random LoRA with the komt adapter's
target modules are written to a scratch directory (``/dev/shm`` when it has room) and then loaded through exactly the
same path as the real model (:func:`komt_bot.engine.loading.load_model`): NF4 quantization happens as the shards load,
so a 13B shape needs only its NF4 footprint (~7.5 GB) on the GPU. To keep writing fast, every decoder layer gets the
same random tensors; speed and memory are what a dummy model is for, not its text.

The tokenizer is the tiny Korean byte-fallback tokenizer (:mod:`komt_bot.engine.fakes.tiny`) padded with filler
pieces to the shape's vocabulary size (32000 for Llama-2): it has Llama-2's special ids and byte tokens, so streaming
and Korean decoding behave as with the real model, but it is not Llama-2's vocabulary.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from komt_bot.engine.fakes.tiny import (
    BENCH_SHAPE,
    LORA_TARGET_MODULES,
    TINY_SHAPE,
    ModelShape,
    build_tokenizer,
    llama_config,
    lora_config,
)
from komt_bot.engine.loading import LoadedModel, load_model
from komt_bot.errors import EngineError
from komt_bot.settings import ModelSettings

log = logging.getLogger(__name__)

DUMMY_SHAPES: dict[str, ModelShape] = {
    "llama2-7b": ModelShape(hidden_size=4096, layers=32, heads=32, intermediate_size=11008, vocab_size=32000),
    "llama2-13b": ModelShape(hidden_size=5120, layers=40, heads=40, intermediate_size=13824, vocab_size=32000),
    "small": BENCH_SHAPE,
    "tiny": TINY_SHAPE,
}
LORA_RANK = 8
WEIGHT_STD = 0.02
_LAYER_KEY = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


def dummy_shape(name: str) -> ModelShape:
    """The shape called ``name``, or an :class:`EngineError` listing the known ones."""
    try:
        return DUMMY_SHAPES[name]
    except KeyError:
        raise EngineError(f"unknown dummy shape {name!r}; known: {', '.join(DUMMY_SHAPES)}") from None


def load_dummy_model(settings: ModelSettings, *, seed: int = 0) -> LoadedModel:
    """Write a random checkpoint of ``settings.dummy_shape`` to scratch space and load it the real way."""
    shape = dummy_shape(settings.dummy_shape)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="komt-dummy-", dir=scratch_dir(checkpoint_bytes(shape))) as tmp:
        base, lora = write_dummy_checkpoint(Path(tmp), shape, seed=seed)
        written = time.monotonic()
        real = settings.model_copy(
            update={"base": str(base), "adapter": str(lora) if settings.adapter else None, "load_format": "auto"}
        )
        loaded = load_model(real)
    log.info(
        "dummy %s: wrote the random checkpoint in %.1f s, loaded it in %.1f s",
        settings.dummy_shape,
        written - started,
        time.monotonic() - written,
    )
    adapter = f"dummy:{settings.dummy_shape}-lora" if settings.adapter else None
    return replace(loaded, base=f"dummy:{settings.dummy_shape}", adapter=adapter)


def checkpoint_bytes(shape: ModelShape) -> int:
    """Approximate size of the bf16 checkpoint of ``shape``."""
    h, i, v = shape.hidden_size, shape.intermediate_size, shape.vocab_size
    per_layer = 4 * h * h + 3 * h * i + 2 * h
    return 2 * (shape.layers * per_layer + 2 * v * h + h)


def scratch_dir(needed: int) -> str | None:
    """``/dev/shm`` when it can hold ``needed`` bytes with room to spare, else the default temp directory."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 2 * needed:
        return str(shm)
    return None


def write_dummy_checkpoint(dest: Path, shape: ModelShape, *, seed: int = 0) -> tuple[Path, Path]:
    """Write ``dest/base`` (config, tokenizer, sharded random bf16 weights) and ``dest/lora`` (random LoRA)."""
    import torch

    base, lora = dest / "base", dest / "lora"
    base.mkdir(parents=True)
    config = llama_config(shape)
    config.dtype = torch.bfloat16
    config.save_pretrained(base)
    _generation_config().save_pretrained(base)
    build_tokenizer(shape.vocab_size, seed=seed).save_pretrained(base)
    generator = torch.Generator().manual_seed(seed)
    _write_weights(base, _parameter_shapes(config), generator)
    _write_lora(lora, shape, generator, base_name=str(base))
    return base, lora


def _generation_config() -> Any:
    from transformers import GenerationConfig

    return cast(Any, GenerationConfig)(bos_token_id=1, eos_token_id=2, pad_token_id=0)


def _parameter_shapes(config: Any) -> dict[str, tuple[int, ...]]:
    """Every parameter name and shape of the Llama model, built on the meta device (no memory)."""
    import torch
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def _random(shape: tuple[int, ...], name: str, generator: Any) -> Any:
    import torch

    if name.endswith("norm.weight"):
        return torch.ones(shape, dtype=torch.bfloat16)
    return torch.empty(shape, dtype=torch.float32).normal_(0.0, WEIGHT_STD, generator=generator).to(torch.bfloat16)


def _write_weights(base: Path, shapes: dict[str, tuple[int, ...]], generator: Any) -> None:
    """One shard per decoder layer (all layers share one set of random tensors) plus one for the rest."""
    from safetensors.torch import save_file

    layer_keys: dict[int, list[str]] = {}
    other: dict[str, Any] = {}
    for name, shape in shapes.items():
        match = _LAYER_KEY.match(name)
        if match:
            layer_keys.setdefault(int(match.group(1)), []).append(match.group(2))
        else:
            other[name] = _random(shape, name, generator)
    template = {key: _random(shapes[f"model.layers.0.{key}"], key, generator) for key in layer_keys.get(0, [])}
    weight_map: dict[str, str] = {}
    for index, keys in sorted(layer_keys.items()):
        file = f"model-layer-{index:03d}.safetensors"
        tensors = {f"model.layers.{index}.{key}": template[key] for key in keys}
        save_file(tensors, str(base / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, file))
    save_file(other, str(base / "model-other.safetensors"), metadata={"format": "pt"})
    weight_map.update(dict.fromkeys(other, "model-other.safetensors"))
    total = sum(2 * _numel(shape) for shape in shapes.values())
    index_json = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (base / "model.safetensors.index.json").write_text(json.dumps(index_json, indent=1))


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def _write_lora(lora: Path, shape: ModelShape, generator: Any, *, base_name: str) -> None:
    """A random LoRA (rank 8 on the komt target modules) in PEFT's on-disk format."""
    from safetensors.torch import save_file

    lora.mkdir(parents=True)
    config = lora_config()
    config.base_model_name_or_path = base_name
    config.save_pretrained(str(lora))
    h, i = shape.hidden_size, shape.intermediate_size
    dims = {"q_proj": (h, h), "k_proj": (h, h), "v_proj": (h, h), "o_proj": (h, h)}
    dims |= {"gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
    parents = {"gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
    tensors: dict[str, Any] = {}
    for layer in range(shape.layers):
        for module in LORA_TARGET_MODULES:
            fan_in, fan_out = dims[module]
            prefix = f"base_model.model.model.layers.{layer}.{parents.get(module, 'self_attn')}.{module}"
            tensors[f"{prefix}.lora_A.weight"] = _random((LORA_RANK, fan_in), "lora_A", generator)
            tensors[f"{prefix}.lora_B.weight"] = _random((fan_out, LORA_RANK), "lora_B", generator)
    save_file(tensors, str(lora / "adapter_model.safetensors"), metadata={"format": "pt"})
