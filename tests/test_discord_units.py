"""The adapter's pure parts: reading answers back, allow-list rules, sizes and names."""

from __future__ import annotations

import json
from typing import Any

import discord
import pytest

import tests.fake_discord  # noqa: F401  (first: imports discord.py without its audioop warning)
from adapters.discord.access import Asker, refusal
from adapters.discord.control import StopButton, origin_job_id, stop_view
from adapters.discord.interaction import InteractionSink
from adapters.discord.sink import MessageSink, Piece, discord_length, thread_name
from komt_bot import messages
from komt_bot.jobs import Turn, job_id_for_key
from komt_bot.messages import answer_text
from komt_bot.prompt import merge_turns
from komt_bot.settings import DiscordSettings


def test_answer_text_drops_marks_statuses_and_suffixes() -> None:
    assert answer_text("절반쯤" + messages.WRITING_MARK) == "절반쯤"
    assert answer_text("끝까지 썼습니다.\n\n" + messages.STOPPED) == "끝까지 썼습니다."
    assert answer_text("잘렸습니다\n\n" + messages.TRUNCATED) == "잘렸습니다"
    assert answer_text("첫 문단\n\n둘째 문단") == "첫 문단\n\n둘째 문단"
    assert answer_text("문장이 이어지는 조각\n\n") == "문장이 이어지는 조각\n\n"  # pieces are joined back exactly
    for status in (
        messages.queued(3),
        messages.queued(None),
        messages.BUSY,
        messages.rate_limited(5),
        messages.CONTINUED,
    ):
        assert answer_text(status) == ""
    assert answer_text("…") == ""


def test_merge_turns_joins_pieces_of_one_answer() -> None:

    turns = [
        Turn(role="user", text="질문"),
        Turn(role="assistant", text="첫 조각. "),
        Turn(role="assistant", text="둘째 조각"),
        Turn(role="user", text="다음"),
        Turn(role="user", text="질문"),
    ]
    assert merge_turns(turns) == [
        Turn(role="user", text="질문"),
        Turn(role="assistant", text="첫 조각. 둘째 조각"),
        Turn(role="user", text="다음\n질문"),
    ]


def asker(**fields: Any) -> Any:

    values: dict[str, Any] = {"user_id": 1, "role_ids": frozenset(), "guild_id": 10, "channel_ids": frozenset({20})}
    return Asker(**(values | fields))


@pytest.mark.parametrize(
    ("settings", "fields", "expected"),
    [
        ({}, {}, None),
        ({"allow_dms": False}, {"guild_id": None}, messages.DMS_OFF),
        ({"allow_dms": False}, {}, None),
        ({"allowed_guilds": [11]}, {}, messages.NOT_ALLOWED),
        ({"allowed_guilds": [11]}, {"guild_id": None}, None),  # DMs follow allow_dms only
        ({"allowed_channels": [30]}, {}, messages.NOT_ALLOWED),
        ({"allowed_channels": [30]}, {"channel_ids": frozenset({21, 30})}, None),  # a thread of an allowed channel
        ({"allowed_users": [2]}, {}, messages.NOT_ALLOWED),
        ({"allowed_users": [2]}, {"user_id": 2}, None),
        ({"allowed_roles": [5]}, {"role_ids": frozenset({5})}, None),
        ({"allowed_roles": [5], "admin_roles": [6]}, {"role_ids": frozenset({6})}, None),
        ({"allowed_roles": [5], "allowed_users": [2]}, {"user_id": 2}, None),
        ({"allowed_roles": [5]}, {"guild_id": None}, messages.NOT_ALLOWED),
    ],
)
def test_refusal(settings: dict[str, Any], fields: dict[str, Any], expected: str | None) -> None:

    assert refusal(DiscordSettings(**settings), asker(**fields)) == expected


def test_sizes_and_thread_names() -> None:

    assert discord_length("한국어") == 3
    assert discord_length("✍️") == 2 and discord_length("😀") == 2  # counted long, never short
    assert thread_name("첫 줄\n둘째 줄") == "첫 줄"
    assert thread_name("   ") == "komt"
    assert len(thread_name("가" * 200)) == 90


def test_the_stop_button_carries_the_job_id_and_an_older_one_its_question() -> None:
    origin = 1234567890123456789
    job_id = origin_job_id(origin)
    assert job_id == job_id_for_key(f"discord:{origin}")  # the job's id, known before it is submitted
    (button,) = stop_view(job_id).children
    assert isinstance(button, StopButton) and button.custom_id == f"komt:stop:{job_id}"
    match = button.template.fullmatch(f"komt:stop:{origin}")  # the button of an earlier release
    assert match is not None and match["value"] == str(origin)


def test_a_sinks_state_rebuilds_the_same_sink() -> None:
    client = discord.Client(intents=discord.Intents.none())
    channel, guild, origin = 1_300_000_000_000_000_001, 1_300_000_000_000_000_002, 1_300_000_000_000_000_003
    message = client.get_partial_messageable(channel, guild_id=guild).get_partial_message(origin)
    mention = MessageSink(client, message, guild_id=guild, in_thread=True, title="제목")
    mention.pieces = [Piece(origin + 1, channel), Piece(origin + 2, origin + 1)]  # the second one in a thread
    state = mention.state()
    assert state["pieces"][1] == {"id": str(origin + 2), "channel": str(origin + 1), "token": False}  # ids as text
    again = MessageSink.resumed(client, json.loads(json.dumps(state)))
    assert again.state() == state and again.pieces == mention.pieces and again.job_id == mention.job_id

    ask = InteractionSink(
        client,
        application_id=7,
        interaction_id=origin,
        token="tok",
        channel_id=channel,
        guild_id=None,
        original=origin + 5,
    )
    ask.pieces = [Piece(origin + 5, channel, on_token=True)]
    state = ask.state()
    again_ask = InteractionSink.resumed(client, json.loads(json.dumps(state)))
    assert again_ask.state() == state and again_ask.pieces == ask.pieces
    assert state["created"] == discord.utils.snowflake_time(origin).timestamp()  # the token's clock starts here
