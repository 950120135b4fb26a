"""Means, paired differences and 95 % t-intervals, and the sentences and tables that report them.

Why: a difference between two methods over a handful of seeds means little without its interval, and an
interval that includes 0 shows no difference. Every "method vs baseline" number goes through here, so the
wording never claims more than the interval allows.

- ``mean_interval``: mean, sample standard deviation (n - 1 in the denominator) and the two-sided 95 %
  Student-t interval of the mean, ``mean ± t(0.975, n - 1) * std / sqrt(n)``. One value has no spread and no
  interval (``std``, ``low`` and ``high`` are None).
- ``paired_difference``: the per-seed differences method - baseline over the seeds both have, summarised
  the same way (a paired t-interval: seed-to-seed variation common to both methods cancels).
- Fewer than ``SMALL_SAMPLE`` values: the t critical value is large (4.30 for 3 seeds against 1.96 for
  many) and the standard deviation is itself rough, so the sentence says the interval is wide.

Plain Python and SciPy; no torch.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import t as student_t

__all__ = ["CONFIDENCE", "SMALL_SAMPLE", "MeanInterval", "PairedDifference", "SeedTable", "comparison_sentence",
           "format_signed", "mean_interval", "paired_difference", "seed_table", "t_critical"]

CONFIDENCE = 0.95
SMALL_SAMPLE = 5
_MINUS = "\u2212"  # the typographic minus sign, as in "−0.5"


def t_critical(n: int) -> float:
    """The two-sided 95 % critical value of Student's t with n - 1 degrees of freedom (n >= 2)."""
    if n < 2:
        raise ValueError(f"a t-interval needs at least 2 values; got {n}")
    return float(student_t.ppf(0.5 + CONFIDENCE / 2, n - 1))


@dataclass(frozen=True)
class MeanInterval:
    """Mean, sample std and 95 % t-interval of n values; std, low and high are None when n < 2."""

    n: int
    mean: float
    std: float | None
    low: float | None
    high: float | None

    @property
    def has_interval(self) -> bool:
        return self.low is not None

    @property
    def small_sample(self) -> bool:
        """Fewer than SMALL_SAMPLE values: a wide interval resting on a rough std."""
        return self.n < SMALL_SAMPLE

    @property
    def excludes_zero(self) -> bool:
        """True only when an interval exists and lies entirely above or entirely below 0."""
        return self.has_interval and (self.low > 0 or self.high < 0)

    def to_json(self) -> dict:
        return {**asdict(self), "confidence": CONFIDENCE, "small_sample": self.small_sample,
                "excludes_zero": self.excludes_zero}


def _finite_values(values: Sequence[float] | np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0:
        raise ValueError("need at least one value to summarise; got none")
    if not np.isfinite(array).all():
        raise ValueError(f"values must be finite numbers; got {array[~np.isfinite(array)][:3].tolist()} among them")
    return array


def mean_interval(values: Sequence[float] | np.ndarray) -> MeanInterval:
    """Mean, sample std (ddof 1) and the 95 % t-interval of the mean of ``values``."""
    array = _finite_values(values)
    n, mean = array.size, float(array.mean())
    if n < 2:
        return MeanInterval(n, mean, None, None, None)
    std = float(array.std(ddof=1))
    half_width = t_critical(n) * std / math.sqrt(n)
    return MeanInterval(n, mean, std, mean - half_width, mean + half_width)


@dataclass(frozen=True)
class PairedDifference(MeanInterval):
    """``MeanInterval`` of the per-seed differences method - baseline, and those differences by seed."""

    per_seed: dict[int, float]

    def to_json(self) -> dict:
        return {**super().to_json(), "per_seed": [{"seed": s, "difference": d} for s, d in self.per_seed.items()]}


def paired_difference(method: Mapping[int, float], baseline: Mapping[int, float]) -> PairedDifference:
    """Differences method[seed] - baseline[seed] over the seeds both have (sorted), with their 95 % t-interval.

    Seeds that only one side has are left out: a difference needs both runs of the same seed.
    """
    seeds = sorted(set(method) & set(baseline))
    if not seeds:
        raise ValueError(f"method and baseline share no seed (method: {sorted(method)}, baseline: {sorted(baseline)})")
    per_seed = {seed: float(method[seed]) - float(baseline[seed]) for seed in seeds}
    summary = mean_interval(list(per_seed.values()))
    return PairedDifference(**asdict(summary), per_seed=per_seed)


def format_signed(value: float, digits: int) -> str:
    """``+0.27`` / ``−0.50``: always a sign, the typographic minus."""
    return f"{value:+.{digits}f}".replace("-", _MINUS)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def comparison_sentence(difference: MeanInterval, method: str, baseline: str, context: str = "",
                        unit: str = "points", noun: str = "seed", higher: str = "higher", lower: str = "lower",
                        digits: int = 2) -> str:
    """One plain sentence on ``difference`` (method - baseline) that claims only what its interval allows.

    ``context`` follows the names ("at equal epochs"); ``noun`` counts the samples ("seed", "image");
    ``higher``/``lower`` say what a positive/negative difference means ("more faithful").
    E.g. "IPS vs CE at equal epochs: +0.27 points (95 % CI −0.50 to +1.04, 6 seeds): the interval includes 0,
    so no difference is shown."
    """
    unit_suffix = f" {unit}" if unit else ""
    head = f"{method} vs {baseline}{' ' + context if context else ''}: {format_signed(difference.mean, digits)}"
    head += unit_suffix
    if not difference.has_interval:
        return f"{head} ({_count(difference.n, noun)}): one {noun} gives no interval, so no difference can be claimed."
    interval = (f"95 % CI {format_signed(difference.low, digits)} to {format_signed(difference.high, digits)}, "
                f"{_count(difference.n, noun)}")
    if difference.excludes_zero:
        direction = higher if difference.low > 0 else lower
        near, far = sorted((abs(difference.low), abs(difference.high)))
        verdict = (f"the interval excludes 0, so {method} is {direction} than {baseline}, "
                   f"by {near:.{digits}f} to {far:.{digits}f}{unit_suffix}.")
    else:
        verdict = "the interval includes 0, so no difference is shown."
    sentence = f"{head} ({interval}): {verdict}"
    if difference.small_sample:
        sentence += (f" Only {_count(difference.n, noun)}: the t critical value is {t_critical(difference.n):.2f} "
                     f"(1.96 with many), so the interval is wide.")
    return sentence


# --------------------------------------------------------------------------------------------------
# Per-seed tables
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SeedTable:
    """Per-seed values of several methods, each method's mean ± std, and each one's difference to the baseline."""

    baseline: str
    methods: tuple[str, ...]  # in the order given, the baseline among them
    seeds: tuple[int, ...]  # every seed any method has, sorted
    values: dict[str, dict[int, float]]  # method -> seed -> value
    summaries: dict[str, MeanInterval]  # method -> mean ± std over its own seeds
    differences: dict[str, PairedDifference]  # every method but the baseline -> its paired difference to it

    def to_markdown(self, digits: int = 2) -> str:
        """A Markdown table: one row per seed (— where a method lacks it), then mean ± std, n, and Δ (95 % CI)."""
        header = ["seed", *self.methods]
        rows = [[str(seed), *(f"{self.values[m][seed]:.{digits}f}" if seed in self.values[m] else "—"
                              for m in self.methods)] for seed in self.seeds]
        rows.append(["mean ± std", *(self._mean_std(self.summaries[m], digits) for m in self.methods)])
        rows.append(["n", *(str(self.summaries[m].n) for m in self.methods)])
        rows.append([f"Δ vs {self.baseline} (95 % CI)",
                     *(self._difference(self.differences[m], digits) if m in self.differences else "—"
                       for m in self.methods)])
        lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        if any(d.small_sample for d in self.differences.values()):
            lines.append(f"\nIntervals from fewer than {SMALL_SAMPLE} paired seeds are wide (large t critical value).")
        return "\n".join(lines)

    def to_csv(self) -> str:
        """CSV at full precision: one row per seed, then summary rows named in the ``seed`` column; empty = none."""
        summary_rows = {
            "mean": {m: s.mean for m, s in self.summaries.items()},
            "std": {m: s.std for m, s in self.summaries.items()},
            "n": {m: s.n for m, s in self.summaries.items()},
            f"difference vs {self.baseline}": {m: d.mean for m, d in self.differences.items()},
            "95% CI low": {m: d.low for m, d in self.differences.items()},
            "95% CI high": {m: d.high for m, d in self.differences.items()},
            "paired seeds": {m: d.n for m, d in self.differences.items()},
        }
        rows = [(seed, {m: self.values[m].get(seed) for m in self.methods}) for seed in self.seeds]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["seed", *self.methods])
        for name, by_method in [*rows, *summary_rows.items()]:
            writer.writerow([name, *("" if by_method.get(m) is None else by_method[m] for m in self.methods)])
        return out.getvalue()

    def to_json(self) -> dict:
        return {"baseline": self.baseline, "methods": list(self.methods), "seeds": list(self.seeds),
                "values": {m: [{"seed": s, "value": v} for s, v in self.values[m].items()] for m in self.methods},
                "summaries": {m: s.to_json() for m, s in self.summaries.items()},
                "differences": {m: d.to_json() for m, d in self.differences.items()}}

    @staticmethod
    def _mean_std(summary: MeanInterval, digits: int) -> str:
        if summary.std is None:
            return f"{summary.mean:.{digits}f}"
        return f"{summary.mean:.{digits}f} ± {summary.std:.{digits}f}"

    @staticmethod
    def _difference(difference: PairedDifference, digits: int) -> str:
        if not difference.has_interval:
            return f"{format_signed(difference.mean, digits)} (no interval)"
        return (f"{format_signed(difference.mean, digits)} ({format_signed(difference.low, digits)} to "
                f"{format_signed(difference.high, digits)})")


def seed_table(results: Mapping[str, Mapping[int, float]], baseline: str) -> SeedTable:
    """Summaries of ``results`` (method -> seed -> value) and every method's paired difference to ``baseline``."""
    if baseline not in results:
        raise ValueError(f"the baseline {baseline!r} is not among the methods {list(results)}")
    empty = [m for m, by_seed in results.items() if not by_seed]
    if empty:
        raise ValueError(f"methods without any seed: {empty}")
    values = {m: {int(s): float(v) for s, v in sorted(by_seed.items())} for m, by_seed in results.items()}
    seeds = tuple(sorted({s for by_seed in values.values() for s in by_seed}))
    summaries = {m: mean_interval(list(by_seed.values())) for m, by_seed in values.items()}
    differences = {m: paired_difference(values[m], values[baseline]) for m in values if m != baseline}
    return SeedTable(baseline, tuple(values), seeds, values, summaries, differences)
