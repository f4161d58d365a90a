"""The reply editor: splitting before the limit, throttled edits, restarts, the final text."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st

from komt_bot import messages
from komt_bot.chat.ask import deliver
from komt_bot.chat.budget import EditSkipped, Priority
from komt_bot.chat.editor import MessageView, ReplyEditor, ReplyLimits, ViewKind, split_text, utf8_size
from komt_bot.errors import PlatformError, ReplyGoneError
from komt_bot.jobs import JobRequest, Origin, Turn
from komt_bot.queue import JobQueue
from komt_bot.settings import Settings


@given(st.text(alphabet=st.sampled_from("가나다라 \n.abc😀"), max_size=3000), st.integers(8, 400))
def test_split_pieces_fit_and_join_back(text: str, limit: int) -> None:
    pieces = split_text(text, limit, utf8_size)
    assert "".join(pieces) == text
    assert all(utf8_size(p) <= limit for p in pieces)


def test_split_prefers_a_line_break() -> None:
    text = "첫 문단입니다.\n\n" + "둘" * 10
    assert split_text(text, 12) == ["첫 문단입니다.\n\n", "둘" * 10]


@dataclass
class FakeClock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class RecordingSink:
    """A ReplySink that keeps what a platform would show, and when each call happened."""

    clock: FakeClock
    shown: dict[str, str] = field(default_factory=dict)
    calls: list[tuple[float, str, str, bool]] = field(default_factory=list)
    views: list[MessageView] = field(default_factory=list)
    refuse: list[Exception] = field(default_factory=list)  # raised by the next edits, in order

    async def post(self, view: MessageView) -> str:
        handle = f"m{len(self.shown)}"
        self.shown[handle] = view.text
        self.calls.append((self.clock.now, "post", handle, view.active))
        self.views.append(view)
        return handle

    async def edit(self, handle: str, view: MessageView) -> None:
        if self.refuse:
            raise self.refuse.pop(0)
        self.shown[handle] = view.text
        self.calls.append((self.clock.now, "edit", handle, view.active))
        self.views.append(view)


def make_editor(max_size: int = 100) -> tuple[ReplyEditor, RecordingSink, FakeClock]:
    clock = FakeClock()
    sink = RecordingSink(clock)
    editor = ReplyEditor(sink, ReplyLimits(max_size, utf8_size, 1.0), clock=clock, sleep=clock.sleep)
    return editor, sink, clock


async def test_edits_of_one_message_are_at_least_a_second_apart() -> None:
    editor, sink, clock = make_editor(max_size=10_000)
    await editor.status(messages.queued(2))
    for _ in range(50):
        clock.now += 0.1
        editor.append("토큰 ")
        await editor.flush()
    await editor.finish()
    times = [t for t, kind, handle, _ in sink.calls if handle == "m0"]
    # The first words replace the placeholder at once and the final text goes out at once; edits between are paced.
    assert times[1] - times[0] < 0.2
    assert all(b - a >= 0.999 for a, b in itertools.pairwise(times[1:-1]))  # 0.1 s steps add up inexactly
    assert [v.priority for v in sink.views[:2]] == [Priority.FIRST, Priority.FIRST]
    assert sink.views[-1].priority is Priority.FINAL and sink.views[-1].kind is ViewKind.FINAL
    assert sink.shown["m0"] == ("토큰 " * 50).strip() or sink.shown["m0"] == "토큰 " * 50
    assert sink.calls[-1][3] is False  # the final edit removes the Stop button


async def test_a_long_answer_continues_in_more_messages() -> None:
    editor, sink, clock = make_editor(max_size=90)
    for _ in range(40):
        clock.now += 2
        editor.append("한국어 문장입니다. ")
        await editor.flush()
    await editor.finish()
    assert len(sink.shown) > 3
    assert "".join(sink.shown.values()) == "한국어 문장입니다. " * 40
    assert all(utf8_size(text) <= 90 for text in sink.shown.values())


async def test_a_restart_resets_the_reply_instead_of_doubling_it() -> None:
    editor, sink, clock = make_editor(max_size=300)
    editor.append("첫 시도")
    await editor.flush()
    editor.reset()
    clock.now += 2
    await editor.flush()
    assert messages.RESTARTED in sink.shown["m0"]
    editor.append("두 번째 시도")
    await editor.finish()
    assert sink.shown["m0"] == "두 번째 시도"


async def test_an_error_is_written_into_the_reply() -> None:
    editor, sink, _clock = make_editor()
    editor.append("부분 답변")
    await editor.flush()
    await editor.finish(messages.failed("engine_error", "boom"))
    assert sink.shown["m0"].startswith("부분 답변\n\n💥")


async def test_an_empty_answer_says_so() -> None:
    editor, sink, _clock = make_editor()
    await editor.status(messages.queued(0))
    await editor.finish()
    assert "empty answer" in sink.shown["m0"]


async def test_the_first_words_replace_the_placeholder_at_once() -> None:
    editor, sink, clock = make_editor()
    await editor.status(messages.queued(0))
    clock.now += 0.05  # the worker's first words, right after the placeholder
    editor.append("안녕")
    await editor.flush()
    assert sink.shown["m0"].startswith("안녕")
    assert sink.views[0].kind is ViewKind.STATUS and sink.views[1].kind is ViewKind.ANSWER


async def test_an_edit_without_budget_is_skipped_and_the_newer_text_follows() -> None:
    editor, sink, clock = make_editor()
    editor.append("하나")
    await editor.flush()
    sink.refuse.append(EditSkipped("chat.update"))
    clock.now += 2
    editor.append(" 둘")
    await editor.flush()
    assert sink.shown["m0"].startswith("하나") and "둘" not in sink.shown["m0"]
    clock.now += 2
    editor.append(" 셋")
    await editor.flush()
    assert sink.shown["m0"].startswith("하나 둘 셋")


async def test_a_final_text_the_platform_refuses_is_retried_until_shown() -> None:
    editor, sink, _clock = make_editor()
    editor.append("답변")
    await editor.flush()
    sink.refuse += [PlatformError("500"), PlatformError("timeout")]
    assert await editor.finish(feedback="job1")
    assert sink.shown["m0"] == "답변" and editor.shown
    assert sink.views[-1].feedback == "job1"


async def test_a_final_text_refused_past_its_time_is_reported_unshown() -> None:
    clock = FakeClock()
    sink = RecordingSink(clock)
    limits = ReplyLimits(100, utf8_size, 1.0, final_retry_seconds=3.0)
    editor = ReplyEditor(sink, limits, clock=clock, sleep=clock.sleep)
    editor.append("답변")
    await editor.flush()
    sink.refuse += [PlatformError("500")] * 100
    assert not await editor.finish()
    assert not editor.shown


async def test_a_deleted_reply_is_dropped_quietly() -> None:
    editor, sink, clock = make_editor()
    editor.append("답변")
    await editor.flush()
    sink.refuse.append(ReplyGoneError("message_not_found"))
    clock.now += 2
    editor.append(" 계속")
    await editor.flush()
    assert await editor.finish()  # nothing more is written to a message a person deleted
    assert sink.calls[-1][0] < clock.now or len(sink.calls) == 1


async def test_an_answer_whose_final_text_never_shows_says_so_on_its_job(
    settings: Settings, redis_client: aioredis.Redis
) -> None:
    queue = JobQueue(redis_client, settings.queue)
    clock = FakeClock()
    sink = RecordingSink(clock)
    editor = ReplyEditor(
        sink, ReplyLimits(100, utf8_size, 1.0, final_retry_seconds=3.0), clock=clock, sleep=clock.sleep
    )
    request = JobRequest(conversation=[Turn(role="user", text="질문")], origin=Origin(platform="slack"))
    job_id = (await queue.submit(request)).job_id
    await queue.cancel(job_id)  # ends at once: the reply's final text is "stopped"
    sink.refuse += [PlatformError("500")] * 100
    await editor.status(messages.queued(0))
    outcome = await deliver(queue, job_id, editor, timeout_seconds=10)
    assert outcome.kind == "cancelled" and not outcome.shown
    assert (await queue.job(job_id)).raw.get("reply_unshown", "").startswith("cancelled")
