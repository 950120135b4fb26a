"""Sentences about what the models shown do, generated from their numbers, never written by hand.

Why: "IPS gives less over-confident predictions" is a claim about particular models, and the app shows whatever
two checkpoints a person picks. So every sentence the app makes about a method's effect is computed here from the
metrics of the models on screen (the Compare tab's reports over the test split, the Confidence gaps tab's
statistics), says which way each number went and by how much, and is true of those models by construction.

- ``compare_claims``: accuracy (with the exact McNemar test on the samples where exactly one model is right),
  calibration (ECE), mean true-class probability, over-confidence (mean top probability minus accuracy), the
  confidence of each model's errors, NLL and the share of it the errors carry, and a one-line summary. Two models
  are one seed of each method: accuracy, ECE, true-class probability and NLL are said to differ only where the
  McNemar test or a paired bootstrap interval over the test images excludes "no difference", else the sentence
  says "no difference shown"; whether a difference holds over seeds is the Study tab's question, not theirs.
- ``gap_claims``: how far apart the two swapped views' confidences are, and who teaches (a′, b′ or a tie).
- ``distinct`` and ``teacher_phrase``: two numbers printed with enough digits to tell them apart, so a "teacher"
  label is never backed by "1.000 vs 1.000"; exactly equal numbers are called a tie.

Gradio-free; Markdown text with the models' names in bold as the app shows them ("A · ce", "B · ips").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from scipy.stats import binomtest
from torch import Tensor

from explorer.analysis.comparison import ModelReport
from explorer.analysis.pairs import GapStatistics
from explorer.evaluate import ECE_BINS
from explorer.stats import format_signed

__all__ = ["Claim", "bootstrap_intervals", "claims_heading", "claims_markdown", "compare_claims", "distinct",
           "gap_claims", "teacher_phrase"]

MOST_DIGITS = 8  # float32 tells numbers near 1 apart down to 6e-8
RESAMPLES = 1000  # bootstrap resamples of the test images behind a claim's 95 % interval


@dataclass(frozen=True)
class Claim:
    """One generated sentence and the two numbers it is about (model A's, model B's)."""

    metric: str  # accuracy, ece, true_class_confidence, overconfidence, error_confidence, nll, gap, teachers, summary
    value_a: float
    value_b: float
    text: str  # Markdown
    difference_shown: bool | None = None  # whether its test excludes "no difference" (None: not tested)


def distinct(p: float, q: float, digits: int = 3) -> tuple[str, str]:
    """``p`` and ``q`` with the fewest decimals (at least ``digits``) that tell them apart; equal stays equal."""
    for d in range(digits, MOST_DIGITS + 1 if p != q else digits + 1):
        first, second = f"{p:.{d}f}", f"{q:.{d}f}"
        if first != second:
            break
    return first, second


def teacher_phrase(confidence_a: float, confidence_b: float) -> str:
    """Which swapped view teaches and why, in numbers that show it: "view **a′** teaches b′ (0.9981 vs 0.9974)"."""
    a, b = distinct(confidence_a, confidence_b)
    if confidence_a == confidence_b:
        return f"a′ and b′ **tie** ({a} each): a′ teaches only by ips_loss's rule (a tie goes to a′)"
    teacher, student, high, low = ("a′", "b′", a, b) if confidence_a > confidence_b else ("b′", "a′", b, a)
    return f"view **{teacher}** teaches {student} ({high} vs {low})"


def _word(b: float, a: float, more: str, less: str, same: str) -> str:
    """``more`` when b > a, ``less`` when b < a, else ``same``."""
    return more if b > a else less if b < a else same


# --------------------------------------------------------------------------------------------------
# Two models over the test split
# --------------------------------------------------------------------------------------------------
def _accuracy(name_a: str, name_b: str, a: ModelReport, b: ModelReport) -> Claim:
    fixed, broken = int((~a.correct & b.correct).sum()), int((a.correct & ~b.correct).sum())
    acc_a, acc_b = a.metrics["accuracy"], b.metrics["accuracy"]
    text_a, text_b = distinct(100 * acc_a, 100 * acc_b, 2)
    p = binomtest(fixed, fixed + broken, 0.5).pvalue if fixed + broken else 1.0
    verb = _word(fixed, broken, "is more accurate than", "is less accurate than", "is as accurate as")
    head = (f"**{name_b}** {verb} **{name_a}**" if p < 0.05 or fixed == broken else
            f"No accuracy difference shown between **{name_b}** and **{name_a}**")
    text = (f"{head}: {text_b} % vs {text_a} % of {len(a.correct):,} test images "
            f"({fixed} of A's errors fixed, {broken} of its correct answers broken).")
    if fixed + broken:
        chance = "could well be chance" if p >= 0.05 else "is unlikely to be chance"
        text += (f" On the {fixed + broken} samples where exactly one of them is right, the split {fixed} : "
                 f"{broken} {chance} (exact McNemar test, p = {p:.2g}).")
    return Claim("accuracy", acc_a, acc_b, text, bool(p < 0.05))


def bootstrap_intervals(a: ModelReport, b: ModelReport, labels: Tensor, resamples: int = RESAMPLES,
                        seed: int = 0) -> dict[str, tuple[float, float]]:
    """95 % percentile intervals of B − A for ECE (points), mean true-class probability and NLL, over the test
    images resampled with replacement (one resample for both models: paired).

    They say how far the difference could move on another test set of this size for these two models; they say
    nothing about other seeds (a Study's question). Seeded: the same reports give the same intervals.
    """
    n = len(labels)
    rows = torch.randint(n, (resamples, n), generator=torch.Generator().manual_seed(seed))
    edges = torch.linspace(0, 1, ECE_BINS + 1, dtype=torch.float64)
    offsets = (torch.arange(resamples) * ECE_BINS)[:, None]
    per_model = []
    for report in (a, b):
        confidence, correct = report.confidence.double(), report.correct.double()
        true_p = report.probabilities.double().gather(1, labels.long()[:, None]).squeeze(1)
        which = (torch.bucketize(confidence, edges, right=False) - 1).clamp(0, ECE_BINS - 1)
        flat = (offsets + which[rows]).flatten()  # (resample, bin) of every drawn image
        gap = (torch.bincount(flat, weights=correct[rows].flatten(), minlength=resamples * ECE_BINS)
               - torch.bincount(flat, weights=confidence[rows].flatten(), minlength=resamples * ECE_BINS))
        per_model.append({"ece": 100 * gap.view(resamples, ECE_BINS).abs().sum(1) / n,
                          "true_class_confidence": true_p[rows].mean(1),
                          "nll": -true_p.clamp_min(torch.finfo(torch.float32).tiny).log()[rows].mean(1)})
    intervals = {}
    for metric in per_model[0]:
        low, high = torch.quantile(per_model[1][metric] - per_model[0][metric],
                                   torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
        intervals[metric] = (low, high)
    return intervals


def _tested(metric: str, a: float, b: float, digits: int, interval: tuple[float, float], differs: str,
            no_difference: str, unit: str = "") -> Claim:
    """A claim whose sentence is ``differs`` when the interval of B − A excludes 0 (or A and B are equal), else
    ``no_difference``; both
    have the slots {b}, {a} (the numbers, printed so that they differ) and {interval}."""
    low, high = interval
    shown = low > 0 or high < 0
    text_a, text_b = distinct(a, b, digits)
    bounds = (f"95 % interval of B − A over resampled test images {format_signed(low, digits)} to "
              f"{format_signed(high, digits)}{unit}" + ("" if shown else ", which includes 0"))
    template = differs if shown or a == b else no_difference  # equal numbers: "as well calibrated as"
    return Claim(metric, a, b, template.format(a=text_a, b=text_b, interval=bounds), shown)


def _two_numbers(metric: str, a: float, b: float, digits: int, sentence: str) -> Claim:
    """A claim whose ``sentence`` has the slots {b} and {a}: the numbers printed so that they differ."""
    text_a, text_b = distinct(a, b, digits)
    return Claim(metric, a, b, sentence.format(a=text_a, b=text_b))


def _overconfidence(name_a: str, name_b: str, a: ModelReport, b: ModelReport) -> Claim:
    """Mean top probability minus accuracy, in points: > 0 over-confident on average, < 0 under-confident."""
    gap_a, gap_b = (100 * (float(r.confidence.mean()) - r.metrics["accuracy"]) for r in (a, b))
    lean = _word(gap_b, gap_a, "leans further towards over-confidence than", "leans less towards over-confidence "
                 "than", "is as over-confident as")

    def state(gap: float) -> str:
        return "over-confident" if gap > 0 else "under-confident" if gap < 0 else "exactly confident"

    return Claim("overconfidence", gap_a, gap_b,
                 f"Mean top probability minus accuracy: **{name_b}** {format_signed(gap_b, 2)} points "
                 f"({state(gap_b)} on average), **{name_a}** {format_signed(gap_a, 2)} ({state(gap_a)}): "
                 f"**{name_b}** {lean} **{name_a}**.")


def _errors(name_a: str, name_b: str, a: ModelReport, b: ModelReport) -> Claim | None:
    """How confident each model is on the samples it gets wrong (None when either makes no error)."""
    if bool(a.correct.all()) or bool(b.correct.all()):
        return None
    conf_a, conf_b = float(a.confidence[~a.correct].mean()), float(b.confidence[~b.correct].mean())
    verb = _word(conf_b, conf_a, "more confident than", "less confident than", "as confident as")
    return _two_numbers("error_confidence", conf_a, conf_b, 3,
                        f"On the samples it gets wrong, **{name_b}** is {verb} **{name_a}**: mean "
                        f"top probability {{b}} over its {int((~b.correct).sum())} errors vs {{a}} over "
                        f"{int((~a.correct).sum())}.")


def _error_share_of_nll(report: ModelReport, labels: Tensor) -> float:
    """The share of the summed -log p(true class) that the wrong predictions carry (p clamped at float32's tiny)."""
    true_p = report.probabilities.double().gather(1, labels.long()[:, None]).squeeze(1)
    per_sample = -true_p.clamp_min(torch.finfo(torch.float32).tiny).log()
    total = float(per_sample.sum())
    return float(per_sample[~report.correct].sum()) / total if total > 0 else 0.0


def _nll(name_a: str, name_b: str, a: ModelReport, b: ModelReport, labels: Tensor,
         interval: tuple[float, float]) -> Claim:
    share_a, share_b = (_error_share_of_nll(r, labels) for r in (a, b))
    verb = _word(b.metrics["nll"], a.metrics["nll"], "higher than", "lower than", "the same as")
    errors = (f" ({{interval}}); its {int((~b.correct).sum())} errors carry {100 * share_b:.0f} % of it (A's "
              f"{int((~a.correct).sum())}: {100 * share_a:.0f} %).")
    return _tested("nll", a.metrics["nll"], b.metrics["nll"], 3, interval,
                   f"**{name_b}**'s NLL is {verb} **{name_a}**'s: {{b}} vs {{a}}{errors}",
                   f"No NLL difference shown between **{name_b}** and **{name_a}**: {{b}} vs {{a}}{errors}")


def compare_claims(name_a: str, name_b: str, a: ModelReport, b: ModelReport, labels: Tensor) -> list[Claim]:
    """What model B does differently from model A on one split, each sentence computed from the reports.

    ``labels`` are the split's true labels (the reports' order). The last claim is a one-line summary.
    """
    if len(a.correct) != len(b.correct) or len(labels) != len(a.correct):
        raise ValueError(f"the reports and labels cover different samples ({len(a.correct)}, {len(b.correct)}, "
                         f"{len(labels)})")
    ece_a, ece_b = 100 * a.metrics["ece"], 100 * b.metrics["ece"]
    tcc_a, tcc_b = a.metrics["true_class_confidence"], b.metrics["true_class_confidence"]
    calibrated = _word(ece_b, ece_a, "worse calibrated than", "better calibrated than", "as well calibrated as")
    confident = _word(tcc_b, tcc_a, "more confident in the true class than", "less confident in the true class than",
                      "as confident in the true class as")
    intervals = bootstrap_intervals(a, b, labels)
    claims = [
        _accuracy(name_a, name_b, a, b),
        _tested("ece", ece_a, ece_b, 2, intervals["ece"],
                f"**{name_b}** is {calibrated} **{name_a}**: ECE {{b}} % vs {{a}} % (15 bins; lower is better; "
                "{interval}).",
                f"No ECE difference shown between **{name_b}** and **{name_a}**: ECE {{b}} % vs {{a}} % (15 bins; "
                "{interval}).", " points"),
        _tested("true_class_confidence", tcc_a, tcc_b, 3, intervals["true_class_confidence"],
                f"**{name_b}** is {confident} **{name_a}**: mean true-class probability {{b}} vs {{a}} ({{interval}}).",
                f"No difference shown between **{name_b}** and **{name_a}** in the mean true-class probability: "
                "{b} vs {a} ({interval})."),
        _overconfidence(name_a, name_b, a, b),
        _errors(name_a, name_b, a, b),
        _nll(name_a, name_b, a, b, labels, intervals["nll"]),
    ]
    claims = [c for c in claims if c is not None]
    moved = {c.metric: "not shown to differ" if c.difference_shown is False and c.value_a != c.value_b else
             _word(c.value_b, c.value_a, "higher", "lower", "equal") for c in claims}
    claims.append(Claim("summary", 0.0, 0.0,
                        f"In short, **{name_b}** against **{name_a}** on this split: accuracy {moved['accuracy']}, "
                        f"mean true-class probability {moved['true_class_confidence']}, ECE {moved['ece']}, "
                        f"NLL {moved['nll']}."))
    return claims


# --------------------------------------------------------------------------------------------------
# Swapped pairs
# --------------------------------------------------------------------------------------------------
def gap_claims(stats: dict[str, GapStatistics], n_pairs: int) -> list[Claim]:
    """Per model who teaches (a′, b′, tie); for two models, whose swapped views agree more (the mean gap)."""
    claims = [Claim("teachers", s.a_teaches, s.b_teaches,
                    f"**{name}**: a′ teaches in {100 * s.a_teaches:.0f} % of the pairs, b′ in "
                    f"{100 * s.b_teaches:.0f} %, and {100 * s.ties:.0f} % are ties (both views exactly as "
                    f"confident; a′ teaches only by the rule)") for name, s in stats.items()]
    if len(stats) == 2:
        (name_a, a), (name_b, b) = stats.items()
        verb = _word(b.mean, a.mean, "further apart than", "closer together than", "as far apart as")
        claims.append(_two_numbers("gap", a.mean, b.mean, 3,
                                   f"Under **{name_b}** the two swapped views' confidences are {verb} under "
                                   f"**{name_a}**: mean gap |conf a′ − conf b′| {{b}} vs {{a}} over {n_pairs} "
                                   "same-class test pairs."))
    return claims


def claims_heading(method_a: str, method_b: str, dataset: str) -> str:
    """What the claims are about: which methods, which data; says so when neither model is an IPS model."""
    head = (f"Measured on one pair of models, one seed of each method (model A: {method_a}, model B: {method_b}), "
            f"over the test split of {dataset}. It says what these two models do; whether a difference holds over "
            "seeds is what the Study tab measures")
    if not any(m.startswith("ips") for m in (method_a, method_b)):
        head += "; neither is an IPS model, so none of this is about IPS"
    return head + ":"


def claims_markdown(heading: str, claims: list[Claim]) -> str:
    """The heading and one bullet per claim."""
    return "\n".join([heading, *(f"- {c.text}" for c in claims)])
