"""The Stop button and the link from a Discord message or interaction to its job.

Every job the adapter submits uses ``discord:{id}`` as its idempotency key, where ``id`` is the message or
interaction that asked, and the job id that key stands for (:func:`~komt_bot.jobs.job_id_for_key`). The Stop
button carries the job id in its ``custom_id`` (``komt:stop:{job id}``), like the 👍/👎 buttons, so a click finds
the job again (even after a restart of the bot) without any state kept in this process.
"""

from __future__ import annotations

import re
from typing import Any, Protocol, runtime_checkable

import discord

from komt_bot.errors import JobNotFoundError
from komt_bot.jobs import JobRequest, job_id_for_key
from komt_bot.queue import JobQueue

STOP_LABEL = "중단 / Stop"
STOP_PREFIX = "komt:stop:"


def idempotency_key(origin_id: int | str) -> str:
    """The queue idempotency key of the message or interaction ``origin_id``."""
    return f"discord:{origin_id}"


def origin_job_id(origin_id: int | str) -> str:
    """The id of the job the message or interaction ``origin_id`` makes (known before it is submitted)."""
    return job_id_for_key(idempotency_key(origin_id))


async def request_for_origin(queue: JobQueue, origin_id: int | str) -> JobRequest | None:
    """The request (conversation included) the message or interaction ``origin_id`` submitted, while kept."""
    try:
        return (await queue.job(origin_job_id(origin_id))).request
    except JobNotFoundError:
        pass
    # Asked before job ids were derived from the key (an earlier release): its job has a random id.
    job_id = await queue.job_for_key(idempotency_key(origin_id))
    try:
        return (await queue.job(job_id)).request if job_id is not None else None
    except JobNotFoundError:
        return None


@runtime_checkable
class StopHandler(Protocol):
    """What the Discord client offers the Stop button (avoids importing the client here)."""

    async def stop_reply(self, interaction: discord.Interaction[Any], value: str) -> None:
        """Handle a click on a Stop button whose custom id ends in ``value`` (a job id)."""
        ...


class StopButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=re.compile(re.escape(STOP_PREFIX) + r"(?P<value>[0-9a-f]+)"),
):
    """The Stop button under a running answer; its custom id names the answer's job.

    A button posted by an earlier release names the message or interaction that asked instead (all digits, longer
    than a job id): :func:`~komt_bot.chat.stop.stop_pressed` tells the two apart.
    """

    def __init__(self, value: str) -> None:
        super().__init__(
            discord.ui.Button(label=STOP_LABEL, style=discord.ButtonStyle.danger, custom_id=STOP_PREFIX + value)
        )
        self.value = value

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> StopButton:
        """Rebuild the button from a click."""
        return cls(match["value"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        """Pass the click to the client."""
        if isinstance(interaction.client, StopHandler):
            await interaction.client.stop_reply(interaction, self.value)


def stop_view(job_id: str) -> discord.ui.View:
    """A view holding only the Stop button of the answer of ``job_id`` (fully dynamic: discord.py keeps no
    per-message state for it)."""
    view = discord.ui.View(timeout=None)
    view.add_item(StopButton(job_id))
    return view
