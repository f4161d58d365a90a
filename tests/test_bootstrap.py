"""scripts/bootstrap keeps a newcomer informed through pip's long silent steps (a fake pip stands in for pip)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAKE_PIP = """#!/usr/bin/env bash
echo "Collecting torch==2.13.0"
echo "  Downloading torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl (190.5 MB)"
echo "Collecting yarl>=1.0"
echo "  Downloading yarl-1.9.4-cp311-cp311-manylinux_2_17_x86_64.whl (1.5 MB)"
sleep 0.6
echo "Installing collected packages: yarl, idna, torch"
sleep 0.6
echo "Successfully installed idna-3.7 torch-2.13.0 yarl-1.9.4"
"""


def test_pip_steps_show_progress_and_the_full_output_goes_to_the_log(tmp_path: Path) -> None:
    fake = tmp_path / "bin" / "python"
    fake.parent.mkdir()
    fake.write_text(FAKE_PIP)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    (tmp_path / ".venv").mkdir()
    # Only the script's functions, not its installs: the tick interval, the ticker and pip_install.
    functions = "/^TICK_SECONDS=/p;/^ticker() {/,/^}$/p;/^pip_install() {/,/^}$/p"
    script = f"set -euo pipefail; source <(sed -n '{functions}' {ROOT / 'scripts' / 'bootstrap'}); pip_install x"
    env = os.environ | {"PATH": f"{fake.parent}:{os.environ['PATH']}", "KOMT_BOOTSTRAP_TICK_SECONDS": "0.25"}
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)

    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    ticks = [i for i, line in enumerate(lines) if line.startswith("   ... still working (")]
    steps = [line for i, line in enumerate(lines) if i not in ticks]
    assert steps == [
        "   + torch",
        "   downloading torch (190.5 MB)",
        "   + yarl",  # a small download: no line of its own
        "   installing 3 package(s) (the longest step: up to a minute without output)",
        "   installed 3 package(s)",
    ]
    assert ticks and ticks[-1] > lines.index(steps[3])  # the silent install step is not silent
    assert "Installing collected packages: yarl, idna, torch" in (tmp_path / ".venv" / "pip.log").read_text()
