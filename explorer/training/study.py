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

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from explorer.training.config import MAX_SEED, RUN_ID_PATTERN, TrainConfig, field_types, step_images
from explorer.training.methods import BASELINE, FEATURED, METHODS
from explorer.training.runfolder import (
    CONFIG,
    LATEST_TIME,
    check_number,
    final_epoch,
    read_json,
    write_json,
)

__all__ = ["AGAINST_FEATURED", "COMPARISONS", "PRESETS", "STARTUP_S", "STUDIES", "Comparison", "Setting", "StudySpec",
           "busy_note", "comparison_spec", "estimate_seconds", "list_studies", "load_spec", "save_spec"]

STUDIES = "studies"  # the folder of study specs inside the runs folder
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
        for seed in self.seeds:  # the training CLI's range (--seed), said as it says it
            if isinstance(seed, bool) or not isinstance(seed, (int, float)) or not 0 <= seed <= MAX_SEED \
                    or not float(seed).is_integer():
                raise ValueError(f"a study's seeds must be whole numbers from 0 to 2^63 - 1; got {str(seed)[:40]!r}")
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


def busy_note() -> str:
    """What a time estimate must add while this machine is busy (its 1-minute load average above its core count),
    else "": estimates come from step times measured on it before, and other work now slows every step."""
    load, cores = getattr(os, "getloadavg", lambda: (0.0,))()[0], os.cpu_count() or 1
    if load <= cores:
        return ""
    return f"this machine is busy now (load average {load:.1f} on {cores} cores), so it will take longer"


def estimate_seconds(spec: StudySpec, runs_dir: Path, default_images_per_s: float = 1500.0) -> tuple[float, str]:
    """(seconds, how it was estimated) to train every unfinished run of ``spec`` one after another.

    The speed is the median training images/s of earlier finished runs under ``runs_dir`` of the same dataset,
    model and method on this machine; without one, ``default_images_per_s``, and the answer says so (and says when
    the machine is busy now: ``busy_note``).
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
    return total, "; ".join(filter(None, [how, busy_note()]))
