"""What every app benchmark needs: a fresh ``python app.py`` on a free port, clients that cost the server little,
and a run's state read from its folder."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]  # the repository, where app.py is


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served_app(port: int, options: list[str] | None = None, timeout: float = 120.0,
                env: dict[str, str] | None = None) -> Iterator[tuple[subprocess.Popen, float]]:
    """``python app.py`` on ``port`` (``env`` added to the environment) while the block runs: yields the process and
    the seconds until it answered HTTP, and stops it at the end."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "app.py", "--port", str(port), *(options or [])], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"app.py exited with code {process.returncode} before serving")
            if time.perf_counter() - start > timeout:
                raise RuntimeError(f"app.py did not serve within {timeout:.0f} s")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        yield process, time.perf_counter() - start
    finally:
        process.terminate()
        process.wait(timeout=30)


def timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def loopback_client(url: str, **httpx_kwargs: Any):
    """A ``gradio_client.Client`` of the app this benchmark serves on the loopback, over plain HTTP.

    gradio_client makes a new httpx client for every request (two per request, two per open), and an httpx client
    that verifies certificates loads the CA bundle first: 38 ms of CPU each time here, so ~75 ms of every request's
    time and ~0.1 s of every open were the client's own work, timed as the app's latency and taken from the
    app's cores. Over plain HTTP no certificate is ever checked, so ``ssl_verify=False`` skips nothing.
    """
    from gradio_client import Client

    return Client(url, verbose=False, download_files=False, ssl_verify=False, httpx_kwargs=httpx_kwargs or None)


def run_state(client, run_id: str) -> tuple[str, str]:
    """(status, progress) of a run in the app's /runs table."""
    table = client.predict(api_name="/runs")
    row = next(row for row in table["data"] if row[0] == run_id)
    return row[table["headers"].index("status")], row[table["headers"].index("progress")]


def stop_run(client, run_id: str | None, timeout: float = 120.0) -> None:
    """Cancel a run the benchmark launched and wait until its process has ended: app.py leaves runs training when
    it stops, and a run still writing its final files into the temporary runs folder would outlive it."""
    if run_id is None or run_state(client, run_id)[0] not in ("queued", "running"):
        return
    client.predict(run_id, api_name="/cancel_run")
    deadline = time.monotonic() + timeout
    while run_state(client, run_id)[0] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
