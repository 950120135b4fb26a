"""explorer.stats: intervals, paired differences, sentences and tables against hand-computed numbers."""

import csv
import io
import json
import math

import pytest

from explorer.stats import (
    comparison_sentence,
    mean_interval,
    paired_difference,
    seed_table,
    t_critical,
)

T_2 = 4.302652729749462  # t(0.975) with 2 degrees of freedom, from a t table
T_5 = 2.5705818356363146  # ... with 5
T_4 = 2.7764451051977934  # ... with 4


def test_t_critical_values_match_the_table():
    assert t_critical(3) == pytest.approx(T_2, rel=1e-9)
    assert t_critical(6) == pytest.approx(T_5, rel=1e-9)
    with pytest.raises(ValueError, match="at least 2 values; got 1"):
        t_critical(1)


def test_mean_interval_of_one_two_three_by_hand():
    summary = mean_interval([1.0, 2.0, 3.0])
    assert summary.n == 3 and summary.mean == pytest.approx(2.0) and summary.std == pytest.approx(1.0)
    half_width = T_2 / math.sqrt(3)  # t * std / sqrt(n) with std 1
    assert summary.low == pytest.approx(2 - half_width) and summary.high == pytest.approx(2 + half_width)
    assert summary.small_sample and summary.has_interval and not summary.excludes_zero


def test_mean_interval_of_one_value_has_no_spread_and_bad_input_is_refused():
    single = mean_interval([0.4])
    assert (single.n, single.mean, single.std, single.low, single.high) == (1, 0.4, None, None, None)
    assert not single.has_interval and not single.excludes_zero
    with pytest.raises(ValueError, match="at least one value"):
        mean_interval([])
    with pytest.raises(ValueError, match="finite"):
        mean_interval([1.0, float("nan")])


def test_paired_difference_pairs_by_seed_and_ignores_unpaired_seeds():
    method = {2: 8.0, 0: 3.0, 1: 5.0, 7: 100.0}  # seed 7 has no baseline run
    baseline = {0: 2.0, 1: 3.0, 2: 5.0, 9: -1.0}  # seed 9 has no method run
    diff = paired_difference(method, baseline)
    assert diff.per_seed == {0: 1.0, 1: 2.0, 2: 3.0}
    assert diff.n == 3 and diff.mean == pytest.approx(2.0) and diff.std == pytest.approx(1.0)
    assert diff.low == pytest.approx(2 - T_2 / math.sqrt(3)) and diff.high == pytest.approx(2 + T_2 / math.sqrt(3))
    payload = json.loads(json.dumps(diff.to_json()))
    assert payload["per_seed"] == [{"seed": 0, "difference": 1.0}, {"seed": 1, "difference": 2.0},
                                   {"seed": 2, "difference": 3.0}]
    assert payload["confidence"] == 0.95 and payload["small_sample"] is True and payload["excludes_zero"] is False
    with pytest.raises(ValueError, match="share no seed"):
        paired_difference({0: 1.0}, {1: 1.0})


def test_sentence_when_the_interval_includes_zero():
    # differences -0.2, 0.3, 0.5, 0.9, -0.1, 0.22: mean 0.27, std 0.40274, half width 2.5706 * 0.40274 / sqrt(6)
    diff = paired_difference(dict(enumerate([-0.2, 0.3, 0.5, 0.9, -0.1, 0.22])), dict.fromkeys(range(6), 0.0))
    assert diff.mean == pytest.approx(0.27) and diff.std == pytest.approx(0.4027406, rel=1e-6)
    assert diff.low == pytest.approx(0.27 - T_5 * 0.4027406 / math.sqrt(6), rel=1e-6)
    assert comparison_sentence(diff, "IPS", "CE", "at equal epochs") == (
        "IPS vs CE at equal epochs: +0.27 points (95 % CI \u22120.15 to +0.69, 6 seeds): "
        "the interval includes 0, so no difference is shown.")


def test_sentence_when_the_interval_excludes_zero_claims_the_direction_and_its_bounds():
    up = mean_interval([1.0, 1.2, 0.8, 1.1, 0.9])  # mean 1, std sqrt(0.025), n 5: no small-sample note
    assert up.low == pytest.approx(1 - T_4 * math.sqrt(0.025) / math.sqrt(5))  # 0.8037
    assert comparison_sentence(up, "IPS", "CE") == (
        "IPS vs CE: +1.00 points (95 % CI +0.80 to +1.20, 5 seeds): the interval excludes 0, "
        "so IPS is higher than CE, by 0.80 to 1.20 points.")
    # mean -0.02825, std 0.016460, half width 3.1824 * 0.016460 / 2 = 0.02619: -0.0544 to -0.0021
    down = mean_interval([-0.031, -0.012, -0.05, -0.02])
    assert comparison_sentence(down, "B", "A", "on ROAD combined", unit="", noun="image", higher="more faithful",
                               lower="less faithful", digits=3) == (
        "B vs A on ROAD combined: \u22120.028 (95 % CI \u22120.054 to \u22120.002, 4 images): the interval excludes 0, "
        "so B is less faithful than A, by 0.002 to 0.054. "
        "Only 4 images: the t critical value is 3.18 (1.96 with many), so the interval is wide.")


def test_sentence_with_one_seed_claims_nothing():
    diff = paired_difference({0: 98.4}, {0: 98.1})
    assert comparison_sentence(diff, "IPS", "CE") == (
        "IPS vs CE: +0.30 points (1 seed): one seed gives no interval, so no difference can be claimed.")


def test_small_sample_note_only_below_five():
    few = comparison_sentence(mean_interval([1.0, 2.0, 3.0]), "IPS", "CE")
    many = comparison_sentence(mean_interval([1.0, 2.0, 3.0, 2.0, 2.0]), "IPS", "CE")
    assert f"the t critical value is {T_2:.2f}" in few and "wide" in few
    assert "wide" not in many and "Only" not in many


RESULTS = {"CE": {0: 98.0, 1: 98.5, 2: 97.5}, "IPS": {0: 99.0, 1: 100.5, 2: 100.5}, "CSKD": {1: 98.0}}


def test_seed_table_markdown_by_hand():
    table = seed_table(RESULTS, "CE")
    # IPS - CE per seed: 1, 2, 3 -> +2.00 (2 - 4.30/sqrt 3 = -0.48 to 4.48); CSKD - CE: seed 1 only, -0.5
    assert table.to_markdown() == "\n".join([
        "| seed | CE | IPS | CSKD |",
        "|---:|---:|---:|---:|",
        "| 0 | 98.00 | 99.00 | — |",
        "| 1 | 98.50 | 100.50 | 98.00 |",
        "| 2 | 97.50 | 100.50 | — |",
        "| mean ± std | 98.00 ± 0.50 | 100.00 ± 0.87 | 98.00 |",
        "| n | 3 | 3 | 1 |",
        "| Δ vs CE (95 % CI) | — | +2.00 (\u22120.48 to +4.48) | \u22120.50 (no interval) |",
        "",
        "Intervals from fewer than 5 paired seeds are wide (large t critical value).",
    ])


def test_seed_table_csv_round_trips_at_full_precision():
    table = seed_table(RESULTS, "CE")
    rows = list(csv.reader(io.StringIO(table.to_csv())))
    assert rows[0] == ["seed", "CE", "IPS", "CSKD"]
    assert rows[1] == ["0", "98.0", "99.0", ""] and rows[2] == ["1", "98.5", "100.5", "98.0"]
    by_name = {row[0]: row[1:] for row in rows[4:]}
    assert float(by_name["std"][1]) == pytest.approx(math.sqrt(0.75)) and by_name["std"][2] == ""
    assert by_name["difference vs CE"] == ["", "2.0", "-0.5"]
    assert float(by_name["95% CI low"][1]) == pytest.approx(2 - T_2 / math.sqrt(3), rel=1e-12)
    assert float(by_name["95% CI high"][1]) == pytest.approx(2 + T_2 / math.sqrt(3), rel=1e-12)
    assert by_name["95% CI low"][2] == "" and by_name["paired seeds"] == ["", "3", "1"]
    assert by_name["n"] == ["3", "3", "1"]
    payload = json.loads(json.dumps(table.to_json()))
    assert payload["differences"]["IPS"]["mean"] == 2.0 and set(payload["differences"]) == {"IPS", "CSKD"}


def test_seed_table_refuses_a_missing_baseline_or_an_empty_method():
    with pytest.raises(ValueError, match="baseline 'PS' is not among"):
        seed_table(RESULTS, "PS")
    with pytest.raises(ValueError, match="without any seed: \\['IPS'\\]"):
        seed_table({"CE": {0: 1.0}, "IPS": {}}, "CE")
