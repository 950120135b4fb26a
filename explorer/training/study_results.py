"""A study's results: the final-epoch test metrics of its finished runs, per setting and seed; the paired
difference of each comparison with its 95 % interval; the tables and sentences the CLI, the Study tab and the
measured-numbers file take from them."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from explorer.stats import MeanInterval, PairedDifference, comparison_sentence, mean_interval, paired_difference
from explorer.training.measured import Recorded
from explorer.training.overconfidence import confidence_profile
from explorer.training.runfolder import (
    final_epoch,
)
from explorer.training.study import Comparison, StudySpec

__all__ = ["METRICS", "StudyResults", "confidence_markdown", "read_results"]

METRICS = {"accuracy": ("test_accuracy", 100.0, "%"), "nll": ("test_nll", 1.0, ""),
           "ece": ("test_ece", 100.0, "%"), "brier": ("test_brier", 1.0, "")}  # name: (record key, scale, unit)


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
