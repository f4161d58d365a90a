"""What both engines share: the loaded model, prompt encoding, per-request decoders, info and stats."""

from __future__ import annotations

from komt_bot.engine.base import EngineInfo, EngineStats, GenerationRequest, SamplingParams
from komt_bot.engine.detokenizer import TokenBytes
from komt_bot.engine.loading import LoadedModel
from komt_bot.engine.reply import ReplyDecoder
from komt_bot.errors import EnginePromptTooLongError, GenerationFailedError
from komt_bot.settings import GenerationSettings, ModelSettings

MAX_RECORDED_BATCHES = 10_000  # stats.batch_sizes keeps this many recent entries


class EngineCore:
    """The base class of the built-in engines: everything that does not depend on how requests are scheduled.

    A subclass names its ``kind`` and ``capacity`` and implements ``generate`` and ``close``; the rest of the
    :class:`~komt_bot.engine.base.Engine` interface (``info``, ``stats``, ``count_tokens``) lives here.
    """

    kind = "local"

    def __init__(self, loaded: LoadedModel, model: ModelSettings, generation: GenerationSettings) -> None:
        self.loaded = loaded
        self.model_settings = model
        self.generation = generation
        self.token_bytes = TokenBytes.from_tokenizer(loaded.tokenizer)
        self.eos_ids = loaded.eos_token_ids
        self._stats = EngineStats()

    @property
    def capacity(self) -> int:
        """Requests this engine generates at once."""
        return 1

    @property
    def info(self) -> EngineInfo:
        """Model, device and capacity for the worker's presence record."""
        return EngineInfo(
            model=self.loaded.base,
            adapter=self.loaded.adapter,
            device=str(self.loaded.device),
            quantization=self.loaded.plan.quantization,
            capacity=self.capacity,
            kind=self.kind,
        )

    @property
    def stats(self) -> EngineStats:
        """Requests per model step (``batch_sizes``), generated tokens and restarts."""
        return self._stats

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes, without the BOS token a prompt starts with."""
        return len(self.loaded.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode_prompt(self, request: GenerationRequest) -> list[int]:
        """The prompt's token ids (BOS first); an :class:`EnginePromptTooLongError` past ``max_prompt_tokens``."""
        ids = [int(i) for i in self.loaded.tokenizer(request.prompt)["input_ids"]]
        limit = self.model_settings.max_prompt_tokens
        if len(ids) > limit:
            raise EnginePromptTooLongError(len(ids), limit)
        if not ids:
            raise GenerationFailedError("prompt is empty")
        return ids

    def new_decoder(self, sampling: SamplingParams) -> ReplyDecoder:
        """A fresh per-request decoder (detokenizer, stop sequences, EOS, token limit)."""
        return ReplyDecoder(
            self.token_bytes,
            eos_ids=self.eos_ids,
            stops=sampling.stop,
            max_new_tokens=max(1, sampling.max_new_tokens),
        )

    def record_batch(self, size: int) -> None:
        """Note that ``size`` requests advanced together in one model step."""
        sizes = self._stats.batch_sizes
        sizes.append(size)
        if len(sizes) > 2 * MAX_RECORDED_BATCHES:
            del sizes[:-MAX_RECORDED_BATCHES]
