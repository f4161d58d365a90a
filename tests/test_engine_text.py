"""Token ids → text: the incremental detokenizer, stop sequences and the per-request reply decoder."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from komt_bot.engine.detokenizer import IncrementalDetokenizer, TokenBytes, token_to_bytes
from komt_bot.engine.reply import ReplyDecoder
from komt_bot.engine.stops import StopFilter
from tests.model_fixtures import reference_text

COMMON_KOREAN = "안녕하세요 한국의 수도는 서울입니다 김치를 만드는 방법"
RARE_KOREAN = "뷁똠햏궯쒧뛟갊"  # not in the tiny corpus: spelled with byte tokens


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir / "base")


@pytest.fixture(scope="module")
def token_bytes(tokenizer: Any) -> TokenBytes:
    return TokenBytes.from_tokenizer(tokenizer)


def split_at(ids: list[int], cuts: list[int]) -> list[list[int]]:
    """``ids`` cut into consecutive chunks at the (sorted, deduplicated) positions ``cuts``."""
    points = sorted({c % (len(ids) + 1) for c in cuts})
    bounds = [0, *points, len(ids)]
    return [ids[a:b] for a, b in itertools.pairwise(bounds)]


def stream_decode(token_bytes: TokenBytes, chunks: list[list[int]]) -> list[str]:
    detok = IncrementalDetokenizer(token_bytes)
    return [detok.feed(chunk) for chunk in chunks] + [detok.flush()]


def test_rare_hangul_is_spelled_with_byte_tokens(tokenizer: Any) -> None:
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("뷁", add_special_tokens=False)["input_ids"])
    assert [t for t in tokens if t.startswith("<0x")] == ["<0xEB>", "<0xB7>", "<0x81>"]


def test_token_to_bytes() -> None:
    assert token_to_bytes("▁안녕") == " 안녕".encode()
    assert token_to_bytes("<0xEB>") == b"\xeb"
    assert token_to_bytes(None) == b""


def test_specials_and_unknown_ids_print_nothing(tokenizer: Any, token_bytes: TokenBytes) -> None:
    assert token_bytes[tokenizer.bos_token_id] == b""
    assert token_bytes[tokenizer.eos_token_id] == b""
    assert token_bytes[len(tokenizer) + 5] == b""


def test_byte_tokens_one_at_a_time_never_print_a_replacement_character(tokenizer: Any, token_bytes: TokenBytes) -> None:
    ids = tokenizer(f"{COMMON_KOREAN} {RARE_KOREAN}!", add_special_tokens=False)["input_ids"]
    deltas = stream_decode(token_bytes, [[i] for i in ids])
    assert "".join(deltas) == f"{COMMON_KOREAN} {RARE_KOREAN}!"
    assert not any("\ufffd" in delta for delta in deltas)
    assert "" in deltas  # some tokens completed no character and were held back


korean_text = st.text(alphabet=st.sampled_from(COMMON_KOREAN + RARE_KOREAN + " abc.!"), min_size=1, max_size=12)
any_char = st.characters(exclude_categories=["Cs"], min_codepoint=0x20)


@st.composite
def valid_token_ids(draw: st.DrawFn, tokenizer: Any) -> list[int]:
    """Ids of valid text: encoded Korean, learned pieces, specials, and any character spelled in byte tokens."""
    ids: list[int] = []
    for kind in draw(st.lists(st.sampled_from(["korean", "piece", "special", "bytes"]), min_size=1, max_size=8)):
        if kind == "korean":
            ids += tokenizer(draw(korean_text), add_special_tokens=False)["input_ids"]
        elif kind == "piece":
            ids.append(draw(st.integers(min_value=259, max_value=len(tokenizer) - 1)))
        elif kind == "special":
            ids.append(draw(st.sampled_from(tokenizer.all_special_ids)))
        else:
            ids += [3 + b for b in draw(any_char).encode("utf-8")]
    return ids


@settings(max_examples=150, deadline=None)
@given(data=st.data(), cuts=st.lists(st.integers(min_value=0), max_size=10))
def test_streamed_text_equals_tokenizer_decode(
    tokenizer: Any, token_bytes: TokenBytes, data: st.DataObject, cuts: list[int]
) -> None:
    ids = data.draw(valid_token_ids(tokenizer))
    deltas = stream_decode(token_bytes, split_at(ids, cuts))
    expected = tokenizer.decode(ids, skip_special_tokens=True)
    assert "".join(deltas) == expected
    assert "\ufffd" not in expected
    assert not any("\ufffd" in delta for delta in deltas)


@settings(max_examples=150, deadline=None)
@given(
    ids=st.lists(st.integers(min_value=0, max_value=2047), max_size=40),
    cuts=st.lists(st.integers(min_value=0), max_size=10),
)
def test_any_ids_stream_to_the_reference_text(
    tokenizer: Any, token_bytes: TokenBytes, ids: list[int], cuts: list[int]
) -> None:
    deltas = stream_decode(token_bytes, split_at(ids, cuts))
    # Invalid byte sequences are dropped where tokenizer.decode shows U+FFFD; every valid character is the same.
    expected = reference_text(tokenizer, ids).replace("\ufffd", "")
    assert "".join(deltas) == expected
    assert not any("\ufffd" in delta for delta in deltas)


def run_filter(stops: list[str], pieces: list[str]) -> tuple[str, bool]:
    stop_filter = StopFilter(stops)
    out = []
    for piece in pieces:
        result = stop_filter.push(piece)
        out.append(result.text)
        if result.stopped:
            return "".join(out), True
    return "".join(out) + stop_filter.flush(), False


def test_stop_split_across_pieces_is_held_back_and_never_shown() -> None:
    stop_filter = StopFilter(["###"])
    assert stop_filter.push("답입니다.\n#").text == "답입니다.\n"
    assert stop_filter.push("#").text == ""
    result = stop_filter.push("# instruction")
    assert result == type(result)("", stopped=True)


def test_partial_stop_that_stops_matching_is_released() -> None:
    assert run_filter(["###"], ["C# and ", "##", "x"]) == ("C# and ##x", False)
    assert run_filter(["</s>"], ["a </", "b"]) == ("a </b", False)


def test_held_text_is_flushed_at_the_end() -> None:
    assert run_filter(["###"], ["끝", "##"]) == ("끝##", False)


def test_earliest_of_several_stops_wins() -> None:
    assert run_filter(["###", "<|end|>", "</s>"], ["hi <|e", "nd|> ###"]) == ("hi ", True)


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(alphabet=st.sampled_from("ab#<|end>/s 가"), max_size=30),
    cuts=st.lists(st.integers(min_value=0), max_size=8),
)
def test_stop_filter_property(text: str, cuts: list[int]) -> None:
    stops = ["###", "<|end|>", "</s>"]
    points = sorted({c % (len(text) + 1) for c in cuts})
    pieces = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=False)]
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    expected = (text[: min(hits)], True) if hits else (text, False)
    assert run_filter(stops, pieces) == expected


def make_decoder(token_bytes: TokenBytes, *, stops: tuple[str, ...] = (), max_new: int = 50) -> ReplyDecoder:
    return ReplyDecoder(token_bytes, eos_ids=[2], stops=stops, max_new_tokens=max_new)


def test_reply_ends_on_eos_and_ignores_later_tokens(tokenizer: Any, token_bytes: TokenBytes) -> None:
    ids = tokenizer("안녕하세요", add_special_tokens=False)["input_ids"]
    decoder = make_decoder(token_bytes)
    step = decoder.feed([*ids, 2, *ids])
    assert (step.text, step.finish_reason) == ("안녕하세요", "stop")
    assert decoder.completion_tokens == len(ids) + 1
    assert decoder.feed(ids).text == ""


def test_reply_ends_on_length_and_flushes(tokenizer: Any, token_bytes: TokenBytes) -> None:
    ids = tokenizer("서울 ##", add_special_tokens=False)["input_ids"]
    decoder = make_decoder(token_bytes, stops=("###",), max_new=len(ids))
    texts = [decoder.feed([i]) for i in ids]
    assert "".join(s.text for s in texts) == "서울 ##"
    assert texts[-1].finish_reason == "length"


def test_reply_stop_sequence_across_tokens(tokenizer: Any, token_bytes: TokenBytes) -> None:
    ids = tokenizer("답은 서울입니다.\n\n### instruction: 다음", add_special_tokens=False)["input_ids"]
    assert "###" not in tokenizer.convert_ids_to_tokens(ids)  # the stop really arrives in pieces
    decoder = make_decoder(token_bytes, stops=("###",))
    texts = []
    for token_id in ids:
        step = decoder.feed([token_id])
        texts.append(step.text)
        if step.finish_reason is not None:
            break
    assert "".join(texts) == "답은 서울입니다.\n\n"
    assert decoder.finish_reason == "stop"
    assert decoder.completion_tokens < len(ids)
