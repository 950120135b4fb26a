"""Backbones compared by transfer: every backbone of a classification study fine-tuned for each dense task.

    python -m explorer.study --methods ce ips --epochs 8 --seeds 0 1 2 3 4 5 --out runs/ev --id backbones
    python -m explorer.transfer.study --study backbones --out runs/ev --tasks segmentation detection \\
        -- --train-scenes 800 --epochs 3          # flags after -- go to every python -m explorer.transfer

The classification study (``explorer.study``) trains one backbone per (setting, seed); this command fine-tunes each
finished one with ``python -m explorer.transfer`` for every task, with the backbone's seed as the transfer seed (so
two settings of one seed share the head's initialisation and the batch order: the runs are paired), in run folders
``OUT/<study>-<task>-<setting>-s<seed>``. Finished transfer runs are not trained again. ``--settings`` and ``--seeds``
pick a part of the study to fine-tune now (a study of many methods costs one transfer run per setting, seed and
task); the tables always show every finished transfer run of the study. Then, per task and metric, a
table of every seed with each setting's mean ± std and the paired difference to the study's baseline setting with
its 95 % t-interval (``explorer.stats``), and a sentence that claims only what the interval allows.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from explorer.argparsing import OneLineParser
from explorer.stats import comparison_sentence, seed_table
from explorer.training.runfolder import final_epoch
from explorer.training.study import StudySpec, load_spec
from explorer.transfer.heads import TASKS
from explorer.transfer.metrics import DETECTION_METRICS, SEGMENTATION_METRICS

__all__ = ["main", "transfer_results", "transfer_run_id"]

TASK_METRICS = {"segmentation": SEGMENTATION_METRICS, "detection": DETECTION_METRICS}


def transfer_run_id(spec: StudySpec, task: str, label: str, seed: int) -> str:
    return f"{spec.study_id}-{task}-{spec.setting(label).slug}-s{seed}"


def _train(spec: StudySpec, out: Path, tasks: list[str], extra: list[str], labels: list[str], seeds: list[int]) -> int:
    """Fine-tune every finished backbone of ``spec`` among ``labels`` and ``seeds`` for ``tasks`` (seed-major); 1 when
    a run failed."""
    for seed in seeds:
        for task in tasks:
            for setting in (spec.setting(label) for label in labels):
                backbone, run_id = out / spec.run_id(setting, seed), transfer_run_id(spec, task, setting.label, seed)
                if final_epoch(out / run_id) is not None:
                    continue
                if final_epoch(backbone) is None:
                    print(f"explorer.transfer.study: backbone {backbone.name} has not finished; skipped", flush=True)
                    continue
                print(f"== {task}, {setting.label}, seed {seed} -> {out / run_id}", flush=True)
                command = [sys.executable, "-m", "explorer.transfer", "--task", task, "--backbone", str(backbone),
                           "--seed", str(seed), "--out", str(out), "--run-id", run_id, *extra]
                if subprocess.run(command).returncode != 0:
                    print(f"explorer.transfer.study: run {run_id} did not finish", file=sys.stderr, flush=True)
                    return 1
    return 0


def transfer_results(spec: StudySpec, out: Path, task: str) -> dict[str, dict[str, dict[int, float]]]:
    """metric -> setting label -> seed -> the final test value of every finished transfer run of ``task``."""
    results: dict[str, dict[str, dict[int, float]]] = {m: {} for m in TASK_METRICS[task]}
    for setting in spec.settings:
        for seed in spec.seeds:
            record = final_epoch(out / transfer_run_id(spec, task, setting.label, seed))
            for metric in TASK_METRICS[task]:
                if record is not None and f"test_{metric}" in record:
                    results[metric].setdefault(setting.label, {})[seed] = 100.0 * record[f"test_{metric}"]
    return results


def _report(spec: StudySpec, out: Path, tasks: list[str]) -> str:
    baseline = spec.settings[0].label
    lines = [f"Transfer of the backbones of study {spec.study_id} ({spec.model} on {spec.dataset}); values in %, "
             f"differences in points, against {baseline}.", ""]
    for task in tasks:
        for metric, values in transfer_results(spec, out, task).items():
            if baseline not in values or len(values) < 2:
                continue
            table = seed_table(values, baseline)
            lines += [f"### {task}: {metric}", "", table.to_markdown(), ""]
            lines += [comparison_sentence(d, label, baseline, context=f"({task} {metric})")
                      for label, d in table.differences.items()] + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    parser = OneLineParser(prog="python -m explorer.transfer.study", description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", required=True, help="the id of a classification study (explorer.study --id)")
    parser.add_argument("--out", default="runs", help="the runs folder of the study; transfer runs go there too")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--settings", nargs="+", metavar="LABEL",
                        help="fine-tune only these settings of the study, by label (e.g. 'kd 3 ep'); default: all")
    parser.add_argument("--seeds", nargs="+", type=int, help="fine-tune only these seeds of the study; default: all")
    parser.add_argument("--table-only", action="store_true", help="print the tables of finished runs, train nothing")
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    out = Path(args.out)
    try:
        spec = load_spec(out, args.study)
    except (OSError, ValueError, KeyError) as exc:
        parser.error(f"no study {args.study!r} under {out}: {exc}")
    labels = [setting.label for setting in spec.settings]
    for label in set(args.settings or []) - set(labels):
        parser.error(f"study {args.study!r} has no setting {label!r}; its settings: {', '.join(labels)}")
    for seed in set(args.seeds or []) - set(spec.seeds):
        parser.error(f"study {args.study!r} has no seed {seed}; its seeds: {' '.join(map(str, spec.seeds))}")
    chosen_labels = [label for label in labels if label in (args.settings or labels)]
    chosen_seeds = [seed for seed in spec.seeds if seed in (args.seeds or spec.seeds)]
    if not args.table_only and _train(spec, out, args.tasks, extra, chosen_labels, chosen_seeds):
        return 1
    print(_report(spec, out, args.tasks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
