"""How a run shows its progress on stderr: a rich progress bar on a terminal, one plain line per step otherwise."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichBar
from rich.text import Text

from komt_bot.eval.records import ItemRecord


class PlainProgress:
    """One line per answer and per verdict (logs, CI, pipes)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.asked = self.judged_count = self.to_ask = self.to_judge = 0

    def _say(self, line: str) -> None:
        self.console.print(Text(f"eval: {line}"), highlight=False, soft_wrap=True)

    def start(self, questions: int, to_ask: int, to_judge: int) -> None:
        """Say what the run will do."""
        self.to_ask, self.to_judge = to_ask, to_judge
        self._say(f"{questions} questions: {to_ask} to ask, {to_judge} to judge")

    def answered(self, record: ItemRecord) -> None:
        """One line for an answer or a failure."""
        self.asked += 1
        what = f"{len(record.answer or '')} characters" if record.has_answer else f"failed: {record.error}"
        self._say(f"[{self.asked}/{self.to_ask}] answered {record.id}: {what}")

    def judged(self, record: ItemRecord) -> None:
        """One line for a verdict."""
        self.judged_count += 1
        what = f"score {record.score}" if record.status == "judged" else "unjudged (no score in the reply)"
        self._say(f"[{self.judged_count}/{self.to_judge}] judged {record.id}: {what}")


class BarProgress:
    """Two rich progress bars, answers and verdicts."""

    def __init__(self, bar: RichBar) -> None:
        self.bar = bar
        self._ask: TaskID | None = None
        self._judge: TaskID | None = None
        self.unjudged = 0

    def start(self, questions: int, to_ask: int, to_judge: int) -> None:
        """Show the two bars."""
        self._ask = self.bar.add_task("answered", total=to_ask)
        self._judge = self.bar.add_task("judged", total=to_judge)

    def answered(self, record: ItemRecord) -> None:
        """Advance the answers."""
        if self._ask is not None:
            self.bar.advance(self._ask)

    def judged(self, record: ItemRecord) -> None:
        """Advance the verdicts (unjudged ones named in the description)."""
        if self._judge is None:
            return
        if record.status != "judged":
            self.unjudged += 1
            self.bar.update(self._judge, description=f"judged ({self.unjudged} unjudged)")
        self.bar.advance(self._judge)


@contextlib.contextmanager
def progress_display(console: Console) -> Iterator[PlainProgress | BarProgress]:
    """A progress bar when ``console`` is a terminal, else plain lines."""
    if not console.is_terminal:
        yield PlainProgress(console)
        return
    columns = (
        TextColumn("{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with RichBar(*columns, console=console) as bar:
        yield BarProgress(bar)
