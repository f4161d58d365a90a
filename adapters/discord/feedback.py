"""The 👍/👎 buttons under a finished Discord answer: persistent buttons whose ``custom_id`` names the job.

Like the Stop button they are dynamic items (discord.py keeps no state per message): ``komt:fb:up:{job id}``
finds the answer's job again after any restart of the bot, and the click is recorded on the job by
:func:`komt_bot.chat.feedback.record_click`.
"""

from __future__ import annotations

import re
from typing import Any, Protocol, runtime_checkable

import discord

from komt_bot.chat.feedback import VALUE_PATTERN, button_value, parse_button_value
from komt_bot.jobs import RATINGS, Rating

FEEDBACK_PREFIX = "komt:fb:"
EMOJI: dict[Rating, str] = {"up": "👍", "down": "👎"}


@runtime_checkable
class FeedbackHandler(Protocol):
    """What the Discord client offers the feedback buttons (avoids importing the client here)."""

    async def rate_answer(self, interaction: discord.Interaction[Any], job_id: str, rating: Rating) -> None:
        """Handle a click on the ``rating`` button of the answer of ``job_id``."""
        ...


class FeedbackButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=re.compile(re.escape(FEEDBACK_PREFIX) + VALUE_PATTERN),
):
    """One of the two feedback buttons of an answer."""

    def __init__(self, rating: Rating, job_id: str) -> None:
        super().__init__(
            discord.ui.Button(
                emoji=EMOJI[rating],
                style=discord.ButtonStyle.secondary,
                custom_id=FEEDBACK_PREFIX + button_value(rating, job_id),
            )
        )
        self.rating: Rating = rating
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> FeedbackButton:
        """Rebuild the button from a click."""
        parsed = parse_button_value(match.string.removeprefix(FEEDBACK_PREFIX))
        assert parsed is not None, "the template only matches our values"
        return cls(*parsed)

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        """Pass the click to the client."""
        if isinstance(interaction.client, FeedbackHandler):
            await interaction.client.rate_answer(interaction, self.job_id, self.rating)


def feedback_view(job_id: str) -> discord.ui.View:
    """A view holding the 👍 and 👎 buttons of the answer of ``job_id``."""
    view = discord.ui.View(timeout=None)
    for rating in RATINGS:
        view.add_item(FeedbackButton(rating, job_id))
    return view
