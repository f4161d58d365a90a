"""Slack events as komt questions: which messages to answer, their text, and a thread as a conversation.

Slack writes mentions, channels and links as ``<...>`` markup and escapes ``&``, ``<`` and ``>`` in message text.
:func:`plain_text` turns that back into what a person reads (without the bot's own mention). In a thread, the
bot's earlier messages are the assistant's turns (status lines and placeholders skipped, a multi-message answer
joined again) and everyone else's are the user's; the oldest turns are dropped first to fit a character budget
(the worker's prompt builder then drops more by tokens if it has to).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from komt_bot import messages
from komt_bot.jobs import Turn
from komt_bot.prompt import merge_turns

# Plain messages, and the two kinds that still carry a person's words.
ANSWERED_SUBTYPES = frozenset({None, "thread_broadcast", "file_share"})
QUESTION_MARK = "🙋"  # leads the message that shows a /komt question in the channel
ASSISTANT_THREAD_ROOT = "assistant_app_thread"  # the subtype of the message an assistant thread hangs from
MAX_HISTORY_CHARS = 24_000

_USER = re.compile(r"<@([A-Z0-9]+)(?:\|([^>]*))?>")
_CHANNEL = re.compile(r"<#([A-Z0-9]+)(?:\|([^>]*))?>")
_SPECIAL = re.compile(r"<!([^|>^]+)(?:\^[^|>]*)?(?:\|([^>]*))?>")
_LINK = re.compile(r"<([^@#!|>][^|>]*)(?:\|([^>]*))?>")
_SURROGATE = re.compile("[\ud800-\udfff]")
_QUESTION_ROOT = re.compile(rf"^{QUESTION_MARK} <@[A-Z0-9]+>: (.*)$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class SlackQuestion:
    """A message komt-bot may answer, already parsed."""

    channel: str
    user: str
    ts: str
    thread_ts: str  # where the reply goes: the message's thread, or a new thread under the message
    text: str  # what the person wrote, without the bot's mention
    team: str | None
    is_dm: bool
    in_thread: bool  # a reply inside an existing thread (its earlier messages are the conversation)
    mentions_bot: bool

    @property
    def key(self) -> str:
        """The message's identity: the same for every delivery of it, as app_mention or as message."""
        return f"{self.team or '-'}:{self.channel}:{self.ts}"


def without_surrogates(text: str) -> str:
    """Replace lone surrogates (broken UTF-8 or JSON escapes) so the text can be encoded again."""
    return _SURROGATE.sub("\ufffd", text)


def unescape(text: str) -> str:
    """Undo Slack's escaping of ``&``, ``<`` and ``>``."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def escape(text: str) -> str:
    """Escape text for Slack so a model cannot write ``<!channel>`` or a mention."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _link(match: re.Match[str]) -> str:
    url, label = match.group(1), match.group(2)
    return url if not label or label == url else f"{label} ({url})"


def plain_text(text: str, bot_user_id: str | None) -> str:
    """A Slack message's text as a person reads it, with the bot's own mention removed."""

    def user(match: re.Match[str]) -> str:
        if match.group(1) == bot_user_id:
            return ""
        return "@" + (match.group(2) or match.group(1))

    text = _USER.sub(user, without_surrogates(text))
    text = _CHANNEL.sub(lambda m: "#" + (m.group(2) or m.group(1)), text)
    text = _SPECIAL.sub(lambda m: m.group(2) or "@" + m.group(1), text)
    text = _LINK.sub(_link, text)
    return unescape(text).strip()


def mentions(text: str, user_id: str | None) -> bool:
    """Whether ``text`` mentions ``user_id`` (as ``<@U…>`` or ``<@U…|name>``)."""
    return bool(user_id) and any(m.group(1) == user_id for m in _USER.finditer(text))


def parse_message(event: Mapping[str, Any], *, bot_user_id: str | None, team: str | None) -> SlackQuestion | None:
    """An app_mention or message event as a question, or None for what komt-bot never answers.

    Ignored: other bots and the bot itself, edits, deletions and every other subtype (joins, topics, ...).
    """
    if event.get("subtype") not in ANSWERED_SUBTYPES or event.get("bot_id") or "edited" in event:
        return None
    user, channel, ts = event.get("user"), event.get("channel"), event.get("ts")
    if not (isinstance(user, str) and isinstance(channel, str) and isinstance(ts, str)) or user == bot_user_id:
        return None
    raw = str(event.get("text") or "")
    thread_ts = event.get("thread_ts")
    in_thread = isinstance(thread_ts, str) and thread_ts != ts
    return SlackQuestion(
        channel=channel,
        user=user,
        ts=ts,
        thread_ts=thread_ts if isinstance(thread_ts, str) and in_thread else ts,
        text=plain_text(raw, bot_user_id),
        team=team or (str(event.get("team") or "") or None),
        is_dm=event.get("channel_type") == "im" or channel.startswith("D"),
        in_thread=in_thread,
        mentions_bot=mentions(raw, bot_user_id),
    )


def _ts_key(ts: str) -> tuple[int, int]:
    seconds, _, fraction = ts.partition(".")
    return int(seconds or 0), int(fraction or 0)


def _turn(message: Mapping[str, Any], *, bot_user_id: str | None, bot_id: str | None) -> Turn | None:
    if message.get("subtype") == ASSISTANT_THREAD_ROOT:
        return None
    raw = str(message.get("text") or "")
    if message.get("user") == bot_user_id or (bot_id and message.get("bot_id") == bot_id):
        root = _QUESTION_ROOT.match(unescape(without_surrogates(raw)))
        if root:
            return Turn(role="user", text=root.group(1))
        text = messages.answer_text(unescape(without_surrogates(raw)))
        return Turn(role="assistant", text=text) if text else None
    if message.get("bot_id") or message.get("subtype") not in ANSWERED_SUBTYPES:
        return None
    text = plain_text(raw, bot_user_id)
    return Turn(role="user", text=text) if text else None


def _fit(turns: list[Turn], max_chars: int) -> list[Turn]:
    kept: list[Turn] = []
    used = 0
    for turn in reversed(turns):
        used += len(turn.text)
        if used > max_chars:
            break
        kept.append(turn)
    return kept[::-1]


def thread_conversation(
    replies: Iterable[Mapping[str, Any]],
    *,
    before_ts: str,
    bot_user_id: str | None,
    bot_id: str | None,
    max_messages: int = 100,
    max_chars: int = MAX_HISTORY_CHARS,
) -> list[Turn]:
    """The turns of a thread before the message ``before_ts`` (which is the question itself).

    Only the last ``max_messages`` messages are read, and the oldest turns are dropped beyond ``max_chars``.
    """
    limit = _ts_key(before_ts)
    ordered = sorted(
        (m for m in replies if isinstance(m.get("ts"), str) and _ts_key(m["ts"]) < limit),
        key=lambda m: _ts_key(m["ts"]),
    )
    ordered = ordered[-max_messages:] if max_messages > 0 else []
    turns = (_turn(m, bot_user_id=bot_user_id, bot_id=bot_id) for m in ordered)
    return _fit(merge_turns(t for t in turns if t is not None), max_chars)
