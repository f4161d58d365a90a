"""Loading komt the model card's way: a base Llama-2 (4-bit NF4 on CUDA) plus a PEFT LoRA adapter.

    AutoModelForCausalLM.from_pretrained(base, quantization_config=BitsAndBytesConfig(load_in_4bit=True,
        bnb_4bit_use_double_quant=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16),
        device_map="auto")
    PeftModel.from_pretrained(model, adapter)

``base`` and ``adapter`` are hub ids or local directories, checked in a second before anything loads
(:mod:`komt_bot.engine.hub`). ``quantization="auto"`` means NF4 on CUDA and unquantized
on a machine without CUDA (NF4 works on CPU with bitsandbytes >= 0.50 but is no faster); ``"nf4"`` forces it.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from komt_bot.engine.hub import ADAPTER_SETTING, BASE_SETTING, hub_sources
from komt_bot.engine.hub import check_source as check_source  # tokencount imports it from here
from komt_bot.errors import EngineError
from komt_bot.settings import ModelSettings

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")


@dataclass(frozen=True, slots=True)
class LoadPlan:
    """How a model will be loaded on this machine, decided from the settings before anything heavy happens."""

    device: str  # "cuda" or "cpu"
    quantization: str  # "nf4" or "none"
    dtype: str  # compute dtype name: "bfloat16", "float16" or "float32"
    merge_adapter: bool


@dataclass(slots=True)
class LoadedModel:
    """A model ready to generate, with its tokenizer and a description for the worker's heartbeat."""

    model: Any  # a transformers PreTrainedModel or a peft PeftModel wrapping one
    tokenizer: PreTrainedTokenizerBase
    plan: LoadPlan
    base: str
    adapter: str | None

    @property
    def eos_token_ids(self) -> frozenset[int]:
        """Every token id that ends an answer (generation config and tokenizer)."""
        ids: set[int] = set()
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        if isinstance(configured, int):
            ids.add(configured)
        elif configured is not None:
            ids.update(int(i) for i in configured)
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        return frozenset(ids)

    @property
    def device(self) -> torch.device:
        """Where the model's inputs go."""
        return self.model.device  # type: ignore[no-any-return]


def cuda_available() -> bool:
    """Whether torch sees a CUDA device."""
    import torch

    return bool(torch.cuda.is_available())


def plan_load(settings: ModelSettings, *, has_cuda: bool) -> LoadPlan:
    """Resolve ``auto`` quantization and dtype for this machine, refusing combinations that cannot work."""
    quantization = settings.quantization
    if quantization == "auto":
        quantization = "nf4" if has_cuda else "none"
    dtype = settings.dtype
    if dtype == "auto":
        dtype = "bfloat16" if has_cuda or quantization == "nf4" else "float32"
    if settings.merge_adapter and quantization == "nf4":
        raise EngineError(
            "merge_adapter needs an unquantized base: merging a LoRA into NF4 weights would re-quantize them "
            "(set KOMT_MODEL__QUANTIZATION=none, or KOMT_MODEL__MERGE_ADAPTER=false)"
        )
    return LoadPlan(
        device="cuda" if has_cuda else "cpu",
        quantization=quantization,
        dtype=dtype,
        merge_adapter=settings.merge_adapter and settings.adapter is not None,
    )


def load_model(settings: ModelSettings) -> LoadedModel:
    """Load the configured base model, adapter and tokenizer; any failure is one readable :class:`EngineError`."""
    has_cuda = cuda_available()
    plan = plan_load(settings, has_cuda=has_cuda)
    offline = hub_sources(settings)
    if not has_cuda:
        log.warning("no CUDA device found: loading %s on CPU (%s)", settings.base, _describe(plan))
    model = load_base(settings.base, plan, offline=offline)
    if settings.adapter is not None:
        model = attach_adapter(model, settings.adapter, merge=plan.merge_adapter, offline=offline)
    model.eval()
    tokenizer = load_tokenizer(settings.base, settings.adapter, offline=offline)
    log.info("loaded %s (adapter %s) on %s, %s", settings.base, settings.adapter, plan.device, _describe(plan))
    return LoadedModel(model=model, tokenizer=tokenizer, plan=plan, base=settings.base, adapter=settings.adapter)


def _describe(plan: LoadPlan) -> str:
    if plan.quantization == "nf4":
        return f"NF4 with {plan.dtype} compute"
    return f"unquantized {plan.dtype}" + (", LoRA merged" if plan.merge_adapter else "")


def quantization_config(plan: LoadPlan) -> Any:
    """The model card's ``BitsAndBytesConfig`` (NF4, double quantization)."""
    import torch
    from transformers import BitsAndBytesConfig

    return cast(Any, BitsAndBytesConfig)(
        load_in_4bit=True,
        bnb_4bit_use_double_quant=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=getattr(torch, plan.dtype),
    )


def load_base(name: str, plan: LoadPlan, *, offline: bool = False) -> Any:
    """The base model, NF4-quantized or in ``plan.dtype``, placed with ``device_map="auto"`` (from the local
    Hugging Face cache alone when ``offline``)."""
    import torch
    from transformers import AutoModelForCausalLM

    source = check_source(name, "base model", BASE_SETTING)
    kwargs: dict[str, Any] = {"device_map": "auto", "local_files_only": offline}
    if offline:  # transformers' own look for an adapter in the repository does not follow local_files_only
        kwargs["adapter_kwargs"] = {"local_files_only": True}
    if plan.quantization == "nf4":
        kwargs["quantization_config"] = quantization_config(plan)
    else:
        kwargs["dtype"] = getattr(torch, plan.dtype)
    try:
        with quiet_third_party_warnings():
            return AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except Exception as e:
        raise EngineError(f"{BASE_SETTING}: could not load base model {name!r}: {_first_line(e)}") from e


def attach_adapter(model: Any, name: str, *, merge: bool, offline: bool = False) -> Any:
    """Wrap ``model`` with the LoRA adapter ``name``; merged into the weights when ``merge`` is set."""
    from peft import PeftModel

    source = check_source(name, "adapter", ADAPTER_SETTING)
    try:
        with quiet_third_party_warnings():
            wrapped = PeftModel.from_pretrained(model, source, local_files_only=offline)
    except Exception as e:
        raise EngineError(f"{ADAPTER_SETTING}: could not load adapter {name!r}: {_first_line(e)}") from e
    return wrapped.merge_and_unload() if merge else wrapped


def load_tokenizer(base: str, adapter: str | None, *, offline: bool = False) -> PreTrainedTokenizerBase:
    """The adapter's tokenizer when it ships one, else the base model's."""
    from transformers import AutoTokenizer

    for name in (adapter, base):
        if name is None or not _may_have_tokenizer(name):
            continue
        try:
            return AutoTokenizer.from_pretrained(check_source(name, "tokenizer"), local_files_only=offline)
        except Exception as e:
            if name == base:
                raise EngineError(f"could not load the tokenizer of {name!r}: {_first_line(e)}") from e
            log.info("adapter %s has no usable tokenizer (%s); using the base model's", name, _first_line(e))
    raise EngineError(f"no tokenizer found for {base!r}")


def _may_have_tokenizer(name: str) -> bool:
    path = Path(name).expanduser()
    if path.is_dir():
        return any((path / file).is_file() for file in _TOKENIZER_FILES)
    return True  # a hub id: only trying tells


@contextlib.contextmanager
def quiet_third_party_warnings() -> Iterator[None]:
    """Silence deprecation chatter from peft/transformers internals that komt-bot cannot act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
