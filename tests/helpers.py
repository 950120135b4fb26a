"""Launch the web app inside the test process on a free port (shared by the API and browser tests)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from explorer.checkpoints import save_checkpoint
from explorer.data import load_dataset
from explorer.models import build_model

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "checkpoints"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def save_digits_run(runs_dir: Path, name: str = "digits-run") -> Path:
    """An (untrained) small_cnn checkpoint for the 8x8 digits: it must be refused on mnist5k."""
    dataset = load_dataset("digits")
    card = {"dataset": "digits", "model": "small_cnn", "method": "ce", "in_channels": 1, "num_classes": 10,
            "class_names": list(dataset.class_names), "mean": list(dataset.mean), "std": list(dataset.std),
            "image_size": list(dataset.image_size)}
    return save_checkpoint(runs_dir / name, build_model("small_cnn", 1, 10), card)


@contextmanager
def running_app(runs_dir: Path, max_runs: int = 2) -> Iterator[str]:
    """The app on 127.0.0.1 with the demo checkpoints and ``runs_dir``; yields its URL.

    At the end every run it started is cancelled and waited for, so no training process outlives the test.
    """
    from explorer.training.runs import RunManager
    from explorer.ui import build_app

    runs = RunManager(runs_dir, max_concurrent=max_runs, grace_s=5.0)
    demo = build_app(runs, checkpoints_dir=DEMO, device="cpu")
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, show_error=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()
        for info in runs.runs():
            if info.state in ("queued", "running"):
                runs.cancel(info.run_id)
        deadline = time.monotonic() + 30
        while runs.has_active_runs() and time.monotonic() < deadline:  # SIGKILL follows SIGTERM after grace_s
            time.sleep(0.1)
        runs.close()
        assert not runs.has_active_runs(), "a training process outlived the test app"
