"""``python -m explorer.study``: train a study's remaining runs (here, or on SLURM), print its table, record it.

Fair comparisons over several seeds: the studies behind docs/results.md, the CLI and the Study tab.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from explorer.argparsing import OneLineParser
from explorer.data import DatasetError
from explorer.training import slurm
from explorer.training.command import config_argv, resume_command, training_command
from explorer.training.config import parse_config
from explorer.training.measured import MEASURED_FILE, record_study
from explorer.training.methods import BASELINE, METHODS
from explorer.training.runfolder import (
    final_epoch,
    holds_training,
    writer_pid,
)
from explorer.training.scheduler import cancel_slurm_runs, remaining_runs, slurm_lines
from explorer.training.study import (
    COMPARISONS,
    PRESETS,
    STUDIES,
    StudySpec,
    comparison_spec,
    estimate_seconds,
    load_spec,
    save_spec,
)
from explorer.training.study_results import confidence_markdown, read_results

__all__ = ["main"]

# --------------------------------------------------------------------------------------------------
# The CLI
# --------------------------------------------------------------------------------------------------
class _LiveRun:
    """A run of the study that another process trains (e.g. the child of a study killed before this one): watched
    through its folder's writer lock until it ends, never signalled, as it is not this study's child."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir, self.returncode = run_dir, None

    def poll(self) -> int | None:
        if writer_pid(self.run_dir) is None:
            self.returncode = 0 if final_epoch(self.run_dir) is not None else 1
        return self.returncode

    def terminate(self) -> None:
        pass

    def wait(self) -> int | None:
        return self.returncode


def _train(spec: StudySpec, out: Path, only: Sequence[str] | None, jobs: int = 1) -> int:
    """Train every unfinished run of ``spec`` (or of the ``only`` settings) through the training CLI, ``jobs`` at
    a time (several small runs share one GPU well; on a 2-core CPU keep 1). After a failed run no new run starts:
    a setting that fails usually fails on every seed. A run that another process still trains is waited for, and
    one stopped after a finished epoch is resumed (``--resume``), never started again over its files."""
    todo = [(setting, seed, out / spec.run_id(setting, seed))
            for setting, seed in remaining_runs(spec, out, only, skip_active=False)]
    quiet = subprocess.DEVNULL if jobs > 1 else None  # interleaved progress bars help nobody; each run has its log
    failed: list[Path] = []
    running: dict[subprocess.Popen | _LiveRun, Path] = {}
    try:
        while (todo and not failed) or running:
            while todo and not failed and len(running) < jobs:
                setting, seed, run_dir = todo.pop(0)
                writer = writer_pid(run_dir)
                if writer is not None:
                    print(f"== {setting.label}, seed {seed}: {run_dir} is being trained by process {writer} (an "
                          f"earlier study's?); waiting for it", flush=True)
                    running[_LiveRun(run_dir)] = run_dir
                    continue
                resumed = holds_training(run_dir)  # an earlier study stopped it after an epoch: it goes on from there
                print(f"== {setting.label}, seed {seed} -> {run_dir}{' (resumed)' * resumed}", flush=True)
                command = resume_command(run_dir) if resumed else training_command(spec.config(setting, seed, out))
                running[subprocess.Popen(command, stdout=quiet)] = run_dir
            process = next((p for p in running if p.poll() is not None), None)
            if process is None:
                time.sleep(0.2)
                continue
            run_dir = running.pop(process)
            if process.returncode != 0:
                failed.append(run_dir)
                print(f"explorer.study: run {run_dir.name} did not finish; see {run_dir}", file=sys.stderr,
                      flush=True)
    finally:  # a stopped study (Ctrl-C, SIGTERM) stops its runs: each marks itself cancelled and can resume
        for process in running:
            process.terminate()
        for process in running:
            process.wait()
    return 1 if failed else 0


def _without_record(argv: Sequence[str], record: str) -> list[str]:
    """The study command's arguments without ``--record [FILE]``: the command that makes the numbers, not where
    they were written."""
    given = list(argv)
    for i, arg in enumerate(given):
        if arg.startswith("--record"):
            del given[i:i + (2 if arg == "--record" and given[i + 1:i + 2] == [record] else 1)]
            break
    return given


def _train_with_executor(spec: StudySpec, out: Path, only: Sequence[str] | None, jobs: int,
                         options: slurm.SlurmOptions | None) -> int:
    """Train the remaining runs here (``jobs`` at a time) or, given SLURM options, as one SLURM job array."""
    if options is None:
        return _train(spec, out, only, jobs)
    from explorer.training.executors import train_study_on_slurm

    return train_study_on_slurm([spec.config(s, seed, out) for s, seed in
                                 remaining_runs(spec, out, only, skip_active=False)], options)


def _spec_from_args(args: argparse.Namespace, out: Path) -> StudySpec:
    if args.preset:
        spec = PRESETS[args.preset]()
    elif args.id and (out / STUDIES / f"{args.id}.json").is_file() and not args.methods:
        return load_spec(out, args.id)
    else:
        methods = args.methods or ["ce", "ips"]
        spec = comparison_spec(args.id or f"{args.dataset}-{'-'.join(methods)}", args.dataset, args.model,
                               methods, args.epochs, args.comparisons, args.seeds or range(3), teacher=args.teacher)
    if args.seeds:
        spec = dataclasses.replace(spec, seeds=list(args.seeds))  # checked as a new spec's seeds are
    for setting, seed in spec.runs():  # what a run's training process would refuse, refused before any starts
        parse_config(config_argv(spec.config(setting, seed, out)))
    return spec


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m explorer.study", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs", help="the runs folder (run folders and studies/<id>.json)")
    parser.add_argument("--preset", choices=list(PRESETS), help="a study behind docs/results.md")
    parser.add_argument("--id", help="the study id (default: dataset and methods); an existing id reloads its spec")
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=None,
                        help=f"methods to compare with the baseline {BASELINE} (default: ce ips)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--teacher", default="", metavar="RUN_DIR",
                        help="the finished run the kd arm distils from (needed when --methods has kd)")
    parser.add_argument("--comparisons", nargs="+", choices=list(COMPARISONS), default=["equal-epochs"])
    parser.add_argument("--seeds", type=int, nargs="+", help="default: the preset's, else 0 1 2")
    parser.add_argument("--only", nargs="+", metavar="LABEL", help="train only these settings (labels)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs trained at once (default 1; several small runs share one GPU well)")
    parser.add_argument("--table-only", action="store_true", help="print the table of finished runs, train nothing")
    parser.add_argument("--cancel", action="store_true", help="scancel the study's SLURM jobs, train nothing")
    parser.add_argument("--csv", action="store_true", help="print CSV (one row per run) instead of Markdown")
    slurm.add_arguments(parser)
    parser.add_argument("--confidence", action="store_true",
                        help="also evaluate every finished run's checkpoint: how confident its errors are, the share "
                             "of NLL they carry, the KD/CE ratio and the teacher's confidence")
    parser.add_argument("--record", nargs="?", const=str(MEASURED_FILE), metavar="FILE",
                        help="write the study's comparisons, with this command, into the project's measured numbers "
                             "(default file: %(const)s), which the Guide, the Train tab and the docs read")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    out = Path(args.out)
    try:
        spec = _spec_from_args(args, out)
    except ValueError as exc:
        parser.error(str(exc))
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1; got {args.jobs}")
    if args.only and not set(args.only) <= {s.label for s in spec.settings}:
        parser.error(f"--only names unknown settings; the study has: {[s.label for s in spec.settings]}")
    try:
        options = slurm.options_from_args(args) if args.executor == "slurm" else None
    except slurm.SlurmError as exc:
        parser.error(str(exc))
    if args.cancel:
        print("\n".join(cancel_slurm_runs(spec, out)) or f"study {spec.study_id}: no job queued or running on SLURM")
        return 0
    if not args.table_only:
        try:
            seconds, how = estimate_seconds(spec, out)  # loads the dataset: an unknown or missing one ends here
        except DatasetError as exc:
            parser.error(str(exc))
        save_spec(spec, out)
        print(f"study {spec.study_id}: {len(spec.runs())} runs, about {seconds / 60:.0f} min left ({how})", flush=True)
        previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))  # _train's cleanup runs
        try:
            if _train_with_executor(spec, out, args.only, args.jobs, options):
                return 1
        finally:
            signal.signal(signal.SIGTERM, previous)
    results = read_results(spec, out)
    if not any(results.values["accuracy"].values()):
        print(f"explorer.study: no finished run of study {spec.study_id} under {out}", file=sys.stderr)
        return 1
    print(results.csv() if args.csv else "\n".join([results.markdown(), "", *results.sentences()]))
    if args.record:
        command = shlex.join(["python", "-m", "explorer.study", *_without_record(sys.argv[1:] if argv is None else argv,
                                                                                   args.record)])
        rows = results.recorded(command)
        record_study(spec.study_id, rows, Path(args.record))
        print(f"recorded {len(rows)} comparisons of study {spec.study_id} in {args.record}")
    if not args.csv and (jobs := slurm_lines(spec, out)):
        print("\nSLURM jobs:\n" + "\n".join(f"  {line}" for line in jobs))
    if args.confidence:
        print("\n" + confidence_markdown(spec, out))
    return 0
