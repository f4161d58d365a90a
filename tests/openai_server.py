"""A real OpenAI-compatible server for the ``openai`` engine's tests: ``transformers serve`` on the tiny model, on CPU.

``transformers serve`` (transformers 5, the ``serving`` extra) preloads a local model directory and answers
``/v1/completions`` with server-sent events. :func:`transformers_server` starts it on a free loopback port and
returns once it has answered a one-token completion (never after a fixed sleep); the session fixture
``openai_server`` shares one for every test that does not kill it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.private_redis import free_port

START_TIMEOUT_SECONDS = 120.0  # ~20 s on an idle 2-core machine; a loaded one takes longer


@dataclass
class ServerProcess:
    """A running ``transformers serve``: where it listens, what it serves, and its process."""

    process: subprocess.Popen[bytes]
    port: int
    model: str
    log: Path

    @property
    def base_url(self) -> str:
        """The API root, as ``KOMT_OPENAI__BASE_URL`` takes it."""
        return f"http://127.0.0.1:{self.port}/v1"

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the server's output (for a failure message)."""
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL, the way a crash or an OOM kill ends it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


def _command() -> list[str]:
    script = Path(sys.executable).with_name("transformers")
    if not script.exists():
        pytest.fail(f"no {script}: install the dev extra (pip install -e '.[dev]' brings transformers[serving])")
    return [str(script), "serve"]


def wait_until_ready(server: ServerProcess, timeout: float = START_TIMEOUT_SECONDS) -> None:
    """Return once the server lists its model and has answered a one-token completion; fail with its log if not."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5.0) as client:
        while True:
            if server.process.poll() is not None:
                pytest.fail(f"transformers serve exited with {server.process.returncode}:\n{server.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                models = client.get(f"{server.base_url}/models")
                if models.status_code == 200 and server.model in models.text:
                    answer = client.post(
                        f"{server.base_url}/completions",
                        json={"model": server.model, "prompt": "안녕", "max_tokens": 1, "temperature": 0},
                        timeout=60.0,
                    )
                    if answer.status_code == 200 and answer.json()["choices"]:
                        return
            if time.monotonic() > deadline:
                pytest.fail(f"transformers serve did not answer within {timeout:g} s:\n{server.log_tail()}")
            time.sleep(0.1)


@contextlib.contextmanager
def transformers_server(model_dir: Path, work_dir: Path, port: int | None = None) -> Iterator[ServerProcess]:
    """``transformers serve MODEL_DIR`` on 127.0.0.1 and ``port`` (default a free one), ready; killed afterwards."""
    port = port or free_port()
    log = work_dir / f"transformers-serve-{port}.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "OMP_NUM_THREADS": "1"}
    command = [*_command(), str(model_dir), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=work_dir, env=env, stdout=output, stderr=subprocess.STDOUT)
    server = ServerProcess(process, port, str(model_dir), log)
    try:
        wait_until_ready(server)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


@pytest.fixture(scope="session")
def openai_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One ``transformers serve`` of the tiny model's ``base/`` for the whole session."""
    with transformers_server(tiny_model_dir / "base", tmp_path_factory.mktemp("openai-server")) as server:
        yield server
