"""The Guide's handlers: its sentences about the method are generated from the models shown, never hand-written."""

from explorer.training.config import TrainConfig
from explorer.ui.compare import compare_models
from explorer.ui.gaps import compute_gaps
from explorer.ui.guide import (
    MEASURED_TEXT,
    METHOD,
    TAB_ID,
    TABS,
    first_example,
    guide_claims,
    refresh_claims,
    refresh_open_claims,
)
from tests.helpers import CE_DEMO, CSKD_DEMO, IPS_DEMO

CE, IPS = str(CE_DEMO), str(IPS_DEMO)
SKIP = {"__type__": "update"}


def test_the_guide_claims_are_the_compare_and_gaps_tabs_claims(ctx):
    claims = guide_claims(ctx, "mnist5k", CE, IPS)
    compare_summary = compare_models(ctx, "mnist5k", CE, IPS).summary
    assert claims.startswith(compare_summary)  # the same sentences as the Compare tab, from the same numbers
    ratio = TrainConfig().swap_ratio
    gaps_summary = compute_gaps(ctx, "mnist5k", CE, IPS, "A and B", "all classes", 500, 7, ratio, 0).summary
    for line in claims.splitlines()[len(compare_summary.splitlines()):]:
        assert line in gaps_summary  # the gaps tab's claims at its default settings
    assert "more confident in the true class" in claims and "mean gap" in claims


def test_no_hand_written_claim_about_what_ips_does_is_left():
    for text in (METHOD, TABS):
        for phrase in ("less over-confident", "learnt to stay consistent", "watch the confidences drop"):
            assert phrase not in text


def test_the_method_quotes_trainings_defaults_and_the_studies_measured_numbers():
    defaults = TrainConfig()
    assert (f"$T = {defaults.temperature:g}$, $\\lambda = {defaults.kd_weight:g}$" in METHOD
            and f"ratio $r = {defaults.swap_ratio:g}$" in METHOD and f"probability {defaults.swap_prob:g}." in METHOD)
    for measured in ("mnist5k, 15 epochs, holdout split, 3 seeds, swap probability 1: IPS − CE −1.37 points (95 % "
                     "CI −1.69 to −1.06)", "mnist5k, 60 epochs, holdout split, 3 seeds, swap probability 1: IPS − CE "
                     "+0.42 points (95 % CI −0.06 to +0.89)", "digits, 30 epochs, test split, 6 seeds, swap "
                     "probability 1: IPS − CE −1.58 points (95 % CI −2.42 to −0.74)", "digits, 30 epochs, test "
                     "split, 6 seeds, swap probability 0.5: IPS − CE +0.32 points (95 % CI −0.64 to +1.29)",
                     "mnist5k, 30 epochs, test split, 6 seeds, swap probability 0.5: IPS − CE +0.65 points (95 % CI "
                     "+0.38 to +0.92)", "mnist5k (swap probability 1) 0.070 → 0.116; mnist5k (swap probability "
                     "0.5) 0.070 → 0.098"):
        assert measured in MEASURED_TEXT


def test_claims_about_other_methods_say_so_and_one_model_is_no_comparison(ctx):
    cskd = guide_claims(ctx, "mnist5k", CE, str(CSKD_DEMO))
    assert "model A: ce, model B: cskd" in cskd and "neither is an IPS model" in cskd
    assert guide_claims(ctx, "mnist5k", CE, None).startswith("Pick two models trained on mnist5k above")


def test_the_claims_are_computed_when_the_tab_opens_and_only_for_new_models(ctx):
    opened = refresh_claims(ctx, None, "mnist5k", CE, IPS)
    shown = opened.shown
    assert shown == ["mnist5k", CE, IPS] and opened.claims == guide_claims(ctx, "mnist5k", CE, IPS)
    assert refresh_claims(ctx, shown, "mnist5k", CE, IPS) == (SKIP, SKIP)
    assert refresh_open_claims(ctx, TAB_ID, "compare", None, "mnist5k", CE, IPS) == (SKIP, SKIP)


def test_the_example_names_ties(ctx):
    text = first_example(ctx, "mnist5k", CE, IPS).text
    assert "teaches" in text or "**tie**" in text
    assert "→" not in text  # the old "→ a′ teaches" with three digits that could not tell the views apart
