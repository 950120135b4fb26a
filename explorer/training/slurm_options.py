"""The ``slurm`` executor's options (``--executor``, ``--slurm-*``): what the CLIs parse before anything heavy is
imported (``python app.py --help`` must not wait for torch); ``explorer.training.slurm`` submits with them."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SlurmError", "SlurmOptions", "add_arguments", "options_from_args"]

# submitit asks SLURM for SIGUSR2 90 s before the time limit (SLURM may send it up to a minute earlier still) and
# answers it by failing the job or requeueing it: a short job died of it during start-up. A run is continued with
# --resume instead, so SLURM is asked for SIGURG, which every process ignores unless it asks for it.
_NO_WARNING_SIGNAL = "URG@1"
_PROJECT_ROOT = Path(__file__).resolve().parents[2]  # on the jobs' PYTHONPATH


class SlurmError(RuntimeError):
    """SLURM or submitit refused or is missing; the message says what to do."""


@dataclass(frozen=True)
class SlurmOptions:
    """How runs are submitted (``--slurm-*`` options). ``tasks_per_node`` x ``nodes`` > 1: one run across them."""

    partition: str = ""  # "" = the cluster's default partition
    gpus_per_run: int = 0  # per node
    cpus_per_run: int = 1  # per task
    time: str = "60"  # sbatch --time: minutes, MM:SS, HH:MM:SS or D-HH:MM
    array_parallelism: int = 16  # runs of one submission running at once
    nodes: int = 1
    tasks_per_node: int = 1  # training processes per node (one per GPU)
    sbatch: tuple[str, ...] = ()  # further sbatch options, "name=value" or "name"
    setup: tuple[str, ...] = ()  # shell lines the job runs first (module load ..., source venv/bin/activate)

    def __post_init__(self) -> None:
        for name in ("gpus_per_run", "cpus_per_run", "array_parallelism", "nodes", "tasks_per_node"):
            low = 0 if name == "gpus_per_run" else 1
            if not isinstance(getattr(self, name), int) or getattr(self, name) < low:
                raise SlurmError(f"--slurm-{name.replace('_', '-')} must be a whole number >= {low}; "
                                 f"got {getattr(self, name)!r}")
        if not self.time.strip():
            raise SlurmError("--slurm-time is empty; give minutes, MM:SS or HH:MM:SS")

    @property
    def tasks(self) -> int:
        return self.nodes * self.tasks_per_node

    def parameters(self) -> dict[str, Any]:
        """submitit's ``slurm_*`` parameters for these options."""
        extra = {"time": self.time, "signal": _NO_WARNING_SIGNAL}
        for option in self.sbatch:
            name, _, value = option.lstrip("-").partition("=")
            extra[name] = value if value else True
        params: dict[str, Any] = {"slurm_nodes": self.nodes, "slurm_ntasks_per_node": self.tasks_per_node,
                                  "slurm_cpus_per_task": self.cpus_per_run, "slurm_additional_parameters": extra,
                                  "slurm_array_parallelism": self.array_parallelism, "slurm_job_name": "explorer",
                                  "slurm_setup": [f"export PYTHONPATH={_PROJECT_ROOT}${{PYTHONPATH:+:$PYTHONPATH}}",
                                                  *self.setup]}
        if self.partition:
            params["slurm_partition"] = self.partition
        if self.gpus_per_run:
            params["slurm_gpus_per_node"] = self.gpus_per_run
        return params


def add_arguments(parser: argparse.ArgumentParser, one_run: bool = False) -> None:
    """``--executor`` and the ``--slurm-*`` options (``one_run``: also ``--nodes``, ``--gpus-per-node`` and
    ``--tasks-per-node``, for one run across several processes)."""
    group = parser.add_argument_group("executor", "where runs train: here, or as SLURM jobs (docs/cluster.md)")
    group.add_argument("--executor", choices=("local", "slurm"), default="local",
                       help="local: processes on this machine; slurm: SLURM jobs through submitit")
    group.add_argument("--slurm-partition", default="", help="the partition (default: the cluster's default)")
    group.add_argument("--slurm-gpus-per-run", type=int, default=0, help="GPUs per run (per node)")
    group.add_argument("--slurm-cpus-per-run", type=int, default=1, help="CPUs per run (per task)")
    group.add_argument("--slurm-time", default="60", help="time limit per run: minutes, MM:SS, HH:MM:SS, D-HH:MM")
    group.add_argument("--slurm-array-parallelism", type=int, default=16,
                       help="runs of one submission (a job array) running at once")
    group.add_argument("--slurm-sbatch", action="append", default=[], metavar="NAME[=VALUE]",
                       help="a further sbatch option, e.g. account=lab or constraint=a100 (repeat for more)")
    group.add_argument("--slurm-setup", action="append", default=[], metavar="LINE",
                       help="a shell line each job runs before training, e.g. 'source ~/venv/bin/activate'")
    if one_run:
        group.add_argument("--nodes", type=int, default=1, help="nodes of one run (DistributedDataParallel)")
        group.add_argument("--gpus-per-node", type=int, default=0, help="GPUs per node; one process each")
        group.add_argument("--tasks-per-node", type=int, default=0,
                           help="training processes per node (default: --gpus-per-node, at least 1)")


def options_from_args(args: argparse.Namespace) -> SlurmOptions:
    """The options ``add_arguments`` parsed; SlurmError for a bad value."""
    gpus = getattr(args, "gpus_per_node", 0) or args.slurm_gpus_per_run
    return SlurmOptions(partition=args.slurm_partition, gpus_per_run=gpus, cpus_per_run=args.slurm_cpus_per_run,
                        time=args.slurm_time, array_parallelism=args.slurm_array_parallelism,
                        nodes=getattr(args, "nodes", 1), tasks_per_node=getattr(args, "tasks_per_node", 0) or gpus or 1,
                        sbatch=tuple(args.slurm_sbatch), setup=tuple(args.slurm_setup))
