"""Fair comparisons over several seeds: the studies behind docs/results.md, the CLI and the Study tab.

    python -m explorer.study --dataset digits --methods ce ips --epochs 30 --seeds 0 1 2 3 4 5   # train + table
    python -m explorer.study --preset mnist5k --out runs/evidence                # docs/results.md's table
    python -m explorer.study --preset mnist5k --out runs/evidence --table-only   # reprint it, train nothing

A study is a ``StudySpec``: settings (a label and the training arguments that differ from the shared ones),
seeds, and comparisons (a setting against a baseline setting). Every (setting, seed) is one run of the training
CLI, in a run folder ``OUT/<study id>-<setting>-s<seed>``; the spec is saved as ``OUT/studies/<study id>.json``,
so the app's Study tab finds studies started from the CLI and the CLI finds those started from the tab. Finished
runs are not trained again: a study can be stopped and resumed.

Comparisons (``comparison_spec``): *equal epochs* (each method and the baseline at E epochs), *equal compute*
(each pair method at E against the baseline at 2E: a pair method forwards 2 images per anchor) and
*equal compute per step* (each pair method at E with ``--equal-compute``, B images per step like the baseline, against
the baseline at E). Results are the final epoch's test metrics (no early stopping); each comparison gets the
paired per-seed difference with a 95 % t-interval and a sentence that claims only what the interval allows
(``explorer.stats``).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from explorer.stats import MeanInterval, PairedDifference, comparison_sentence, mean_interval, paired_difference
from explorer.training import slurm
from explorer.training.command import resume_command, training_command
from explorer.training.config import RUN_ID_PATTERN, TrainConfig, field_types, step_images
from explorer.training.measured import MEASURED_FILE, Recorded, record_study
from explorer.training.methods import BASELINE, FEATURED, METHODS
from explorer.training.overconfidence import confidence_profile
from explorer.training.runfolder import (
    CONFIG,
    LATEST_TIME,
    check_number,
    final_epoch,
    holds_training,
    read_json,
    write_json,
    writer_pid,
)
from explorer.training.scheduler import cancel_slurm_runs, remaining_runs, slurm_lines

__all__ = ["COMPARISONS", "METRICS", "PRESETS", "Comparison", "Setting", "StudyResults", "StudySpec",
           "comparison_spec", "confidence_markdown", "estimate_seconds", "list_studies", "load_spec", "main",
           "read_results", "save_spec"]

STUDIES = "studies"  # the folder of study specs inside the runs folder
METRICS = {"accuracy": ("test_accuracy", 100.0, "%"), "nll": ("test_nll", 1.0, ""),
           "ece": ("test_ece", 100.0, "%"), "brier": ("test_brier", 1.0, "")}  # name: (record key, scale, unit)
COMPARISONS = {"equal-epochs": "equal epochs", "equal-compute": "equal compute (baseline at twice the epochs)",
               "equal-compute-step": "equal compute per step (--equal-compute)"}
AGAINST_FEATURED = "equal epochs, against IPS"
STARTUP_S = 6.0  # Python, torch and the data, before the first step, on a small CPU


@dataclass(frozen=True)
class Setting:
    """One arm of a study: a label and the training arguments that set it apart (TrainConfig field -> value)."""

    label: str
    overrides: dict[str, Any]

    @property
    def slug(self) -> str:
        """The label as a run-id part: letters, digits, '.' and '-'."""
        cleaned = "".join(c if c.isalnum() or c == "." else "-" for c in self.label)
        return "-".join(filter(None, cleaned.split("-")))


@dataclass(frozen=True)
class Comparison:
    """A setting measured against a baseline setting on the same seeds."""

    name: str  # "equal epochs"
    setting: str  # a setting's label
    baseline: str  # a setting's label


@dataclass
class StudySpec:
    """What a study trains and compares; saved as JSON next to its runs."""

    study_id: str
    dataset: str
    model: str
    seeds: list[int]
    settings: list[Setting]
    comparisons: list[Comparison]
    shared: dict[str, Any] = field(default_factory=dict)  # TrainConfig values every run gets (lr, holdout, ...)
    created: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if not RUN_ID_PATTERN.fullmatch(self.study_id) or ".." in self.study_id:
            raise ValueError(f"a study id may hold letters, digits, '.', '_' and '-' only; got {self.study_id!r}")
        if not self.seeds or not self.settings:
            raise ValueError("a study needs at least one seed and one setting")
        check_number(self.created, "a study's created", high=LATEST_TIME)  # the picker sorts by it
        for seed in self.seeds:
            check_number(seed, "a study's seed", high=2**63 - 1, whole=True)
        labels = [s.label for s in self.settings]
        if len(set(labels)) != len(labels) or len({s.slug for s in self.settings}) != len(labels):
            raise ValueError(f"setting labels must differ (also as run ids): {labels}")
        known = set(field_types())
        for s in self.settings:
            unknown = set(s.overrides) - known
            if unknown:
                raise ValueError(f"setting {s.label!r}: unknown training arguments {sorted(unknown)}")
        for c in self.comparisons:
            if c.setting not in labels or c.baseline not in labels:
                raise ValueError(f"comparison {c.name!r} names a setting the study lacks: {c.setting!r} or "
                                 f"{c.baseline!r} (settings: {labels})")

    def setting(self, label: str) -> Setting:
        return next(s for s in self.settings if s.label == label)

    def run_id(self, setting: Setting, seed: int) -> str:
        return f"{self.study_id}-{setting.slug}-s{seed}"

    def config(self, setting: Setting, seed: int, out: Path) -> TrainConfig:
        """The training config of one run: defaults, then the shared values, then the setting's, then the seed."""
        return TrainConfig(**{**asdict(TrainConfig()), "dataset": self.dataset, "model": self.model, **self.shared,
                              **setting.overrides, "seed": seed, "out": str(out),
                              "run_id": self.run_id(setting, seed)})

    def runs(self) -> list[tuple[Setting, int]]:
        """Every (setting, seed), seed-major: the first seeds of every setting finish first."""
        return [(setting, seed) for seed in self.seeds for setting in self.settings]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StudySpec:
        return cls(**{**data, "settings": [Setting(**s) for s in data["settings"]],
                      "comparisons": [Comparison(**c) for c in data["comparisons"]]})


def comparison_spec(study_id: str, dataset: str, model: str, methods: Sequence[str], epochs: int,
                    comparisons: Sequence[str], seeds: Sequence[int],
                    shared: dict[str, Any] | None = None, teacher: str = "") -> StudySpec:
    """The study of ``methods`` against the baseline (CE) under the named ``comparisons`` (``COMPARISONS``); when
    IPS is among them, every other method is also compared with IPS at equal epochs (same seeds, paired).
    ``teacher``: the finished run a ``kd`` arm distils from."""
    unknown = [c for c in comparisons if c not in COMPARISONS]
    if unknown:
        raise ValueError(f"unknown comparison(s) {unknown}; choose from {list(COMPARISONS)}")
    others = [m for m in methods if m != BASELINE]
    if not others:
        raise ValueError(f"a comparison needs at least one method besides the baseline {BASELINE!r}")
    for name in methods:
        if name not in METHODS:
            raise ValueError(f"unknown method {name!r}; choose from {list(METHODS)}")
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1; got {epochs}")
    base = Setting(f"{BASELINE} {epochs} ep", {"method": BASELINE, "epochs": epochs})
    settings, compared = [base], []
    if any(METHODS[m].needs_teacher for m in others) and not teacher:
        raise ValueError("a kd arm needs a teacher: give the folder of a finished run (--teacher RUN_DIR)")
    for method in others:
        arm = Setting(f"{method} {epochs} ep", {"method": method, "epochs": epochs,
                                               **({"teacher": teacher} if METHODS[method].needs_teacher else {})})
        settings.append(arm)
        if "equal-epochs" in comparisons:
            compared.append(Comparison(COMPARISONS["equal-epochs"], arm.label, base.label))
        pairs = METHODS[method].two_views
        if "equal-compute" in comparisons and pairs:
            long_base = Setting(f"{BASELINE} {2 * epochs} ep", {"method": BASELINE, "epochs": 2 * epochs})
            if long_base not in settings:
                settings.append(long_base)
            compared.append(Comparison(COMPARISONS["equal-compute"], arm.label, long_base.label))
        if "equal-compute-step" in comparisons and pairs:
            halved = Setting(f"{method} {epochs} ep --equal-compute", {"method": method, "epochs": epochs,
                                                                       "equal_compute": True})
            settings.append(halved)
            compared.append(Comparison(COMPARISONS["equal-compute-step"], halved.label, base.label))
    if FEATURED in others:
        compared += [Comparison(AGAINST_FEATURED, arm.label, f"{FEATURED} {epochs} ep") for arm in settings
                     if arm.overrides["method"] not in (BASELINE, FEATURED) and arm.overrides["epochs"] == epochs
                     and not arm.overrides.get("equal_compute")]
    return StudySpec(study_id, dataset, model, list(seeds), settings, compared, dict(shared or {}))


# --------------------------------------------------------------------------------------------------
# The studies behind docs/results.md (the evidence studies: ``--preset``)
# --------------------------------------------------------------------------------------------------
def _sensitivity(study_id: str, dataset: str, patch_sizes: Sequence[int]) -> StudySpec:
    """One knob at a time around the defaults, on --holdout (80/20 of the training split; test split untouched)."""
    ips = {"method": "ips", "epochs": 30, "swap_prob": 1.0}  # the defaults before this study chose 0.5
    knobs = [("ips T=1", {"temperature": 1.0}), ("ips T=2", {"temperature": 2.0}),
             ("ips kd 0.25", {"kd_weight": 0.25}), ("ips kd 0.5", {"kd_weight": 0.5}),
             ("ips ratio 0.25", {"swap_ratio": 0.25}), ("ips ratio 0.75", {"swap_ratio": 0.75}),
             ("ips prob 0.5", {"swap_prob": 0.5}),
             *((f"ips patch {p}", {"patch_size": p}) for p in patch_sizes)]
    settings = [Setting("ce 30 ep", {"method": "ce", "epochs": 30}), Setting("ips 30 ep", ips),
                Setting("ce 15 ep", {"method": "ce", "epochs": 15}), Setting("ips 15 ep", {**ips, "epochs": 15}),
                Setting("ce 60 ep", {"method": "ce", "epochs": 60}), Setting("ips 60 ep", {**ips, "epochs": 60}),
                *(Setting(label, {**ips, **change}) for label, change in knobs),
                Setting("ips-margin", {**ips, "method": "ips-margin"}),
                Setting("ips-correct", {**ips, "method": "ips-correct"})]
    baseline_of = {"ips 15 ep": "ce 15 ep", "ips 60 ep": "ce 60 ep"}
    comparisons = [Comparison("holdout, one knob changed", s.label, baseline_of.get(s.label, "ce 30 ep"))
                   for s in settings if not s.label.startswith("ce")]
    return StudySpec(study_id, dataset, "small_cnn", [0, 1, 2, 3], settings, comparisons, {"holdout": True})


def _results_table(dataset: str) -> StudySpec:
    """CE against IPS at equal epochs and equal compute on 6 seeds, IPS swapping every pair (the default before
    the holdout study), plus the milder swap the holdout study favoured (swap probability 0.5, now the default),
    confirmed once on the test split."""
    spec = comparison_spec(dataset, dataset, "small_cnn", ["ce", "ips"], 30, ["equal-epochs", "equal-compute"],
                           range(6))
    spec.setting("ips 30 ep").overrides["swap_prob"] = 1.0  # every pair swapped: the default before this study
    milder = Setting("ips 30 ep prob 0.5", {"method": "ips", "epochs": 30, "swap_prob": 0.5})
    spec.settings.append(milder)
    spec.comparisons.append(Comparison("equal epochs, swap probability 0.5", milder.label, "ce 30 ep"))
    return spec


PRESETS: dict[str, Callable[[], StudySpec]] = {
    "mnist5k": lambda: _results_table("mnist5k"),
    "digits": lambda: _results_table("digits"),
    "holdout-mnist5k": lambda: _sensitivity("mnist5k", "mnist5k", [2, 4, 14]),
    "holdout-digits": lambda: _sensitivity("digits", "digits", [1, 4]),
}


# --------------------------------------------------------------------------------------------------
# Specs on disk, estimates, results
# --------------------------------------------------------------------------------------------------
def save_spec(spec: StudySpec, out: Path) -> Path:
    path = Path(out) / STUDIES / f"{spec.study_id}.json"
    write_json(path, spec.to_json())
    return path


def load_spec(out: Path, study_id: str) -> StudySpec:
    path = Path(out) / STUDIES / f"{study_id}.json"
    data = read_json(path)
    if not data:
        raise ValueError(f"there is no study {study_id!r} under {Path(out) / STUDIES}")
    return StudySpec.from_json(data)


def list_studies(out: Path) -> list[StudySpec]:
    """Every readable study spec under ``out``, newest first (a malformed one is skipped)."""
    specs = []
    for path in sorted((Path(out) / STUDIES).glob("*.json")):
        try:
            specs.append(StudySpec.from_json(read_json(path)))
        except (KeyError, TypeError, ValueError):
            continue
    return sorted(specs, key=lambda s: s.created, reverse=True)


def estimate_seconds(spec: StudySpec, runs_dir: Path, default_images_per_s: float = 1500.0) -> tuple[float, str]:
    """(seconds, how it was estimated) to train every unfinished run of ``spec`` one after another.

    The speed is the median training images/s of earlier finished runs under ``runs_dir`` of the same dataset,
    model and method on this machine; without one, ``default_images_per_s``, and the answer says so.
    """
    speeds: dict[str, list[float]] = {}
    for config_path in Path(runs_dir).glob(f"*/{CONFIG}"):
        config = read_json(config_path)
        if (config.get("dataset"), config.get("model")) != (spec.dataset, spec.model):
            continue
        last = final_epoch(config_path.parent)
        if last and last.get("images_per_s"):
            speeds.setdefault(config.get("method", ""), []).append(float(last["images_per_s"]))
    total, measured = 0.0, set()
    from explorer.data import load_dataset  # the training split's size; cached per process

    n_train = len(load_dataset(spec.dataset).train_labels) * (0.8 if spec.shared.get("holdout") else 1.0)
    for setting, seed in spec.runs():
        if final_epoch(Path(runs_dir) / spec.run_id(setting, seed)) is not None:
            continue
        cfg = spec.config(setting, seed, Path(runs_dir))
        images = cfg.epochs * math.ceil(n_train / cfg.batch_size) * step_images(cfg)
        known = sorted(speeds.get(cfg.method, []))
        if known:
            measured.add(cfg.method)
        total += STARTUP_S + images / (known[len(known) // 2] if known else default_images_per_s)
    how = (f"from measured speeds of earlier runs ({', '.join(sorted(measured))})" if measured else
           f"no earlier run of this dataset and model here: assumed {default_images_per_s:.0f} images/s")
    return total, how


@dataclass(frozen=True)
class StudyResults:
    """The finished runs of a study: per setting, per seed, the final epoch's test metrics (scaled)."""

    spec: StudySpec
    values: dict[str, dict[str, dict[int, float]]]  # metric -> setting label -> seed -> value
    pending: int  # runs not finished yet

    def summary(self, metric: str, label: str) -> MeanInterval | None:
        by_seed = self.values[metric].get(label, {})
        return mean_interval(list(by_seed.values())) if by_seed else None

    def difference(self, metric: str, comparison: Comparison) -> PairedDifference | None:
        method, base = self.values[metric].get(comparison.setting, {}), self.values[metric].get(comparison.baseline, {})
        return paired_difference(method, base) if set(method) & set(base) else None

    def sentences(self) -> list[str]:
        """One sentence per comparison on accuracy, claiming only what its interval allows."""
        out = []
        for c in self.spec.comparisons:
            diff = self.difference("accuracy", c)
            if diff is not None:
                out.append(comparison_sentence(diff, c.setting, c.baseline, f"({c.name}, test accuracy)"))
        return out

    def recorded(self, command: str) -> list[Recorded]:
        """The comparisons with an interval as ``explorer.training.measured`` records them (test accuracy
        difference, the arms' NLL), each with the setting's method, epochs and swap probability."""
        rows = []
        for c in self.spec.comparisons:
            accuracy = self.difference("accuracy", c)
            if accuracy is None or not accuracy.has_interval:
                continue
            cfg = self.spec.config(self.spec.setting(c.setting), self.spec.seeds[0], Path("."))
            nll = [self.summary("nll", label) for label in (c.baseline, c.setting)]
            rows.append(Recorded(
                study=self.spec.study_id, command=command, dataset=self.spec.dataset,
                split="holdout" if cfg.holdout else "test", comparison=c.name, setting=c.setting,
                baseline=c.baseline, method=cfg.method, epochs=cfg.epochs, swap_prob=cfg.swap_prob, seeds=accuracy.n,
                difference=round(accuracy.mean, 2), low=round(accuracy.low, 2), high=round(accuracy.high, 2),
                nll_baseline=round(nll[0].mean, 3), nll_setting=round(nll[1].mean, 3)))
        return rows

    def to_json(self) -> dict[str, Any]:
        comparisons = []
        for c in self.spec.comparisons:
            diffs = {m: self.difference(m, c) for m in METRICS}
            comparisons.append({**asdict(c), "differences": {m: d.to_json() for m, d in diffs.items() if d}})
        return {"study": self.spec.to_json(), "pending": self.pending, "metrics": list(METRICS),
                "values": {m: {label: [{"seed": s, "value": v} for s, v in by_seed.items()]
                               for label, by_seed in per.items()} for m, per in self.values.items()},
                "comparisons": comparisons, "sentences": self.sentences()}

    def markdown(self) -> str:
        """The comparisons table (mean ± std, paired Δ with 95 % CI) and, below it, every run."""
        lines = ["| comparison | setting | baseline | setting acc (%) | baseline acc (%) | Δ acc, 95 % CI (points) "
                 "| NLL, baseline → setting | ECE %, baseline → setting | seeds |", "|" + "---|" * 9]
        for c in self.spec.comparisons:
            diff = self.difference("accuracy", c)
            if diff is None:
                continue
            interval = ("no interval" if not diff.has_interval else f"{diff.low:+.2f} to {diff.high:+.2f}")
            accuracy = [_mean_std(self.summary("accuracy", label)) for label in (c.setting, c.baseline)]
            lines.append(f"| {c.name} | {c.setting} | {c.baseline} | {accuracy[0]} | {accuracy[1]} "
                         f"| **{diff.mean:+.2f}** ({interval}) | {_arrow(self, 'nll', c, 3)} "
                         f"| {_arrow(self, 'ece', c, 2)} | {diff.n} |")
        lines += ["", "| setting | seed | test acc (%) | test NLL | test ECE (%) | test Brier |", "|" + "---|" * 6]
        for setting in self.spec.settings:
            for seed in sorted(self.values["accuracy"].get(setting.label, {})):
                row = [f"{self.values[m][setting.label][seed]:.{d}f}" for m, d in
                       (("accuracy", 2), ("nll", 4), ("ece", 2), ("brier", 4))]
                lines.append(f"| {setting.label} | {seed} | " + " | ".join(row) + " |")
        return "\n".join(lines)

    def csv(self) -> str:
        """One row per finished run: study, setting, seed and every metric at full precision."""
        rows = ["study,setting,seed," + ",".join(METRICS)]
        for setting in self.spec.settings:
            for seed in sorted(self.values["accuracy"].get(setting.label, {})):
                rows.append(",".join([self.spec.study_id, json.dumps(setting.label), str(seed),
                                      *(repr(self.values[m][setting.label][seed]) for m in METRICS)]))
        return "\n".join(rows) + "\n"


def _mean_std(summary: MeanInterval | None) -> str:
    if summary is None:
        return "—"
    return f"{summary.mean:.2f}" if summary.std is None else f"{summary.mean:.2f} ± {summary.std:.2f}"


def _arrow(results: StudyResults, metric: str, c: Comparison, digits: int) -> str:
    base, arm = results.summary(metric, c.baseline), results.summary(metric, c.setting)
    return "—" if base is None or arm is None else f"{base.mean:.{digits}f} → {arm.mean:.{digits}f}"


def read_results(spec: StudySpec, runs_dir: Path) -> StudyResults:
    """The final-epoch test metrics of every finished run of ``spec`` under ``runs_dir``."""
    values: dict[str, dict[str, dict[int, float]]] = {m: {} for m in METRICS}
    pending = 0
    for setting, seed in spec.runs():
        record = final_epoch(Path(runs_dir) / spec.run_id(setting, seed))
        if record is None or any(key not in record for key, _, _ in METRICS.values()):
            pending += 1
            continue
        for metric, (key, scale, _) in METRICS.items():
            values[metric].setdefault(setting.label, {})[seed] = scale * float(record[key])
    return StudyResults(spec, values, pending)


def confidence_markdown(spec: StudySpec, runs_dir: Path) -> str:
    """Per setting, the means over its finished seeds of ``overconfidence.confidence_profile``: how sure its
    errors are, the share of NLL they carry, the KD/CE ratio and the teacher's confidence (where logged)."""
    columns = [("errors", "errors", 1), ("error_confidence", "conf. of errors", 3),
               ("correct_confidence", "conf. of right", 3), ("error_nll_share", "NLL share of errors", 2),
               ("kd_ce_ratio", "KD/CE (final epoch)", 2), ("teacher_confidence", "teacher conf.", 3),
               ("teacher_correct", "teacher right", 3)]
    lines = ["| setting | seeds | " + " | ".join(title for _, title, _ in columns) + " |",
             "|" + "---|" * (len(columns) + 2)]
    for setting in spec.settings:
        profiles = [confidence_profile(Path(runs_dir) / spec.run_id(setting, seed)) for seed in spec.seeds
                    if final_epoch(Path(runs_dir) / spec.run_id(setting, seed)) is not None]
        if not profiles:
            continue
        cells = []
        for key, _, digits in columns:
            values = [p[key] for p in profiles if p[key] is not None]
            cells.append(f"{sum(values) / len(values):.{digits}f}" if values else "—")
        lines.append(f"| {setting.label} | {len(profiles)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
        spec.seeds = list(args.seeds)
    return spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m explorer.study", description=__doc__.split("\n\n")[0])
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
        save_spec(spec, out)
        seconds, how = estimate_seconds(spec, out)
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
