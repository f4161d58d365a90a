"""Loading the model the model card's way, on the tiny real model."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from komt_bot.engine import GenerationRequest, SamplingParams, load_engine
from komt_bot.engine.loading import LoadedModel, load_model, load_tokenizer, plan_load
from komt_bot.errors import EngineError
from komt_bot.settings import GenerationSettings, ModelSettings
from tests.model_fixtures import collect, joined

PROMPT = "### instruction: 안녕하세요\n\n### Response: "


def tiny_settings(model_dir: Path, **overrides: Any) -> ModelSettings:
    values: dict[str, Any] = {
        "base": str(model_dir / "base"),
        "adapter": str(model_dir / "lora"),
        "max_batch_size": 4,
        "max_prompt_tokens": 128,
    }
    return ModelSettings(**(values | overrides))


def next_token_logits(loaded: LoadedModel) -> Any:
    import torch

    ids = loaded.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        return loaded.model(input_ids=ids).logits[0, -1].float()


def test_importing_the_engine_package_does_not_import_torch() -> None:
    code = (
        "import sys, komt_bot.engine, komt_bot.engine.base; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_fp32_load_with_adapter_changes_the_output(tiny_model_dir: Path) -> None:
    import torch
    from peft import PeftModel

    with_lora = load_model(tiny_settings(tiny_model_dir, quantization="auto"))
    base_only = load_model(tiny_settings(tiny_model_dir, quantization="none", adapter=None))
    assert isinstance(with_lora.model, PeftModel)
    assert (with_lora.plan.quantization, with_lora.plan.dtype) == ("none", "float32")  # no CUDA here
    assert with_lora.model.dtype == torch.float32
    assert not torch.allclose(next_token_logits(with_lora), next_token_logits(base_only), atol=1e-3)


def test_merged_adapter_gives_the_same_output(tiny_model_dir: Path) -> None:
    from peft import PeftModel

    unmerged = load_model(tiny_settings(tiny_model_dir, quantization="none"))
    merged = load_model(tiny_settings(tiny_model_dir, quantization="none", merge_adapter=True))
    assert not isinstance(merged.model, PeftModel)
    assert next_token_logits(merged).allclose(next_token_logits(unmerged), atol=1e-4)


def test_model_card_nf4_path_with_peft_on_cpu(tiny_model_dir: Path) -> None:
    import torch
    from bitsandbytes.nn.modules import Linear4bit

    loaded = load_model(tiny_settings(tiny_model_dir, quantization="nf4"))
    assert loaded.plan.quantization == "nf4"
    q_proj = loaded.model.base_model.model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj.base_layer, Linear4bit)
    assert type(q_proj).__module__.startswith("peft.tuners.lora")
    assert getattr(q_proj.base_layer.weight, "quant_type", None) == "nf4"
    assert loaded.model.base_model.model.is_loaded_in_4bit
    logits = next_token_logits(loaded)
    assert torch.isfinite(logits).all()


def test_merging_into_a_quantized_base_is_refused() -> None:
    with pytest.raises(EngineError, match="merge_adapter needs an unquantized base"):
        plan_load(ModelSettings(quantization="nf4", merge_adapter=True), has_cuda=False)
    with pytest.raises(EngineError, match="merge_adapter"):
        plan_load(ModelSettings(merge_adapter=True), has_cuda=True)  # auto = NF4 on CUDA


def test_auto_means_nf4_on_cuda_and_unquantized_on_cpu() -> None:
    def plan(settings: ModelSettings, *, has_cuda: bool) -> tuple[str, str, str]:
        resolved = plan_load(settings, has_cuda=has_cuda)
        return resolved.device, resolved.quantization, resolved.dtype

    assert plan(ModelSettings(), has_cuda=True) == ("cuda", "nf4", "bfloat16")
    assert plan(ModelSettings(), has_cuda=False) == ("cpu", "none", "float32")
    assert plan(ModelSettings(quantization="none"), has_cuda=True) == ("cuda", "none", "bfloat16")
    assert plan(ModelSettings(quantization="nf4"), has_cuda=False) == ("cpu", "nf4", "bfloat16")


def test_missing_model_directory_is_a_readable_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(EngineError, match=r"base model directory not found: .*no-such-model"):
        load_engine(ModelSettings(base=str(missing), adapter=None), GenerationSettings())


def test_missing_adapter_directory_is_a_readable_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    settings = tiny_settings(tiny_model_dir, adapter=str(tmp_path / "no-lora"))
    with pytest.raises(EngineError, match="adapter directory not found"):
        load_model(settings)


def test_broken_model_directory_is_a_readable_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(EngineError, match="could not load base model"):
        load_model(ModelSettings(base=str(tmp_path), adapter=None))


def test_tokenizer_comes_from_the_adapter_when_it_has_one(tiny_model_dir: Path, tmp_path: Path) -> None:
    adapter = tmp_path / "lora"
    shutil.copytree(tiny_model_dir / "lora", adapter)
    assert len(load_tokenizer(str(tiny_model_dir / "base"), str(adapter))) == 2048  # none there: the base's
    tokenizer = load_tokenizer(str(tiny_model_dir / "base"), None)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|end|>"]})
    tokenizer.save_pretrained(adapter)
    assert len(load_tokenizer(str(tiny_model_dir / "base"), str(adapter))) == 2049


async def test_dummy_load_format_builds_a_real_shaped_model() -> None:
    settings = ModelSettings(load_format="dummy", dummy_shape="tiny", engine="sequential", max_prompt_tokens=64)
    engine = load_engine(settings, GenerationSettings())
    try:
        assert engine.info.model == "dummy:tiny"
        assert engine.info.adapter == "dummy:tiny-lora"
        updates = await collect(engine.generate(GenerationRequest("d", PROMPT, SamplingParams(max_new_tokens=5))))
        assert updates[-1].finished
        assert updates[-1].completion_tokens >= 1
        assert isinstance(joined(updates), str)
    finally:
        await engine.close()


def test_unknown_dummy_shape_is_a_readable_error() -> None:
    with pytest.raises(EngineError, match="unknown dummy shape 'llama3'"):
        load_engine(ModelSettings(load_format="dummy", dummy_shape="llama3"), GenerationSettings())
