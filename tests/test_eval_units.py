"""`komt-bot eval`'s parts on their own: the judge's prompt and parser, the questions, the card's arithmetic."""

from __future__ import annotations

from pathlib import Path

import pytest

from komt_bot.errors import ConfigError, EvalError
from komt_bot.eval import (
    PROMPT_VERSION,
    ItemRecord,
    JudgeConfig,
    judge_messages,
    load_questions,
    load_reference,
    parse_score,
    read_records,
    summarize,
)
from komt_bot.eval.questions import parse_questions
from komt_bot.eval.records import RecordWriter
from komt_bot.settings import EvalSettings

QUESTIONS = load_questions()
CARD_MODELS = [row.model for row in load_reference()]


# -- the judge's prompt and parser ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ("좋습니다.\nScore: 4", 4),
        ("Scores run from Score: 0 to Score: 5.\nThe answer is fine.\nScore: 3", 3),
        ("이유: 정확합니다.\n점수: 5", 5),
        ("**Score:** 2", 2),
        ("score : 1/5", 1),
        ("Score: 4.0", 4),
        ("Score: 3\n(on reflection) Score: 7", None),
        ("Score: 4.5", None),
        ("a fine answer, four out of five", None),
        ("", None),
    ],
)
def test_the_parser_takes_the_last_score_line(reply: str, score: int | None) -> None:
    assert parse_score(reply) == score


def test_the_prompt_shows_question_and_answer_in_korean_and_english() -> None:
    system, user = judge_messages("김치는 어떻게 만드나요?", "배추를 절입니다.")
    assert "Score: N" in system["content"] and "0부터 5까지" in system["content"] and "impartial" in system["content"]
    assert "김치는 어떻게 만드나요?" in user["content"] and "배추를 절입니다." in user["content"]
    assert "empty answer" in judge_messages("q", "  ")[1]["content"]
    assert PROMPT_VERSION


def test_questions_default_to_komts_37_and_a_file_needs_instructions(tmp_path: Path) -> None:
    assert len(QUESTIONS) == 37 and QUESTIONS[0].id == "0" and "앵무새" in QUESTIONS[0].instruction
    own = tmp_path / "q.jsonl"
    own.write_text('{"instruction": "하나"}\n\n{"instruction": "둘", "id": "b"}\n', encoding="utf-8")
    assert [(q.id, q.instruction) for q in load_questions(own)] == [("0", "하나"), ("b", "둘")]
    with pytest.raises(EvalError, match=r"x\.jsonl:1: no \"instruction\""):
        parse_questions('{"question": "?"}', "x.jsonl")
    with pytest.raises(EvalError, match="not JSON"):
        parse_questions("{", "x.jsonl")


def test_the_cards_table_is_bundled_and_the_arithmetic_is_the_cards() -> None:
    reference = load_reference()
    assert len(reference) == 11
    komt = next(row for row in reference if row.model == "komt-llama2-13b-v1")
    assert (komt.score, komt.average, komt.percentage) == (129, 3.48, 69.72)
    # 37 answers scoring 129 in all: the card's 3.48 and 69.72% (cut to two decimals, as the card does).
    scores = [4] * 18 + [3] * 19
    assert sum(scores) == 129
    records = [ItemRecord(id=str(i), question="q", status="judged", answer="a", score=s) for i, s in enumerate(scores)]
    judge = JudgeConfig("http://judge/v1", "m")
    summary = summarize(records, questions=37, reference=reference, deployment="komt", judge=judge)
    assert (summary["score"], summary["max_score"], summary["average"], summary["percentage"]) == (
        129,
        185,
        3.48,
        69.72,
    )
    placed = [row["model"] for row in summary["table"]]
    assert placed[:5] == ["gpt-3.5-turbo", "naver Cue", "clova X", "komt-llama2-13b-v1", "komt"]  # by score


def test_unjudged_and_failed_answers_are_counted_apart_never_as_zero() -> None:
    records = [
        ItemRecord(id="0", question="q", status="judged", answer="a", score=5),
        ItemRecord(id="1", question="q", status="judged", answer="a", score=4),
        ItemRecord(id="2", question="q", status="unjudged", answer="a", judge_reply="hmm"),
        ItemRecord(id="3", question="q", status="failed", error="timeout"),
    ]
    summary = summarize(
        records, questions=5, reference=load_reference(), deployment="d", judge=JudgeConfig("http://j/v1", "m")
    )
    assert (summary["judged"], summary["unjudged"], summary["failed"]) == (2, 1, 2)
    assert (summary["score"], summary["max_score"], summary["average"], summary["percentage"]) == (9, 10, 4.5, 90.0)
    assert summary["table"][0] == {**summary["table"][0], "model": "d", "this": True}
    assert [item["score"] for item in summary["items"]] == [5, 4, None, None]


def test_the_judge_settings_name_what_is_missing() -> None:
    with pytest.raises(ConfigError, match="KOMT_EVAL__JUDGE_URL"):
        JudgeConfig.resolve(EvalSettings())
    with pytest.raises(ConfigError, match="KOMT_EVAL__JUDGE_MODEL"):
        JudgeConfig.resolve(EvalSettings(judge_url="http://x/v1"))
    config = JudgeConfig.resolve(EvalSettings(judge_url="http://u:pw@x/v1/", judge_model="m"), model="other")
    assert (config.url, config.model) == ("http://u:pw@x/v1", "other")
    assert "pw" not in config.shown_url


def test_a_line_cut_short_by_a_killed_run_is_skipped_and_the_next_starts_fresh(tmp_path: Path) -> None:
    out = tmp_path / "run.jsonl"
    answered = ItemRecord(id="0", question="q", status="answered", answer="a")
    with RecordWriter(out) as writer:
        writer.write(answered)
    out.write_text(out.read_text(encoding="utf-8") + '{"id": "1", "quest', encoding="utf-8")
    with RecordWriter(out) as writer:
        writer.write(answered.model_copy(update={"status": "judged", "score": 3}))
    records, bad = read_records(out)
    assert bad == 1 and list(records) == ["0"] and records["0"].score == 3
