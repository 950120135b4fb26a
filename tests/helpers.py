"""What several test files share and pytest fixtures cannot give: paths, polling, the web app on a free port.

Fixtures live in ``conftest.py``; these are plain functions and constants, imported as ``tests.helpers``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from explorer.checkpoints import save_checkpoint
from explorer.data import load_dataset
from explorer.models import build_model
from explorer.training import loop
from explorer.training.run_processes import lower_priority
from explorer.training.runs import RunManager

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "checkpoints"
CE_DEMO, CSKD_DEMO, IPS_DEMO = (DEMO / f"mnist5k-small_cnn-{method}" for method in ("ce", "cskd", "ips"))
CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
                 if p and Path(p).is_file()), None)  # the browser tests' browser (Debian's chromium)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
T = TypeVar("T")


def fake_study_run(out: Path, run_id: str, accuracy: float, nll: float = 0.1, ece: float = 0.01, brier: float = 0.02,
                   state: str = "finished", images_per_s: float | None = None, config: dict | None = None) -> Path:
    """A run folder written by hand: its status, two epoch records (the second with these test metrics, the first
    with others, so a reader of the final epoch is told apart) and, when given, its config."""
    run = out / run_id
    run.mkdir(parents=True)
    (run / "status.json").write_text(json.dumps({"state": state}))
    final = {"kind": "epoch", "epoch": 2, "test_accuracy": accuracy, "test_nll": nll, "test_ece": ece,
             "test_brier": brier, "images_per_s": images_per_s}
    records = [{"kind": "epoch", "epoch": 1, "test_accuracy": 0.5, "test_nll": 1.0, "test_ece": 0.1,
                "test_brier": 0.5}, final]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if config:
        (run / "config.json").write_text(json.dumps(config))
    return run


def wait_for(predicate: Callable[[], T], timeout: float, what: str) -> T:
    """Poll ``predicate`` every 20 ms until it returns something truthy; fail after ``timeout`` seconds.

    Waiting for another process without racing it: poll with a deadline, never a bare sleep.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def wait_while_progressing(predicate: Callable[[], T], progress: Callable[[], object], stall_s: float,
                           what: str) -> T:
    """Poll ``predicate`` until it returns something truthy; fail only when ``progress()`` (a fingerprint of the
    work waited for, e.g. the run folders' files) has not changed for ``stall_s`` seconds.

    A loaded machine makes the work slower, not stuck: the bound is on a stretch without any progress, scaled by
    the caller to the work's measured cost (``run_startup_seconds``), never on the whole wait.
    """
    last, deadline = progress(), time.monotonic() + stall_s
    while True:
        value = predicate()
        if value:
            return value
        now = progress()
        if now != last:
            last, deadline = now, time.monotonic() + stall_s
        elif time.monotonic() > deadline:
            raise AssertionError(f"no progress for {stall_s:.0f} s while waiting for {what}")
        time.sleep(0.02)


def run_startup_seconds() -> float:
    """Seconds a training process's start-up work (Python, torch and the training loop imported) takes on this
    machine now, in a process as nice as the run manager makes its runs: the longest stretch in which a run
    writes nothing, so the unit of the bounds of ``wait_while_progressing``."""
    start = time.monotonic()
    child = subprocess.Popen([sys.executable, "-c", "import explorer.training.loop"], cwd=ROOT,
                             start_new_session=True)
    lower_priority(child.pid)
    child.wait()
    return time.monotonic() - start


def files_written(*folders: Path) -> list:
    """A fingerprint of what is written in ``folders``: each file's name, size and modification time."""
    seen = []
    for folder in folders:
        for path in sorted(folder.iterdir()) if folder.is_dir() else ():
            try:
                seen.append((path.name, path.stat().st_size, path.stat().st_mtime_ns))
            except FileNotFoundError:  # replaced (written atomically) while we looked: that is progress too
                seen.append((path.name, None, None))
    return seen


def stop_at_step(monkeypatch, stop_step: int) -> None:
    """SIGTERM this process right after optimiser step ``stop_step`` of ``loop.main``, as a cancel from the run
    manager would (``monkeypatch.undo()`` lets the next run in the test train undisturbed)."""
    original = loop.train_step

    def step_then_signal(s):
        parts = original(s)
        if s.step == stop_step:
            os.kill(os.getpid(), signal.SIGTERM)
        return parts

    monkeypatch.setattr(loop, "train_step", step_then_signal)


def slow_start_trainer(folder: Path) -> Path:
    """An executable that stands in for the interpreter in ``python -m explorer.train ARGS``: the training CLI whose
    start-up blocks (opening the dataset touches ``folder/in_setup`` and waits in Python for a minute), so a test
    can signal a run deterministically while it starts."""
    script = folder / "slow_start_python"
    script.write_text(f"""#!{sys.executable}
import sys, time
sys.path.insert(0, {str(ROOT)!r})
from explorer.training import loop

def blocking_open_dataset(*args, **kwargs):
    open({str(folder / "in_setup")!r}, "w").close()
    try:  # as a decoder that skips unreadable images does: this must not swallow a cancel
        time.sleep(60)
    except Exception:
        pass
    raise SystemExit("slow_start_python: start-up was not interrupted")

assert sys.argv[1:3] == ["-m", "explorer.train"], sys.argv
loop.open_dataset = blocking_open_dataset
sys.exit(loop.main(sys.argv[3:]))
""")
    script.chmod(0o755)
    return script


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
def running_app(runs_dir: Path, max_runs: int = 2, checkpoints_dir: Path = DEMO) -> Iterator[str]:
    """The app on 127.0.0.1 with the checkpoints of ``checkpoints_dir`` (the demo ones) and ``runs_dir``; yields its
    URL.

    At the end every run it started is cancelled and waited for, so no training process outlives the test.
    """
    from explorer.ui.app import build_app

    runs = RunManager(runs_dir, max_concurrent=max_runs, grace_s=5.0)
    demo = build_app(runs, checkpoints_dir=checkpoints_dir, device="cpu")
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


# Runs of the run manager (training_runs and training_ddp)
QUICK = {"dataset": "digits", "epochs": 1, "log_every": 3}  # ~1 s of training after ~5 s of start-up
ENDLESS = {"dataset": "digits", "epochs": 500, "log_every": 1}  # trains until it is stopped


def leader_pid(manager: RunManager, run_id: str) -> int:
    """The pid of the process-group leader the run manager started for ``run_id``."""
    return json.loads((manager.run_dir(run_id) / "launch.json").read_text())["process"]["pid"]


def group_gone(pgid: int) -> bool:
    """No process is left in process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def training(manager: RunManager, run_id: str) -> bool:
    """The run's own training loop has reported a step (its SIGTERM handler is installed by then)."""
    info = manager.info(run_id)
    return info.state == "running" and info.progress > 0


def local_slurm() -> str:
    """The SLURM_CONF of a running SLURM cluster for the tests: the one the environment names, else the one-node
    cluster of scripts/local-slurm (started here when it is not running: the script is idempotent). Skips the
    test with the reason when none can run (no submitit, no SLURM packages, not root)."""
    import subprocess

    import pytest

    pytest.importorskip("submitit", reason="the slurm executor needs submitit (requirements.txt)")
    conf = os.environ.get("SLURM_CONF") or "/tmp/explorer-local-slurm/slurm.conf"
    env = {**os.environ, "SLURM_CONF": conf}
    try:
        up = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True, timeout=20)
        if up.returncode or not up.stdout.strip():
            start = subprocess.run([str(ROOT / "scripts/local-slurm/start.sh")], capture_output=True, text=True,
                                   timeout=120)
            if start.returncode:
                pytest.skip(f"no SLURM cluster: {start.stderr.strip()}")
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"no SLURM cluster: {exc}")
    os.environ["SLURM_CONF"] = conf  # the tests' SLURM commands and submitit's sbatch read it
    return conf
