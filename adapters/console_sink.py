"""The terminal's reply sink: what the shared reply editor shows, printed to a stream that cannot be edited.

A terminal cannot change what it printed, so :class:`ConsoleSink` only appends: the answer's prefix (``komt> ``),
then whatever each new view adds to the text already printed, then the closing line of the final view (stopped,
truncated, an error) on a line of its own. A view that does not carry on from what was printed (the worker restarted
the job and the answer is written again) ends the line, shows the notice, and starts over. Once Ctrl-C is pressed
(:meth:`ConsoleSink.hold`) no more answer text is printed, only the closing line; and an answer that timed out before
any worker began it closes with "no worker took the question", not "took too long".
"""

from __future__ import annotations

import sys
from typing import TextIO

from komt_bot import messages
from komt_bot.chat.editor import MessageView, ReplyLimits, ViewKind

# One message however long the answer (no splitting), and text shown as soon as it is written. The interval is not 0:
# komt_bot.chat.ask.deliver waits this long for the job's next event, so 0 would make it spin; an answer's first
# words are shown at once anyway, and anything an interval held back is shown at the next event or within it.
TERMINAL_LIMITS = ReplyLimits(max_size=sys.maxsize, edit_interval=0.1)


class ConsoleSink:
    """A :class:`~komt_bot.chat.editor.ReplySink` for a terminal: append-only, one reply at a time.

    Status views (the queue position, reconnecting) are the placeholder of a platform's thread; the terminal words
    the wait itself (:mod:`adapters.console`), so a status view is printed only where it takes the place of answer
    text already shown: the restarted-job notice.
    """

    def __init__(self, out: TextIO, *, prefix: str = "") -> None:
        self.out = out
        self.prefix = prefix
        self.finished = False  # the final view, or the closing line of an abandoned reply, is printed
        self._begun = False  # the prefix is printed
        self._shown = ""  # the answer text printed since the prefix
        self._posts = 0
        self._held = False  # Ctrl-C was pressed: no more answer text

    async def post(self, view: MessageView) -> str:
        """Show the reply's first view; its handle is its number (the terminal never posts a second one)."""
        self._posts += 1
        self.show(view)
        return str(self._posts)

    async def edit(self, handle: str, view: MessageView) -> None:
        """Show what ``view`` adds to what is printed."""
        self.show(view)

    def begin(self) -> None:
        """Print the answer's prefix, once: a worker has the job, or the answer's first words arrived."""
        if not self._begun and not self.finished:
            self._begun = True
            self._write(self.prefix)

    def hold(self) -> None:
        """Print no more answer text (Ctrl-C was pressed): what follows is only the reply's closing line."""
        self._held = True

    def show(self, view: MessageView) -> None:
        """Print what ``view`` adds to the terminal."""
        if self.finished or view.kind is ViewKind.BLANK:
            return
        if self._held:
            if view.kind is ViewKind.FINAL:
                tail = view.body.rpartition("\n\n")[2]
                self.abandon(tail if messages.is_status(tail) else messages.STOPPED)
            return
        if view.kind is ViewKind.FINAL and view.body == messages.TIMEOUT and not self._begun:
            self.abandon(messages.TERMINAL_NOT_TAKEN)  # the job never left the queue
            return
        if view.kind is ViewKind.STATUS:
            if self._shown:  # the answer so far is void: the worker starts it again
                self._start_over(view.body)
            return
        body = view.body
        if not body.startswith(self._shown):
            self._start_over(None)
        if view.kind is ViewKind.ANSWER:
            self.begin()
            self._write(body[len(self._shown) :])
            self._shown = body
            return
        rest = body[len(self._shown) :]
        if self._shown and rest.startswith("\n\n"):
            rest = rest[1:]  # the editor sets a closing line apart with a blank line; here it is the next line
        elif not self._shown and self._begun and self.prefix:
            rest = "\n" + rest  # a closing line alone goes below the prefix
        self.finished = True
        self._write(rest + "\n")

    def abandon(self, closing: str) -> None:
        """End the reply with ``closing`` on its own line, without waiting for its final view."""
        if self.finished:
            return
        self.finished = True
        on_a_line = bool(self._shown) or (self._begun and bool(self.prefix))
        self._write(("\n" if on_a_line else "") + closing + "\n")

    def _start_over(self, notice: str | None) -> None:
        self._write("\n" + (notice + "\n" if notice else ""))
        self._shown = ""
        self._begun = False

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()
