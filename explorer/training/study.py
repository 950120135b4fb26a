"""A multi-seed comparison of the methods, written as the README's results table.

    python -m explorer.study --out runs/study                           # the README's results table
    python -m explorer.study --out runs/holdout --holdout-sweep --seeds 0 1   # the hyper-parameter sweep

runs every setting of ``COMPARISON`` (or of ``HOLDOUT_SWEEP``, each with ``--holdout``: trained on 80 % of the
training split and measured on the other 20 %) for every seed through the training CLI (one process per run, so the
numbers are exactly what ``python -m explorer.train`` gives), skips runs that already finished (a study can be
stopped and resumed), and prints a Markdown table: one row per method x setting x seed with the final test
accuracy, NLL and ECE, and one mean +- std row per method x setting. ``--only`` picks settings by label
and runs them in the order given.
Extra arguments after ``--`` go to every run (e.g. ``-- --dataset digits``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

from explorer.training.runfolder import final_epoch

__all__ = ["COMPARISON", "HOLDOUT_SWEEP", "SETTINGS", "main", "summarise"]

_IPS_EQ60 = ["--method", "ips", "--epochs", "60", "--equal-compute"]
# (label, training arguments). Equal compute: CE with twice the epochs of IPS, or IPS with --equal-compute.
SETTINGS: list[tuple[str, list[str]]] = [
    ("ce 30 ep", ["--method", "ce", "--epochs", "30"]),
    ("cskd 30 ep", ["--method", "cskd", "--epochs", "30"]),
    ("ips 30 ep", ["--method", "ips", "--epochs", "30"]),
    ("ce 60 ep (= compute of pairs at 30)", ["--method", "ce", "--epochs", "60"]),
    ("ips 30 ep --equal-compute", ["--method", "ips", "--epochs", "30", "--equal-compute"]),
    ("ips 60 ep --equal-compute", _IPS_EQ60),
    ("ips 60 ep --equal-compute swap-prob 0.5", [*_IPS_EQ60, "--swap-prob", "0.5"]),
    ("ips 60 ep --equal-compute ratio 0.25", [*_IPS_EQ60, "--swap-ratio", "0.25"]),
    ("ips 60 ep --equal-compute T=2", [*_IPS_EQ60, "--temperature", "2"]),
    ("ips 60 ep --equal-compute patch 4", [*_IPS_EQ60, "--patch-size", "4"]),
]
# The README's results table; the swap-prob 0.5 row is the setting the holdout sweep chose.
COMPARISON = [label for label, _ in SETTINGS[:7]]
# What IPS at equal compute responds to, measured on --holdout so that the test split chooses nothing.
HOLDOUT_SWEEP = [label for label, _ in SETTINGS[3:4] + SETTINGS[5:]]


def _run_id(label: str, seed: int) -> str:
    slug = "".join(c if c.isalnum() else "-" for c in label.split(" (")[0]).strip("-")
    return f"{'-'.join(filter(None, slug.split('-')))}-s{seed}"


def _mean_std(records: list[dict], key: str, scale: float, digits: int) -> str:
    values = [scale * r[key] for r in records]
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def summarise(out: Path, labels: list[str], seeds: list[int]) -> str:
    """The Markdown table of the finished runs under ``out``."""
    rows = ["| method x setting | seed | test acc (%) | test NLL | test ECE (%) |", "|---|---|---|---|---|"]
    for label in labels:
        finals = {s: final_epoch(out / _run_id(label, s)) for s in seeds}
        done = {s: r for s, r in finals.items() if r is not None}
        for seed, r in done.items():
            rows.append(f"| {label} | {seed} | {100 * r['test_accuracy']:.2f} | {r['test_nll']:.4f} | "
                        f"{100 * r['test_ece']:.2f} |")
        if len(done) >= 2:
            finished = list(done.values())
            accuracy = _mean_std(finished, "test_accuracy", 100, 2)
            rows.append(f"| **{label}** | mean ± std ({len(done)}) | **{accuracy}** "
                        f"| {_mean_std(finished, 'test_nll', 1, 4)} | {_mean_std(finished, 'test_ece', 100, 2)} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        argv, extra = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    parser = argparse.ArgumentParser(prog="python -m explorer.study", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/study")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="+", choices=[lab for lab, _ in SETTINGS], metavar="LABEL",
                        help="run only these settings, in this order: " + "; ".join(lab for lab, _ in SETTINGS))
    parser.add_argument("--holdout-sweep", action="store_true",
                        help="the settings of HOLDOUT_SWEEP (unless --only), each run with --holdout")
    parser.add_argument("--table-only", action="store_true", help="print the table of finished runs, train nothing")
    args = parser.parse_args(argv)
    labels = args.only or (HOLDOUT_SWEEP if args.holdout_sweep else COMPARISON)
    settings = [(label, train_args) for name in labels for label, train_args in SETTINGS if label == name]
    if args.holdout_sweep:
        extra = ["--holdout", *extra]
    out = Path(args.out)
    if not args.table_only:
        for label, train_args in settings:
            for seed in args.seeds:
                run_id = _run_id(label, seed)
                if final_epoch(out / run_id) is not None:
                    continue
                print(f"== {label}, seed {seed} -> {out / run_id}", flush=True)
                cmd = [sys.executable, "-m", "explorer.train", *train_args, "--seed", str(seed), "--out", str(out),
                       "--run-id", run_id, *extra]
                if subprocess.run(cmd).returncode != 0:
                    print(f"explorer.study: run {run_id} did not finish; see {out / run_id}", file=sys.stderr)
                    return 1
    print(summarise(out, [lab for lab, _ in settings], args.seeds))
    return 0
