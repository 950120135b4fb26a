"""Sentences generated from the numbers: each says what the numbers say, with numbers that back it."""

import re

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import binomtest

from explorer.analysis.claims import (
    bootstrap_intervals,
    claims_heading,
    claims_markdown,
    compare_claims,
    distinct,
    gap_claims,
    teacher_phrase,
)
from explorer.analysis.comparison import model_report
from explorer.analysis.pairs import gap_statistics
from explorer.evaluate import classification_metrics
from explorer.stats import format_signed

LABELS = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])


def _report(probabilities: list[list[float]]):
    return model_report(torch.tensor(probabilities).log(), LABELS, 3)


# A: right on samples 0-4, wrong (with 0.6 on the wrong class) on 5-7: accuracy 5/8, cautious
A = _report([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.7, 0.2, 0.1], [0.2, 0.7, 0.1],
             [0.6, 0.3, 0.1], [0.3, 0.6, 0.1], [0.6, 0.3, 0.1]])
# B: right on 0-5 (fixes 5), wrong on 6-7 with 0.98 on the wrong class: accuracy 6/8, confident
B = _report([[0.98, 0.01, 0.01], [0.01, 0.98, 0.01], [0.01, 0.01, 0.98], [0.98, 0.01, 0.01], [0.01, 0.98, 0.01],
             [0.01, 0.01, 0.98], [0.01, 0.98, 0.01], [0.98, 0.01, 0.01]])


# The same models on 20 copies of the 8 images: differences this large over 160 images are shown by the tests
TIMES = 20
LABELS20 = LABELS.repeat(TIMES)
A20, B20 = (model_report(r.probabilities.repeat(TIMES, 1).log(), LABELS20, 3) for r in (A, B))


def _by_metric(claims):
    return {c.metric: c for c in claims}


def test_distinct_adds_digits_until_two_numbers_differ_and_leaves_equal_ones_short():
    assert distinct(0.9963, 0.8412) == ("0.996", "0.841")
    assert distinct(0.99981, 0.99974) == ("0.9998", "0.9997")
    assert distinct(0.99999994, 0.9999999) == ("0.99999994", "0.99999990")
    assert distinct(1.0, 1.0) == ("1.000", "1.000")
    assert distinct(98.9, 97.9, 2) == ("98.90", "97.90")


def test_teacher_phrase_names_the_more_confident_view_and_calls_a_tie_a_tie():
    assert teacher_phrase(0.99981, 0.99974) == "view **a′** teaches b′ (0.9998 vs 0.9997)"
    assert teacher_phrase(0.5, 0.9) == "view **b′** teaches a′ (0.900 vs 0.500)"
    tie = teacher_phrase(1.0, 1.0)
    assert "**tie**" in tie and "1.000 each" in tie and "teaches b′" not in tie  # never "a′ teaches (1.000 vs 1.000)"


def test_compare_claims_state_each_direction_with_its_numbers():
    claims = _by_metric(compare_claims("A · ce", "B · ips", A20, B20, LABELS20))
    assert list(claims) == ["accuracy", "ece", "true_class_confidence", "overconfidence", "error_confidence", "nll",
                            "summary"]
    accuracy = claims["accuracy"].text
    assert accuracy.startswith("**B · ips** is more accurate than **A · ce**: 75.00 % vs 62.50 % of 160 test images")
    assert "(20 of A's errors fixed, 0 of its correct answers broken)" in accuracy
    p = binomtest(20, 20, 0.5).pvalue
    assert f"p = {p:.2g}" in accuracy and "is unlikely to be chance" in accuracy
    true_class = [[0.7, 0.7, 0.7, 0.7, 0.7, 0.1, 0.3, 0.3], [0.98] * 6 + [0.01, 0.01]]
    confidence = {name: torch.tensor(values).mean().item() for name, values in zip("AB", true_class, strict=True)}
    assert claims["true_class_confidence"].value_a == pytest.approx(confidence["A"], abs=1e-6)
    assert "**B · ips** is more confident in the true class than **A · ce**" in claims["true_class_confidence"].text
    over = {name: 100 * (float(r.confidence.mean()) - r.metrics["accuracy"]) for name, r in (("A", A), ("B", B))}
    assert claims["overconfidence"].value_b == pytest.approx(over["B"]) and over["B"] > over["A"]
    assert "leans further towards over-confidence than" in claims["overconfidence"].text
    errors = claims["error_confidence"]
    assert errors.value_a == pytest.approx(0.6) and errors.value_b == pytest.approx(0.98)
    assert "over its 40 errors vs 0.600 over 60" in errors.text and "is more confident than" in errors.text
    nll = claims["nll"]
    assert nll.value_b > nll.value_a and "NLL is higher than" in nll.text
    per_sample_b = -torch.tensor([0.98] * 6 + [0.01, 0.01]).log()
    share_b = float(per_sample_b[6:].sum() / per_sample_b.sum())
    assert f"its 40 errors carry {100 * share_b:.0f} % of it" in nll.text
    assert claims["summary"].text == ("In short, **B · ips** against **A · ce** on this split: accuracy higher, mean "
                                      "true-class probability higher, ECE " + ("higher" if claims["ece"].value_b >
                                                                               claims["ece"].value_a else "lower")
                                      + ", NLL higher.")
    assert all(c.difference_shown for c in claims.values() if c.metric in ("accuracy", "ece", "nll"))


def test_one_pair_on_few_images_shows_no_difference_and_says_so():
    """The issue's case: "B is better calibrated: ECE 0.93 % vs 1.02 %" from one pair, with no interval."""
    claims = _by_metric(compare_claims("A · ce", "B · ips", A, B, LABELS))
    low, high = bootstrap_intervals(A, B, LABELS)["ece"]
    assert low < 0 < high
    ece = claims["ece"].text
    assert ece.startswith("No ECE difference shown between **B · ips** and **A · ce**: ECE 23.00 % vs 41.25 %")
    assert f"{format_signed(low, 2)} to {format_signed(high, 2)} points, which includes 0" in ece
    assert "better calibrated" not in ece and claims["ece"].difference_shown is False
    assert claims["accuracy"].text.startswith("No accuracy difference shown")  # 1 : 0, McNemar p = 1
    assert "could well be chance" in claims["accuracy"].text
    assert claims["nll"].text.startswith("No NLL difference shown") and "NLL is higher" not in claims["nll"].text
    assert claims["summary"].text.endswith("accuracy not shown to differ, mean true-class probability not shown to "
                                           "differ, ECE not shown to differ, NLL not shown to differ.")


def test_the_bootstrap_intervals_are_quantiles_of_resampled_metrics():
    """An independent transcription: each resample's metrics recomputed with the evaluate module's ECE."""
    resamples = 50
    rows = torch.randint(len(LABELS20), (resamples, len(LABELS20)), generator=torch.Generator().manual_seed(0))
    differences = {"ece": [], "true_class_confidence": [], "nll": []}
    for row in rows:
        metrics = [classification_metrics(r.probabilities[row].log(), LABELS20[row]) for r in (A20, B20)]
        differences["ece"].append(100 * (metrics[1]["ece"] - metrics[0]["ece"]))
        for name in ("true_class_confidence", "nll"):
            differences[name].append(metrics[1][name] - metrics[0][name])
    intervals = bootstrap_intervals(A20, B20, LABELS20, resamples=resamples)
    for name, values in differences.items():
        expected = torch.quantile(torch.tensor(values, dtype=torch.float64), torch.tensor([0.025, 0.975],
                                                                                           dtype=torch.float64))
        assert intervals[name] == pytest.approx(expected.tolist(), abs=1e-5), name


def test_every_number_in_a_claim_is_the_metric_it_names():
    claims = _by_metric(compare_claims("A", "B", A20, B20, LABELS20))
    ece = claims["ece"]
    numbers = [float(x) for x in re.findall(r"ECE (\d+\.\d+) % vs (\d+\.\d+) %", ece.text)[0]]
    assert numbers == pytest.approx([100 * B.metrics["ece"], 100 * A.metrics["ece"]], abs=0.006)
    word = "worse" if B.metrics["ece"] > A.metrics["ece"] else "better"
    assert f"is {word} calibrated than" in ece.text


def test_swapping_the_models_swaps_every_direction():
    forward = _by_metric(compare_claims("A", "B", A20, B20, LABELS20))
    backward = _by_metric(compare_claims("B", "A", B20, A20, LABELS20))
    assert "less accurate" in backward["accuracy"].text and "more accurate" in forward["accuracy"].text
    assert "NLL is lower than" in backward["nll"].text
    assert "less confident in the true class" in backward["true_class_confidence"].text


def test_equal_models_are_called_equal():
    claims = _by_metric(compare_claims("A", "B", A, A, LABELS))
    assert "is as accurate as" in claims["accuracy"].text and "exactly one" not in claims["accuracy"].text
    assert "as well calibrated as" in claims["ece"].text and "NLL is the same as" in claims["nll"].text
    assert claims["summary"].text.endswith("accuracy equal, mean true-class probability equal, ECE equal, NLL equal.")


def test_a_model_without_errors_gets_no_error_confidence_claim():
    perfect = model_report(F.one_hot(LABELS, 3).float() * 20, LABELS, 3)
    claims = _by_metric(compare_claims("A", "B", A, perfect, LABELS))
    assert "error_confidence" not in claims and "its 0 errors carry 0 % of it" in claims["nll"].text
    with pytest.raises(ValueError, match="different samples"):
        compare_claims("A", "B", A, B, LABELS[:4])


def test_gap_claims_count_ties_apart_and_compare_the_mean_gaps():
    labels = torch.zeros(4, dtype=torch.long)
    stats = {"A · ce": gap_statistics(torch.tensor([0.4, 0.2, 0.3, 0.1]), labels,
                                      torch.tensor([True, False, False, True]), 1),
             "B · ips": gap_statistics(torch.tensor([0.0, 0.0, 0.0, 0.2]), labels,
                                       torch.tensor([True, True, True, False]), 1)}
    teachers, ips_teachers, gap = gap_claims(stats, 4)
    assert "a′ teaches in 50 % of the pairs, b′ in 50 %, and 0 % are ties" in teachers.text
    assert "a′ teaches in 0 % of the pairs, b′ in 25 %, and 75 % are ties" in ips_teachers.text
    assert gap.value_a == pytest.approx(0.25) and gap.value_b == pytest.approx(0.05)
    assert "closer together than under **A · ce**: mean gap |conf a′ − conf b′| 0.050 vs 0.250 over 4" in gap.text
    assert len(gap_claims({"B · ips": stats["B · ips"]}, 4)) == 1  # one model: nothing to compare


def test_the_heading_says_when_no_model_is_an_ips_model():
    heading = claims_heading("ce", "ips", "digits")
    assert heading.startswith("Measured on one pair of models, one seed of each method (model A: ce, model B: ips), "
                              "over the test split of digits.")
    assert heading.endswith("whether a difference holds over seeds is what the Study tab measures:")
    assert "neither is an IPS model" in claims_heading("ce", "cskd", "digits")
    markdown = claims_markdown("Heading:", compare_claims("A", "B", A, B, LABELS))
    assert markdown.splitlines()[0] == "Heading:" and len(markdown.splitlines()) == 8
