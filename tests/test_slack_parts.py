"""The Slack adapter's pure parts: markup, event parsing, thread conversations, signatures, message blocks."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from adapters.slack.events import (
    parse_message,
    plain_text,
    thread_conversation,
)
from adapters.slack.http import signature_ok
from adapters.slack.sink import SECTION_MAX_CHARS, StreamingGate, reply_limits, slack_size, stop_blocks
from komt_bot import messages
from komt_bot.chat.editor import split_text
from komt_bot.dev.fakes.slack_requests import signed_headers
from komt_bot.errors import ConfigError
from komt_bot.jobs import Turn
from komt_bot.messages import answer_text
from komt_bot.settings import Settings, load_settings

BOT = "UKOMT"


def test_plain_text_removes_the_bots_mention_and_undoes_slack_markup() -> None:
    text = (
        f"<@{BOT}> <@U1|민수> 님, <#C1|general> 에서 <!here> 봤죠? <https://a.kr|링크> <https://b.kr> "
        "1 &lt; 2 &amp;&amp; 3 &gt; 2 <!subteam^S1|@devs>"
    )
    assert plain_text(text, BOT) == (
        "@민수 님, #general 에서 @here 봤죠? 링크 (https://a.kr) https://b.kr 1 < 2 && 3 > 2 @devs"
    )
    assert plain_text(f"<@{BOT}|komt>   ", BOT) == ""
    assert plain_text("깨진 \ud800 글자", BOT) == "깨진 \ufffd 글자"


def test_parse_message_keeps_questions_and_drops_what_is_never_answered() -> None:
    event = {"type": "app_mention", "user": "U1", "text": f"<@{BOT}> 질문", "ts": "2.0", "channel": "C1"}
    question = parse_message(event, bot_user_id=BOT, team="T1")
    assert question is not None
    assert (question.text, question.thread_ts, question.in_thread, question.mentions_bot) == (
        "질문",
        "2.0",
        False,
        True,
    )
    assert question.key == "T1:C1:2.0"
    reply = parse_message(event | {"thread_ts": "1.0"}, bot_user_id=BOT, team="T1")
    assert reply is not None and (reply.thread_ts, reply.in_thread) == ("1.0", True)
    dm = parse_message(event | {"channel": "D1", "channel_type": "im", "text": "hi"}, bot_user_id=BOT, team=None)
    assert dm is not None and dm.is_dm and not dm.mentions_bot
    for ignored in (
        {"subtype": "message_changed"},
        {"subtype": "message_deleted"},
        {"subtype": "channel_join"},
        {"bot_id": "B1"},
        {"user": BOT},
        {"edited": {"ts": "3.0"}},
        {"user": None},
    ):
        assert parse_message(event | ignored, bot_user_id=BOT, team="T1") is None
    assert parse_message(event | {"subtype": "thread_broadcast"}, bot_user_id=BOT, team="T1") is not None


def test_status_lines_and_suffixes_are_not_part_of_answers() -> None:
    for status in (
        messages.queued(None),
        messages.queued(4),
        messages.BUSY,
        messages.WRITING,
        messages.EMPTY_ANSWER,
        "…",
    ):
        assert messages.is_status(status)
        assert answer_text(status + messages.WRITING_MARK) == ""
    assert answer_text("답입니다.\n\n" + messages.STOPPED) == "답입니다."
    assert answer_text("쓰는 중" + messages.WRITING_MARK) == "쓰는 중"
    assert answer_text("문단 하나\n\n문단 둘") == "문단 하나\n\n문단 둘"


def test_thread_conversation_joins_split_answers_skips_status_and_keeps_the_newest() -> None:
    replies = [
        {"ts": "1.000001", "user": "U1", "text": f"<@{BOT}> 첫 질문"},
        {"ts": "1.000002", "user": BOT, "bot_id": "B", "text": messages.queued(2)},
        {"ts": "1.000003", "user": BOT, "bot_id": "B", "text": "첫 답의 앞부분, "},
        {"ts": "1.000004", "user": BOT, "bot_id": "B", "text": "뒷부분 &lt;끝&gt;"},
        {"ts": "1.000005", "user": "U2", "text": "저도 궁금"},
        {"ts": "1.000006", "bot_id": "BOTHER", "subtype": "bot_message", "text": "다른 봇"},
        {"ts": "1.000007", "user": "U1", "subtype": "channel_join", "text": "joined"},
        {"ts": "1.000008", "user": "U1", "text": "지금 질문"},
        {"ts": "1.000009", "user": "U1", "text": "나중 메시지"},
    ]
    turns = thread_conversation(replies, before_ts="1.000008", bot_user_id=BOT, bot_id="B")
    assert turns == [
        Turn(role="user", text="첫 질문"),
        Turn(role="assistant", text="첫 답의 앞부분, 뒷부분 <끝>"),
        Turn(role="user", text="저도 궁금"),
    ]
    newest = thread_conversation(replies, before_ts="1.000008", bot_user_id=BOT, bot_id="B", max_chars=10)
    assert newest == [Turn(role="user", text="저도 궁금")]
    assert thread_conversation(replies, before_ts="1.000008", bot_user_id=BOT, bot_id="B", max_messages=0) == []


def test_signatures_are_checked_over_the_raw_bytes() -> None:
    body = b'{"text": "\xed\xa0\x80 broken"}'
    assert signature_ok("s3cret", body, signed_headers(body, secret="s3cret"))
    assert not signature_ok("s3cret", body + b" ", signed_headers(body, secret="s3cret"))
    assert not signature_ok("s3cret", body, signed_headers(body, secret="other"))
    assert not signature_ok("s3cret", body, signed_headers(body, secret="s3cret", timestamp=int(time.time()) - 301))
    assert not signature_ok("s3cret", body, {})
    assert not signature_ok("s3cret", body, {"X-Slack-Request-Timestamp": "１２", "X-Slack-Signature": "v0=é"})


def test_messages_are_measured_escaped_and_blocks_stay_under_the_section_limit() -> None:
    assert slack_size("<가>") == len("&lt;가&gt;".encode())
    limits = reply_limits(3800)
    pieces = split_text("<&>" * 2000, limits.max_size, limits.measure)
    assert all(limits.measure(p) <= 3800 for p in pieces) and "".join(pieces) == "<&>" * 2000
    blocks = stop_blocks("가" * 3500 + "\n" + "<" * 10, "T:C:1.0")
    sections = [b for b in blocks if b["type"] == "section"]
    assert len(sections) == 2 and all(len(b["text"]["text"]) <= SECTION_MAX_CHARS for b in sections)
    assert blocks[-1]["elements"][0]["value"] == "T:C:1.0"


def test_streaming_gate_remembers_refusing_channels() -> None:
    gate = StreamingGate(True)
    gate.refuse("C1", "feature_not_enabled")
    assert not gate.allows("C1") and gate.allows("C2")
    assert not StreamingGate(False).allows("C2")


def test_slack_settings_allow_any_free_port_and_check_the_command(settings: Settings) -> None:
    assert load_settings(slack={"port": 0}).slack.port == 0
    with pytest.raises(ConfigError, match="KOMT_SLACK__COMMAND"):
        load_settings(slack={"command": "komt"})


def test_the_app_manifest_asks_for_what_the_adapter_uses(settings: Settings) -> None:
    manifest = yaml.safe_load((Path(__file__).parents[1] / "config" / "slack-app-manifest.yaml").read_text())
    events = set(manifest["settings"]["event_subscriptions"]["bot_events"])
    assert {"app_mention", "message.channels", "message.groups", "message.im"} <= events
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"app_mentions:read", "channels:history", "im:history", "chat:write", "commands"} <= scopes
    assert [c["command"] for c in manifest["features"]["slash_commands"]] == [settings.slack.command]
    assert manifest["settings"]["interactivity"]["is_enabled"] is True
