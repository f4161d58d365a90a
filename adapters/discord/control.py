"""The Stop button and the link from a Discord message or interaction to its job.

Every job the adapter submits uses ``discord:{id}`` as its idempotency key, where ``id`` is the message or
interaction that asked. The Stop button carries that id in its ``custom_id``, so a click finds the job again
(even after a restart of the bot) without any state kept in this process.
"""

from __future__ import annotations

import re
from typing import Any, Protocol, runtime_checkable

import discord

from komt_bot.jobs import JobRequest
from komt_bot.queue import JobQueue

STOP_LABEL = "중단 / Stop"
STOP_PREFIX = "komt:stop:"


def idempotency_key(origin_id: int | str) -> str:
    """The queue idempotency key of the message or interaction ``origin_id``."""
    return f"discord:{origin_id}"


async def job_for_origin(queue: JobQueue, origin_id: int | str) -> str | None:
    """The id of the job the message or interaction ``origin_id`` made, if it is still remembered."""
    return await queue.job_for_key(idempotency_key(origin_id))


async def request_for_origin(queue: JobQueue, origin_id: int | str) -> JobRequest | None:
    """The request (conversation included) the message or interaction ``origin_id`` submitted."""
    job_id = await job_for_origin(queue, origin_id)
    if job_id is None:
        return None
    return (await queue.job(job_id)).request


@runtime_checkable
class StopHandler(Protocol):
    """What the Discord client offers the Stop button (avoids importing the client here)."""

    async def stop_reply(self, interaction: discord.Interaction[Any], origin_id: str) -> None:
        """Handle a click on the Stop button of the reply to ``origin_id``."""
        ...


class StopButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=re.compile(re.escape(STOP_PREFIX) + r"(?P<origin>[0-9]+)"),
):
    """The Stop button under a running answer; its custom id names the message or interaction that asked."""

    def __init__(self, origin_id: str) -> None:
        super().__init__(
            discord.ui.Button(label=STOP_LABEL, style=discord.ButtonStyle.danger, custom_id=STOP_PREFIX + origin_id)
        )
        self.origin_id = origin_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> StopButton:
        """Rebuild the button from a click."""
        return cls(match["origin"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        """Pass the click to the client."""
        if isinstance(interaction.client, StopHandler):
            await interaction.client.stop_reply(interaction, self.origin_id)


def stop_view(origin_id: int | str) -> discord.ui.View:
    """A view holding only the Stop button (fully dynamic: discord.py keeps no per-message state for it)."""
    view = discord.ui.View(timeout=None)
    view.add_item(StopButton(str(origin_id)))
    return view
