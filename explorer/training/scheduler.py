"""The study scheduler: which runs of a study remain, and what state each is in, for the CLI and the Study tab.

Whatever the executor, a study's runs are folders ``RUNS/<study id>-<setting>-s<seed>``; this module reads them
(and, for runs sent to SLURM, SLURM's word on their jobs) to decide what is left to train.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from explorer.training import slurm
from explorer.training.runfolder import STATUS, read_json
from explorer.training.study import Setting, StudySpec

__all__ = ["cancel_slurm_runs", "remaining_runs", "run_states", "slurm_lines", "slurm_states"]


def run_states(spec: StudySpec, runs_dir: Path) -> dict[str, str]:
    """The state of every run of ``spec`` by run id ("not started" where it has no folder yet). Runs sent to SLURM
    are first brought up to date with SLURM's word on their jobs (``slurm.refresh``)."""
    folders = {spec.run_id(s, seed): Path(runs_dir) / spec.run_id(s, seed) for s, seed in spec.runs()}
    slurm.refresh(folders.values())
    return {run_id: read_json(folder / STATUS).get("state", "not started") for run_id, folder in folders.items()}


def remaining_runs(spec: StudySpec, runs_dir: Path, only: Sequence[str] | None = None,
                   skip_active: bool = True) -> list[tuple[Setting, int]]:
    """The runs of ``spec`` (of the ``only`` settings) still to train: the one place that decides it, for the CLI
    and the Study tab, whatever the executor. A finished run is done; a queued or running one is left to its
    owner (``skip_active``; the CLI retrains a local run another process left running, as SLURM jobs that are
    still pending or running are always left to SLURM)."""
    states = run_states(spec, runs_dir)
    remaining = []
    for setting, seed in spec.runs():
        run_id = spec.run_id(setting, seed)
        active = states[run_id] in ("queued", "running")
        slurm_job = bool(slurm.job_record(Path(runs_dir) / run_id))
        if (only and setting.label not in only) or states[run_id] == "finished" or \
                (active and (skip_active or slurm_job)):
            continue
        remaining.append((setting, seed))
    return remaining


def slurm_lines(spec: StudySpec, runs_dir: Path) -> list[str]:
    """One line per run of ``spec`` sent to SLURM: its state and its job's SLURM state (as last seen)."""
    return [f"{run_id}: {read_json(Path(runs_dir) / run_id / STATUS).get('state', '?')} · SLURM job {job.job_id} "
            f"{job.describe()}" for run_id, job in slurm_states(spec, runs_dir).items()]


def slurm_states(spec: StudySpec, runs_dir: Path) -> dict[str, slurm.JobState]:
    """SLURM's state of the job of every run of ``spec`` sent to SLURM (as last seen), by run id."""
    states = {}
    for setting, seed in spec.runs():
        record = slurm.job_record(Path(runs_dir) / spec.run_id(setting, seed))
        if record:
            states[spec.run_id(setting, seed)] = slurm.JobState(str(record["job_id"]), record.get("state", "UNKNOWN"),
                                                                record.get("reason", ""))
    return states


def cancel_slurm_runs(spec: StudySpec, runs_dir: Path) -> list[str]:
    """``scancel`` the jobs of ``spec``'s runs that are queued or running on SLURM; returns one line per job."""
    states = run_states(spec, runs_dir)
    return [f"{run_id}: cancelled SLURM job {slurm.cancel(Path(runs_dir) / run_id)}"
            for run_id in slurm_states(spec, runs_dir) if states[run_id] in ("queued", "running")]
