"""The soak's summary: counts, latencies, faults and machine, as a rich table or one JSON object."""

from __future__ import annotations

import math
import os
import platform
import subprocess
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from komt_bot.dev.faults import FaultRecord
from komt_bot.dev.verdict import Verdict

ACCEPTABLE_WITH_BUSY_OK = frozenset({"busy"})


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile (``fraction`` in 0..1) of ``values``, or None when there are none."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def machine_info(model: str, tokens: int, workers: int) -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = "?"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "?")
    except OSError:
        pass
    try:
        redis = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, timeout=10, check=False)
        redis_version = redis.stdout.split()[2].removeprefix("v=") if redis.stdout.count(" ") >= 2 else "?"
    except (OSError, subprocess.TimeoutExpired):
        redis_version = "?"
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "redis": redis_version,
        "model": model,
        "tokens": tokens,
        "workers": workers,
    }


@dataclass
class SoakSummary:
    """Everything one soak run found."""

    conversations: int
    answered: int
    empty_answers: int
    error_replies: dict[str, int]
    duplicated: int
    blanked_leftovers: int  # of the duplicated: replies whose only fault is messages left blanked after a restart
    missing: int
    dead_lettered: int
    restarted_replies: int  # answers that restarted on another attempt (takeovers): expected under faults
    one_message_replies: int  # replies that used exactly one message
    one_terminal_streams: int  # jobs whose output stream holds exactly one terminal event
    first_visible_p50: float | None
    first_visible_p95: float | None
    final_p50: float | None
    final_p95: float | None
    wall_seconds: float
    busy_ok: bool
    faults: list[dict[str, Any]]
    fault_notes: list[str]
    machine: dict[str, Any]
    options: dict[str, Any]
    problems: list[dict[str, Any]] = field(default_factory=list)
    logs: dict[str, list[str]] = field(default_factory=dict)
    via: str = "ask"
    half_written: int = 0  # Slack mode: replies still being written when the harness stopped waiting
    platform: dict[str, Any] = field(default_factory=dict)  # Slack mode: calls, 429s, latencies at the fake
    missed_faults: list[str] = field(default_factory=list)  # planned fault kinds that hit no job: the run fails

    @property
    def _allowed(self) -> frozenset[str]:
        return ACCEPTABLE_WITH_BUSY_OK if self.busy_ok else frozenset()

    @property
    def unacceptable_errors(self) -> int:
        """Error replies that fail the run (all of them, but busy ones under ``--busy-ok``)."""
        return sum(n for kind, n in self.error_replies.items() if kind not in self._allowed)

    @property
    def ok(self) -> bool:
        """No loss, no mix or duplicate, nothing half-written, no error reply (but accepted busy ones), and every
        planned fault hit the load."""
        clean = self.missing == 0 and self.duplicated == 0 and self.half_written == 0
        return clean and self.unacceptable_errors == 0 and not self.missed_faults

    def failed(self, verdict: Verdict) -> bool:
        """Whether one conversation counts against the run."""
        error = verdict.error_kind is not None and verdict.error_kind not in self._allowed
        return bool(verdict.missing or verdict.duplicated or verdict.half_written or error)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with ``ok``."""
        data = asdict(self)
        for key in ("first_visible_p50", "first_visible_p95", "final_p50", "final_p95", "wall_seconds"):
            data[key] = None if data[key] is None else round(data[key], 3)
        data["ok"] = self.ok
        return data


def summarize(
    verdicts: Sequence[Verdict],
    *,
    dead_lettered: int,
    wall_seconds: float,
    busy_ok: bool,
    faults: Sequence[FaultRecord],
    fault_notes: Sequence[str],
    machine: dict[str, Any],
    options: dict[str, Any],
    via: str = "ask",
    platform: dict[str, Any] | None = None,
) -> SoakSummary:
    """Add up the verdicts."""
    answered = [v for v in verdicts if v.answered]
    return SoakSummary(
        conversations=len(verdicts),
        answered=len(answered),
        empty_answers=sum(v.empty for v in answered),
        error_replies=dict(sorted(Counter(v.error_kind for v in verdicts if v.error_kind).items())),
        duplicated=sum(v.duplicated for v in verdicts),
        blanked_leftovers=sum(v.blanked > 0 and len(v.problems) == 1 for v in verdicts),
        missing=sum(v.missing is not None for v in verdicts),
        dead_lettered=dead_lettered,
        restarted_replies=sum(v.attempts > 1 for v in answered),
        one_message_replies=sum(v.messages == 1 for v in verdicts),
        one_terminal_streams=sum(v.terminals == 1 for v in verdicts),
        first_visible_p50=percentile([v.first_visible for v in answered if v.first_visible is not None], 0.5),
        first_visible_p95=percentile([v.first_visible for v in answered if v.first_visible is not None], 0.95),
        final_p50=percentile([v.final for v in answered if v.final is not None], 0.5),
        final_p95=percentile([v.final for v in answered if v.final is not None], 0.95),
        wall_seconds=wall_seconds,
        busy_ok=busy_ok,
        faults=[f.as_dict() for f in faults],
        fault_notes=list(fault_notes),
        machine=machine,
        options=options,
        via=via,
        half_written=sum(v.half_written is not None for v in verdicts),
        platform=dict(platform or {}),
    )


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _platform_rows(platform: dict[str, Any]) -> list[tuple[str, str]]:
    """The figures measured at the fake Slack."""

    def pair(name: str) -> str:
        return f"{_seconds(platform.get(f'{name}_p50'))} / {_seconds(platform.get(f'{name}_p95'))}"

    limits = "Slack's tiers enforced" if platform.get("slack_limits") else "no limits enforced"
    calls, refused = platform.get("calls", 0), platform.get("rate_limited", 0)
    return [
        ("platform calls / 429s", f"{calls} / {refused} ({platform.get('rate_limited_share', 0.0):.1%}; {limits})"),
        ("placeholder p50 / p95", pair("placeholder")),
        ("first words after the worker p50 / p95", pair("first_words")),
        ("final after done p50 / p95", pair("final_after_done")),
    ]


def render(summary: SoakSummary, console: Console) -> None:
    """The summary as tables: results, faults, machine; then any problem's evidence."""
    table = Table(title="komt-bot soak", show_header=False)
    errors = ", ".join(f"{kind} {n}" for kind, n in summary.error_replies.items()) or "0"
    rows = [
        ("conversations", str(summary.conversations)),
        ("answered", f"{summary.answered} ({summary.empty_answers} empty, {summary.restarted_replies} restarted)"),
        ("error replies", errors + (" (busy accepted)" if summary.busy_ok and "busy" in summary.error_replies else "")),
        ("duplicated / mixed", f"{summary.duplicated} ({summary.blanked_leftovers} only blanked leftover messages)"),
        ("missing", str(summary.missing)),
        ("one-message replies", str(summary.one_message_replies)),
        ("streams with one terminal event", str(summary.one_terminal_streams)),
        ("dead-lettered", str(summary.dead_lettered)),
        ("first visible p50 / p95", f"{_seconds(summary.first_visible_p50)} / {_seconds(summary.first_visible_p95)}"),
        ("final p50 / p95", f"{_seconds(summary.final_p50)} / {_seconds(summary.final_p95)}"),
        ("wall time", _seconds(summary.wall_seconds)),
    ]
    if summary.via == "slack":
        rows[5:5] = [("half-written", str(summary.half_written))]
        rows += _platform_rows(summary.platform)
    rows.append(("result", "[green]ok[/green]" if summary.ok else "[red]FAILED[/red]"))
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    if summary.faults or summary.fault_notes:
        faults = Table(title="faults injected")
        for column in ("kind", "at", "target", "seconds", "detail"):
            faults.add_column(column)
        for f in summary.faults:
            seconds = "" if f["seconds"] is None else f"{f['seconds']:.2f}"
            faults.add_row(f["kind"], f"{f['at']:.1f} s", f["target"], seconds, f["detail"])
        console.print(faults)
        for note in summary.fault_notes:
            console.print(f"note: {note}", markup=False)
    machine = ", ".join(f"{k} {v}" for k, v in summary.machine.items())
    console.print(f"machine: {machine}", markup=False, highlight=False)
    for problem in summary.problems:
        console.print_json(data=problem)
    for name, lines in summary.logs.items():
        console.print(f"--- {name} (last {len(lines)} lines)", markup=False)
        console.print("\n".join(lines), markup=False, highlight=False)
