"""Where runs train: ``--executor local`` (processes on this machine, the default) or ``--executor slurm`` (SLURM
jobs through submitit, ``explorer.training.slurm``), for the training CLI and the study CLI alike.

    python -m explorer.train --dataset digits --executor slurm --slurm-partition gpu --slurm-gpus-per-run 1
    python -m explorer.train --dataset digits --executor slurm --nodes 2 --gpus-per-node 4     # one run, 8 GPUs
    python -m explorer.study --dataset digits --executor slurm --slurm-time 30 --slurm-array-parallelism 8
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from explorer.training import slurm
from explorer.training.config import TrainConfig
from explorer.training.runfolder import STATUS, read_json

__all__ = ["train_main", "train_study_on_slurm"]


def train_main(argv: list[str] | None = None) -> int:
    """``python -m explorer.train``: the executor options are taken off, the rest is the training CLI's."""
    from explorer.training.config import ConfigError, parse_config  # the training CLI's own parser
    from explorer.training.loop import EXIT_BAD_ARGS, main

    executor = argparse.ArgumentParser(prog="python -m explorer.train", add_help=False, allow_abbrev=False)
    slurm.add_arguments(executor, one_run=True)
    where, rest = executor.parse_known_args(argv)
    if where.executor == "local":
        return main(rest)
    try:
        return slurm.train_on_slurm(parse_config(rest), slurm.options_from_args(where))
    except (ConfigError, slurm.SlurmError) as exc:
        print(f"explorer.train: error: {exc}", file=sys.stderr)
        return EXIT_BAD_ARGS


def train_study_on_slurm(configs: Sequence[TrainConfig], options: slurm.SlurmOptions) -> int:
    """Submit a study's remaining runs as one job array and watch them to their end; 1 when a run did not
    finish."""
    if not configs:
        return 0
    run_dirs = [Path(cfg.out) / cfg.run_id for cfg in configs]
    job_ids = slurm.submit(configs, options)
    for run_dir, job_id in zip(run_dirs, job_ids, strict=True):
        print(f"== {run_dir.name} -> SLURM job {job_id}", flush=True)
    slurm.wait(run_dirs)
    unfinished = [d for d in run_dirs if read_json(d / STATUS).get("state") != "finished"]
    for run_dir in unfinished:
        status = read_json(run_dir / STATUS)
        print(f"explorer.study: run {run_dir.name} did not finish ({status.get('state')}: "
              f"{status.get('message', '')})", file=sys.stderr, flush=True)
    return 1 if unfinished else 0
