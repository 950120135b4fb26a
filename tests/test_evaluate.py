"""The metrics every part of the tool reports: ECE's bin edges and NLL, against independent computations."""

import math

import pytest
import torch

from explorer.evaluate import calibration_bins, classification_metrics


def test_a_confidence_on_an_interior_bin_edge_belongs_to_the_bin_below():
    # bins (lo, hi] over [0, 1] in quarters: 0.5 is in (0.25, 0.5], 0.75 in (0.5, 0.75]
    confidence = torch.tensor([0.5, 0.6, 0.75, 0.8])
    correct = torch.tensor([True, False, True, False])
    bins = calibration_bins(confidence, correct, n_bins=4)
    assert bins.count == [0, 1, 2, 1]
    # by hand: |1 - 0.5| / 4 + |0.5 - (0.6 + 0.75) / 2| / 2 + |0 - 0.8| / 4
    assert bins.ece == pytest.approx(0.5 / 4 + abs(0.5 - 0.675) / 2 + 0.8 / 4, abs=1e-7)  # float32 inputs


def test_nll_against_an_independent_computation():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 7, generator=generator) * 3
    labels = torch.randint(0, 7, (50,), generator=generator)
    by_hand = math.fsum(math.log(math.fsum(math.exp(v) for v in row)) - row[y]
                        for row, y in zip(logits.double().tolist(), labels.tolist(), strict=True)) / 50
    assert classification_metrics(logits, labels)["nll"] == pytest.approx(by_hand, rel=1e-6)
