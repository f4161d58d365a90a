"""People's ratings of finished answers (the 👍/👎 buttons): one vote a person per answer, kept with the job.

An answer's votes are the hash ``{p}:feedback:{id}`` (person -> rating), which expires with the job's record.
Two small aggregates make ``queue status`` O(1) to keep and cheap to read: ``{p}:feedback_totals`` (rating ->
how many people's current rating it is) and ``{p}:feedback_recent:{rating}`` (the last hour's ratings, by
time). ``scripts/feedback.lua`` changes all three at once, so a second click moves a vote instead of adding one.
"""

from __future__ import annotations

from typing import cast

from komt_bot.errors import JobNotFoundError
from komt_bot.jobs import RATINGS, FeedbackCounts, Rating
from komt_bot.queue.base import QueueBase, now_text
from komt_bot.queue.calls import RecordFeedback
from komt_bot.queue.keys import RECENT_WINDOW_SECONDS
from komt_bot.queue.views import FeedbackStats

FEEDBACK_RECENT_SECONDS = float(RECENT_WINDOW_SECONDS)


class FeedbackOps(QueueBase):
    """Record and read answers' ratings. Every method raises :class:`QueueError` when Redis stays away."""

    async def record_feedback(self, job_id: str, person: str, rating: Rating) -> FeedbackCounts:
        """Record ``person``'s ``rating`` of the answer of ``job_id``; a later click of theirs replaces it.

        Returns the answer's counts after the click, with ``previous`` set to the person's earlier rating (None for
        their first). Raises :class:`JobNotFoundError` when the job's record has expired (or never existed).
        """
        if rating not in RATINGS:
            raise ValueError(f"unknown rating {rating!r}")
        call = RecordFeedback(
            job_id=job_id,
            person=person,
            rating=rating,
            now=now_text(),
            ttl=self.settings.job_ttl_seconds,
            member=f"{job_id}/{person}",
        )
        counts = await self._ride(lambda: self.scripts.run(call), "record the feedback")
        if counts is None:
            raise JobNotFoundError(job_id)
        return counts

    async def feedback(self, job_id: str) -> FeedbackCounts:
        """How the answer of ``job_id`` was rated so far (zero counts when nobody rated it or it expired)."""
        ratings = await self._ride(lambda: self.redis.hvals(self.keys.feedback(job_id)), "read the feedback")
        return FeedbackCounts.from_ratings(str(r) for r in cast(list[str], ratings))

    async def feedback_stats(self, now: float, window: float = FEEDBACK_RECENT_SECONDS) -> FeedbackStats:
        """Ratings given in the last ``window`` seconds (a change counts once, as its new rating) and the totals."""

        async def read() -> list[object]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for rating in RATINGS:
                    pipe.zcount(self.keys.feedback_recent(rating), now - window, "+inf")
                pipe.hgetall(self.keys.feedback_totals)
                return cast(list[object], await pipe.execute())

        *recent, totals = await self._ride(read, "read the feedback counts")
        stored = cast(dict[str, str], totals)
        return FeedbackStats(
            window_seconds=window,
            recent={rating: int(cast(int, count)) for rating, count in zip(RATINGS, recent, strict=True)},
            totals={rating: max(0, int(stored.get(rating) or 0)) for rating in RATINGS},
        )
