"""OS process plumbing for the run manager: process identity (pid reuse), descendants, process-group signals.

No training knowledge here: a run's processes are a process group whose leader the run manager started (or
adopted from an earlier manager). Linux reads /proc; other systems (macOS) ask ``ps``.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["TRAINING_ENTRY_POINTS", "ProcessGroup", "descendants", "process_identity", "training_process_alive"]

_LINUX_PROC = Path("/proc/self/stat").exists()
TRAINING_ENTRY_POINTS = ("explorer.train", "explorer.transfer")  # the modules a run's process runs


def process_identity(pid: Any) -> tuple[str, str] | None:
    """(start time, command line) of the live process ``pid``; None when there is none or it is a zombie.

    The OS may hand a dead process's pid to a new process; the start time tells the two apart. Linux reads
    /proc; other systems (macOS) ask ``ps``.
    """
    if not isinstance(pid, int) or pid <= 1:  # 0 and 1 never name a run (and killpg(0) is our own group)
        return None
    if _LINUX_PROC:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        after_name = stat.rsplit(")", 1)[1].split()  # the name in (...) may hold spaces
        if after_name[0] in ("Z", "X"):
            return None
        return after_name[19], cmdline.replace(b"\0", b" ").decode(errors="replace").strip()  # field 22: start
    out = subprocess.run(["ps", "-ww", "-o", "stat=", "-o", "lstart=", "-o", "args=", "-p", str(pid)],
                         capture_output=True, text=True)
    parts = out.stdout.split(None, 6)  # stat, the start as 5 words (Thu Nov 27 09:07:01 2025), the command
    if out.returncode or len(parts) < 7 or parts[0].startswith("Z"):
        return None
    return " ".join(parts[1:6]), parts[6].strip()


def training_process_alive(status: Mapping[str, Any]) -> bool:
    """True while the training process that wrote ``status`` (status.json: its ``pid`` and ``pid_start``) lives.

    The pid alone does not say it: after the process ended, the OS may give its pid to another process, even
    another training run. The start time tells them apart; a folder written before ``pid_start`` was recorded
    falls back to the command line naming a training CLI (``TRAINING_ENTRY_POINTS``).
    """
    identity = process_identity(status.get("pid"))
    if identity is None or not any(entry in identity[1] for entry in TRAINING_ENTRY_POINTS):
        return False
    return status.get("pid_start") is None or identity[0] == status["pid_start"]


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid``: torchrun puts its workers in sessions of their own, out of reach of
    a signal to its process group."""
    parents: dict[int, int] = {}
    if _LINUX_PROC:
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit():
                    parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # a process that ended while we looked
    else:
        out = subprocess.run(["ps", "-A", "-o", "pid=", "-o", "ppid="], capture_output=True, text=True)
        parents = {int(a): int(b) for a, b in (line.split() for line in out.stdout.splitlines())}
    found, frontier = [], {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found.extend(sorted(frontier))
    return found


@dataclass
class ProcessGroup:
    """The leader of a run's process group: a child of this manager, or one adopted from an earlier manager."""

    pid: int
    start: str | None  # start time of the leader, for pid-reuse checks
    processes: int  # slots taken: one per training process
    gpus: list[int]  # the visible GPUs it was given (CUDA_VISIBLE_DEVICES); empty on a CPU-only host
    popen: subprocess.Popen | None = None  # None when adopted: not our child, so watched by its identity

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None  # also reaps it, so no zombie is left
        identity = process_identity(self.pid)
        return identity is not None and identity[0] == self.start

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode if self.popen is not None else None

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the run's process group: every member, a descendant of the leader or not (a worker
        orphaned when its parent ended is still in the group); a SIGKILL also to every descendant (torchrun's
        workers, in sessions of their own)."""
        if not self.alive():
            return  # checked first: a dead leader's pid may belong to someone else by now
        targets = descendants(self.pid) if sig == signal.SIGKILL else []
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass
        for pid in targets:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
