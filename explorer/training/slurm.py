"""The ``slurm`` executor: training runs as SLURM jobs, submitted through submitit, watched through their folders.

A run sent to SLURM is the training CLI (``explorer.training.loop.main``) running inside a job; its run folder
(on a filesystem the cluster's nodes and this machine share) stays the result store, as for local runs. Before
submitting, the run folder gets ``status.json`` (``queued``); after, ``slurm.json``: the job id, the options, the
folder of the job's own logs, and the last SLURM state seen. So any process that reads the runs folder (the
study CLI, an app started later) finds the run's job again and asks SLURM about it:

- ``job_states``: SLURM's view of jobs (``sacct``; where there is no accounting database, ``scontrol``, which
  keeps a finished job for ``MinJobAge`` seconds);
- ``settle``: a job SLURM ended (time limit, node failure, ``scancel``) ends its run as ``failed`` or
  ``cancelled`` with SLURM's reason, so no run stays ``running`` after its job is gone (a run killed at its time
  limit first wrote ``cancelled``, since SLURM stops it with SIGTERM as a cancel does: it becomes ``failed``);
- ``cancel``: ``scancel`` of the run's job.

Several runs submitted together form one job array (``--slurm-array-parallelism`` of them at a time). One run
across several tasks (``tasks_per_node`` x ``nodes``) starts DistributedDataParallel in every task with the
rendezvous submitit's distributed environment exports (the variables torchrun sets), so rank 0 alone writes.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from explorer.training.command import config_argv
from explorer.training.config import TrainConfig
from explorer.training.runfolder import FINAL_STATES, SLURM, STATUS, read_json, update_status, write_json, write_status
from explorer.training.slurm_options import SlurmError, SlurmOptions, add_arguments, options_from_args

__all__ = ["JobState", "SlurmError", "SlurmOptions", "add_arguments", "cancel", "job_record",
           "job_states", "options_from_args", "refresh", "settle", "submit", "train_job", "train_on_slurm", "wait"]

LOGS = "slurm-logs"  # submitit's files (the pickled call, the jobs' stdout and stderr) inside the runs folder
# SLURM's job states (``man squeue``) as the states of a run
_RUN_STATE = {"PENDING": "queued", "CONFIGURING": "running", "RUNNING": "running", "COMPLETING": "running",
              "SUSPENDED": "running", "REQUEUED": "queued", "RESIZING": "running", "COMPLETED": "finished",
              "CANCELLED": "cancelled", "FAILED": "failed", "TIMEOUT": "failed", "NODE_FAIL": "failed",
              "OUT_OF_MEMORY": "failed", "BOOT_FAIL": "failed", "DEADLINE": "failed", "PREEMPTED": "failed"}


@dataclass(frozen=True)
class JobState:
    """SLURM's word on a job: its state (``RUNNING``, ``TIMEOUT``, ...) and reason (``TimeLimit``, ``None``)."""

    job_id: str
    state: str
    reason: str = ""

    @property
    def run_state(self) -> str:
        """The run state it means: queued, running, finished, failed or cancelled ("unknown" for others)."""
        return _RUN_STATE.get(self.state, "unknown")

    @property
    def ended(self) -> bool:
        return self.run_state in FINAL_STATES

    def describe(self) -> str:
        reason = f" ({self.reason})" if self.reason and self.reason != "None" else ""
        return f"{self.state}{reason}"


# --------------------------------------------------------------------------------------------------
# Asking SLURM
# --------------------------------------------------------------------------------------------------
def _slurm(command: Sequence[str]) -> str:
    """stdout of a SLURM command; SlurmError with its stderr when it fails or is missing."""
    try:
        done = subprocess.run(list(command), capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SlurmError(f"{command[0]} could not run: {exc}") from None
    if done.returncode:
        raise SlurmError(f"{' '.join(command[:2])}: {done.stderr.strip() or f'exit code {done.returncode}'}")
    return done.stdout


def _from_sacct(job_ids: Sequence[str]) -> dict[str, JobState]:
    out = _slurm(["sacct", "-X", "-n", "-P", "-o", "JobID,State,Reason", "-j", ",".join(job_ids)])
    states = {}
    for line in out.splitlines():
        job_id, state, reason = (line.split("|") + ["", ""])[:3]
        states[job_id] = JobState(job_id, state.split()[0] if state else "UNKNOWN", reason)  # "CANCELLED by 0"
    return states


def _from_scontrol(job_id: str) -> JobState | None:
    try:
        out = _slurm(["scontrol", "show", "job", "-o", job_id])
    except SlurmError:  # "Invalid job id specified": SLURM has forgotten it
        return None
    fields = dict(item.partition("=")[::2] for item in out.split("\n")[0].split())
    return JobState(job_id, fields.get("JobState", "UNKNOWN"), fields.get("Reason", ""))


def job_states(job_ids: Iterable[str]) -> dict[str, JobState]:
    """SLURM's state of each job it still knows (sacct; scontrol where sacct has no database)."""
    job_ids = sorted(set(job_ids))
    if not job_ids:
        return {}
    try:
        return _from_sacct(job_ids)
    except SlurmError:
        return {job: state for job in job_ids if (state := _from_scontrol(job)) is not None}


# --------------------------------------------------------------------------------------------------
# The run folder's side
# --------------------------------------------------------------------------------------------------
def job_record(run_dir: Path) -> dict[str, Any]:
    """The run's slurm.json ({} for a run that is no SLURM job)."""
    return read_json(run_dir / SLURM)


def settle(run_dir: Path, job: JobState) -> None:
    """Record SLURM's latest word on the run's job; when the job has ended, make the run's state agree.

    A run that ended on its own (finished; failed with its own reason) keeps its state. A run SLURM ended under
    it (it is still ``queued`` or ``running``, or it wrote ``cancelled`` because SLURM's SIGTERM at the time limit
    looked like a cancel) ends ``failed`` or ``cancelled`` with SLURM's state and reason, its progress kept.
    """
    record = job_record(run_dir)
    if (record.get("state"), record.get("reason")) != (job.state, job.reason):
        write_json(run_dir / SLURM, {**record, "state": job.state, "reason": job.reason,
                                            "seen": time.time()})
    if not job.ended:
        return
    status = read_json(run_dir / STATUS)
    state = status.get("state")
    if state == "finished" or (state == "failed" and job.run_state == "failed" and job.state == "FAILED"):
        return
    if state == job.run_state == "cancelled":
        return
    target = "cancelled" if job.run_state == "cancelled" else "failed"
    if job.run_state == "finished":  # the job ended well, but the run never said so: its process died first
        target = "failed"
    message = f"SLURM job {job.job_id} ended {job.describe()}"
    if state in ("running", "cancelled") and job.state == "TIMEOUT":
        message += f": past its time limit (--slurm-time {record.get('options', {}).get('time', '?')})"
    if status.get("epoch"):
        message += "; the checkpoint and training state of the last finished epoch are kept (--resume continues)"
    update_status(run_dir, target, message, progress=0.0)


def refresh(run_dirs: Iterable[Path]) -> dict[str, JobState]:
    """Ask SLURM once about the jobs of these runs that are not settled yet and ``settle`` each; returns the
    latest SLURM state of every SLURM run among them by run id (the recorded one where SLURM forgot the job)."""
    records = {run_dir: record for run_dir in run_dirs if (record := job_record(run_dir))}
    open_jobs = {str(r["job_id"]): run_dir for run_dir, r in records.items()
                 if r.get("state") not in _ended_states() or read_json(run_dir / STATUS).get("state") not in
                 FINAL_STATES}
    answers = job_states(open_jobs) if open_jobs else {}
    states = {}
    for run_dir, record in records.items():
        job = answers.get(str(record["job_id"]))
        if job is not None:
            settle(run_dir, job)
        else:
            job = JobState(str(record["job_id"]), record.get("state", "UNKNOWN"), record.get("reason", ""))
        states[run_dir.name] = job
    return states


def _ended_states() -> set[str]:
    return {s for s, run_state in _RUN_STATE.items() if run_state in FINAL_STATES}


def cancel(run_dir: Path) -> str:
    """``scancel`` the run's job; returns its id. The run ends ``cancelled`` (a running one writes it itself at
    its next step; ``refresh`` writes it for one that had not started)."""
    record = job_record(run_dir)
    if not record:
        raise SlurmError(f"run {run_dir.name} is not a SLURM job")
    _slurm(["scancel", str(record["job_id"])])
    return str(record["job_id"])


# --------------------------------------------------------------------------------------------------
# Submitting
# --------------------------------------------------------------------------------------------------
def train_job(argv: list[str]) -> None:
    """What every task of a job runs: the training CLI in the job's Python, under torchrun's variables when the
    job has several tasks."""
    import submitit

    from explorer.training.loop import main

    if submitit.JobEnvironment().num_tasks > 1:  # RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, ... as torchrun
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    code = main(argv)
    if code:
        raise RuntimeError(f"explorer.train ended with exit code {code}; see the run folder's status.json")


def _executor(runs_dir: Path, options: SlurmOptions):
    try:
        import submitit
    except ImportError:
        raise SlurmError("the slurm executor needs submitit: pip install submitit") from None
    executor = submitit.AutoExecutor(folder=runs_dir / LOGS / "%j", cluster="slurm")
    executor.update_parameters(**options.parameters())
    return executor


def submit(configs: Sequence[TrainConfig], options: SlurmOptions) -> list[str]:
    """Submit one job per config (a job array when several); returns the job ids in order.

    Every config names its run folder (``out`` + ``run_id``); the folder is created ``queued`` first, and gets its
    slurm.json once SLURM has answered with the job id.
    """
    if not configs or any(not cfg.run_id for cfg in configs):
        raise SlurmError("every run sent to SLURM needs a run id")
    runs_dir = Path(configs[0].out)
    for cfg in configs:
        run_dir = Path(cfg.out) / cfg.run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        write_status(run_dir, "queued", message="submitting to SLURM", progress=0.0, epochs=cfg.epochs)
    executor = _executor(runs_dir, options)
    try:
        with contextlib.redirect_stderr(io.StringIO()), executor.batch():  # submitit echoes sbatch's stderr
            jobs = [executor.submit(train_job, config_argv(cfg)) for cfg in configs]
    except Exception as exc:  # submitit raises its own error types and RuntimeError for sbatch's refusals
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        why = lines[-1].removeprefix("sbatch: error: ") if lines else type(exc).__name__
        for cfg in configs:
            write_status(Path(cfg.out) / cfg.run_id, "failed", message=f"SLURM refused the job: {why}", progress=0.0)
        raise SlurmError(f"SLURM refused the job(s): {why}") from None
    for cfg, job in zip(configs, jobs, strict=True):
        write_json(Path(cfg.out) / cfg.run_id / SLURM, {
            "job_id": job.job_id, "submitted": time.time(), "options": asdict(options), "logs": str(job.paths.folder),
            "config": asdict(cfg), "state": "PENDING", "reason": ""})
    return [job.job_id for job in jobs]


def wait(run_dirs: Sequence[Path], poll_s: float = 2.0) -> dict[str, JobState]:
    """Watch the runs' jobs until every one has ended, printing each run's state and SLURM's whenever they change;
    returns the last SLURM states. Stopped (Ctrl-C, SIGTERM), it cancels the jobs still pending or running, as a
    stopped local study stops its runs."""
    seen: dict[str, str] = {}
    states: dict[str, JobState] = {}
    try:
        while True:
            states = refresh(run_dirs)
            for run_dir in run_dirs:
                job = states.get(run_dir.name)
                line = f"{read_json(run_dir / STATUS).get('state', '?')} · SLURM job " + \
                    (f"{job.job_id} {job.describe()}" if job else "?")
                if seen.get(run_dir.name) != line:
                    print(f"  {run_dir.name}: {line}", flush=True)
                    seen[run_dir.name] = line
            if all(job.ended for job in states.values()):
                return states
            time.sleep(poll_s)
    except BaseException:
        for run_dir in run_dirs:
            job = states.get(run_dir.name)
            if job is None or not job.ended:
                try:
                    print(f"  {run_dir.name}: cancelling SLURM job {cancel(run_dir)}", flush=True)
                except SlurmError as exc:
                    print(f"  {run_dir.name}: {exc}", flush=True)
        raise


def train_on_slurm(cfg: TrainConfig, options: SlurmOptions) -> int:
    """``python -m explorer.train --executor slurm``: submit the run, watch it to its end; the exit code is 0 when
    it finished, 1 otherwise."""
    if cfg.resume:
        raise SlurmError("--resume continues a run on this machine; resume a SLURM run with --executor local, "
                         "or train it again under a new --run-id")
    if not cfg.run_id:
        cfg = replace(cfg, run_id=f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.method}-slurm-{os.getpid()}")
    run_dir = Path(cfg.out) / cfg.run_id
    (job_id,) = submit([cfg], options)
    print(f"run {run_dir}  |  SLURM job {job_id} ({options.tasks} process{'es' * (options.tasks > 1)})", flush=True)
    wait([run_dir])
    status = read_json(run_dir / STATUS)
    print(f"run {run_dir.name}: {status.get('state')}: {status.get('message', '')}", flush=True)
    return 0 if status.get("state") == "finished" else 1
