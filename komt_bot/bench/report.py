"""The benchmark's human-readable table."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from komt_bot.bench.measure import BenchReport


def render(report: BenchReport, console: Console) -> None:
    """The human-readable table."""
    m = report.machine
    console.print(f"[bold]machine[/]: {m['cpu']} · {m['cores']} cores · {m['memory_gb']} GB · GPU {m['gpu'] or 'none'}")
    console.print(f"[bold]model[/]: {report.model}")
    table = Table(
        "path", "conc.", "reqs", "tokens", "tok/s", "TTFT p50", "TTFT p95", "E2E p50", "E2E p95", "peak RSS MB"
    )
    for r in report.results:
        table.add_row(
            r.path,
            str(r.concurrency),
            str(r.requests),
            str(r.tokens),
            f"{r.tokens_per_second:.1f}",
            f"{r.ttft_p50:.2f}" if r.ttft_p50 is not None else "-",
            f"{r.ttft_p95:.2f}" if r.ttft_p95 is not None else "-",
            f"{r.e2e_p50:.2f}",
            f"{r.e2e_p95:.2f}",
            f"{r.peak_rss_mb:.0f}" + (f" (GPU {r.peak_gpu_mb:.0f})" if r.peak_gpu_mb else ""),
        )
    console.print(table)
    for name, value in report.ratios.items():
        console.print(f"  {name}: [bold]{value:.2f}x[/]")
