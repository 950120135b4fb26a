"""The training processes of ``RunManager``: started in free slots (a process group each, nicer than the app,
on the least busy GPUs), watched by a small thread, and settled when they end. A mixin of ``RunManager``,
which holds the queue and the active processes."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from explorer.checkpoints import WEIGHTS
from explorer.training.processes import ProcessGroup, process_identity
from explorer.training.runfolder import (
    FINAL_STATES,
    LAUNCH,
    LOG,
    STATUS,
    read_json,
    update_status,
    write_json,
    write_status,
)

__all__ = ["POLL_S", "TRAINING_NICENESS", "ProcessSlots", "lower_priority"]

POLL_S = 0.5
TRAINING_NICENESS = 10
_PROJECT_ROOT = Path(__file__).resolve().parents[2]
_log = logging.getLogger(__name__)


def lower_priority(pid: int) -> None:
    """Make a just-started training process ``TRAINING_NICENESS`` nicer than the app, its session included.

    Called after the start, before the process has forked its workers (they inherit it): a threaded app must not
    use ``preexec_fn``. A run is a session of its own (``start_new_session``), and where the kernel groups
    sessions (Linux's autogroup, on by default) a session's share of the CPU is set by its autogroup's nice value,
    not by its processes': with only the process's niceness raised, the run still took half the CPU from the app
    (docs/classroom.md). An app in no autogroup of its own (an empty ``/proc/self/autogroup``: a process under PID 1
    that never started a session) sits in the root group, where its threads each
    compete at their own niceness with the run's whole session. Where there is no autogroup at all, the process's
    niceness is all there is.
    """
    app_nice = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        os.setpriority(os.PRIO_PROCESS, pid, app_nice + TRAINING_NICENESS)
        own_group = Path("/proc/self/autogroup").read_text().split()  # ["/autogroup-940", "nice", "0"], or []
        app_group_nice = int(own_group[-1]) if own_group else app_nice
        Path(f"/proc/{pid}/autogroup").write_text(str(min(19, app_group_nice + TRAINING_NICENESS)))
    except (OSError, ValueError):  # no autogroup, or the process has exited already (the watcher reports that)
        pass


class ProcessSlots:
    """Starting, watching and settling ``RunManager``'s training processes."""

    def _watch(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self._advance()
            except Exception:  # the watcher must outlive any surprise (a full disk, a vanished folder)
                _log.exception("the run manager's watcher failed to advance; retrying")

    def _advance(self) -> None:
        """Finish ended runs, kill cancelled runs past their grace period, start queued runs in free slots."""
        with self._lock:
            for run_id, process in list(self._active.items()):
                if not process.alive():
                    self._ended(run_id, process)
                elif time.monotonic() >= self._cancel_deadlines.get(run_id, float("inf")):
                    process.signal_group(signal.SIGKILL)
            while self._queue:
                run_id, launch = next(iter(self._queue.items()))  # first in, first out: no run is overtaken
                if sum(p.processes for p in self._active.values()) + launch["processes"] > self.max_concurrent:
                    break
                del self._queue[run_id]
                self._start(run_id, launch)

    def _start(self, run_id: str, launch: dict[str, Any]) -> None:
        run_dir = self.runs_dir / run_id
        if "resumed_at" in launch:  # keeps the progress it had until the training process reports
            update_status(run_dir, "running", "resuming: loading Python, the data, the model and its state")
        else:
            write_status(run_dir, "running", message="starting: loading Python, the data and the model",
                         progress=0.0, step=0, epoch=0, epochs=launch["config"]["epochs"],
                         device=launch["config"]["device"])
        python_path = os.pathsep.join(p for p in (str(_PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "PYTHONPATH": python_path, "PYTHONUNBUFFERED": "1"}
        gpus = self._pick_gpus(launch["processes"]) if launch["config"]["device"] in ("auto", "cuda") else []
        if gpus:  # "auto" and "cuda" mean GPU 0 of what the process sees: show it only the GPUs it was given
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", ",".join(map(str, range(torch.cuda.device_count()))))
            env["CUDA_VISIBLE_DEVICES"] = ",".join(visible.split(",")[i] for i in gpus)
        try:
            with open(run_dir / LOG, "ab") as log:
                popen = subprocess.Popen(launch["command"], stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=env, start_new_session=True)
        except OSError as exc:
            update_status(run_dir, "failed", f"could not start the training process: {exc}")
            return
        lower_priority(popen.pid)
        identity = process_identity(popen.pid)
        process = ProcessGroup(popen.pid, identity[0] if identity else None, launch["processes"], gpus, popen)
        self._active[run_id] = process
        launch["process"] = {"pid": popen.pid, "start": process.start, "gpus": gpus, "started_at": time.time()}
        write_json(run_dir / LAUNCH, launch)

    def _pick_gpus(self, count: int) -> list[int]:
        """The ``count`` visible GPUs running the fewest of this manager's runs (lowest index first)."""
        load = Counter(gpu for process in self._active.values() for gpu in process.gpus)
        return sorted(range(torch.cuda.device_count()), key=lambda gpu: (load[gpu], gpu))[:count]

    def _ended(self, run_id: str, process: ProcessGroup) -> None:
        del self._active[run_id]
        cancelled = self._cancel_deadlines.pop(run_id, None) is not None
        run_dir = self.runs_dir / run_id
        if read_json(run_dir / STATUS).get("state") in FINAL_STATES:
            return  # the training process wrote its own final state
        code = process.returncode
        if cancelled:
            kept = ("the checkpoint of its last finished epoch is kept" if (run_dir / WEIGHTS).is_file() else
                    "it had finished no epoch, so there is no checkpoint")
            update_status(run_dir, "cancelled", f"cancelled; the process was stopped before it could save its "
                                                    f"state ({kept})")
        elif code is None:
            update_status(run_dir, "failed", "interrupted: its process ended without a final state")
        elif code < 0:
            update_status(run_dir, "failed", f"the training process was killed by signal {-code} (out of "
                                                 f"memory?) before it could save its state; see the log")
        else:
            update_status(run_dir, "failed", f"the training process exited with code {code} before it could "
                                                 f"save its state; see the log")
