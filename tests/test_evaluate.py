"""The metrics every part of the tool reports (ECE's bin edges and NLL, against independent computations) and the
helper that computes logits for them, which must leave the model as it found it."""

import json
import math
import re

import pytest
import torch

from explorer.evaluate import _main as evaluate_cli
from explorer.evaluate import calibration_bins, classification_metrics, predict_logits
from explorer.models import build_model
from explorer.training.config import parse_config
from explorer.training.loop import predict_test_split, setup, train_step
from tests.helpers import IPS_DEMO


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


@pytest.mark.parametrize("training", [True, False])
def test_predict_logits_leaves_the_model_in_the_mode_it_found(digits, training):
    model = build_model("small_cnn", 1, 10).train(training)
    logits = predict_logits(model, digits, digits.test_images[:50])
    assert logits.shape == (50, 10) and model.training == training
    assert all(m.training == training for m in model.modules())


def test_a_test_evaluation_between_two_steps_changes_nothing_the_next_step_computes():
    """BatchNorm normalises a training step with the batch's statistics and an evaluation with its running ones: a
    model left in eval mode after a mid-epoch evaluation (a log-boundary test, the study's confidence pass) would
    train on other activations."""
    argv = ["--dataset", "digits", "--device", "cpu", "--method", "ips", "--seed", "4"]
    plain, evaluated = setup(parse_config(argv)), setup(parse_config(argv))
    for s in (plain, evaluated):
        s.model.train()
        train_step(s)
    logits, _ = predict_test_split(evaluated)
    assert logits.shape == (len(evaluated.dataset.test_labels), 10)
    assert torch.equal(train_step(plain), train_step(evaluated))
    for a, b in zip(plain.bare_model.state_dict().values(), evaluated.bare_model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_the_evaluate_cli_prints_the_reliability_bins_and_confusion_matrix_its_help_promises(capsys):
    """Its help once promised both while it printed neither. Checked against each other: the bins hold every image
    and give back the ECE, the confusion matrix's diagonal gives back the accuracy."""
    with pytest.raises(SystemExit):
        evaluate_cli(["--help"])
    promised = " ".join(capsys.readouterr().out.split())
    assert "ECE with its reliability bins" in promised and "--json adds the confusion matrix" in promised
    assert evaluate_cli([str(IPS_DEMO), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    n, bins, confusion = result["n"], result["reliability"], result["confusion_matrix"]
    assert n == 1000 and sum(bins["count"]) == n and sum(map(sum, confusion)) == n
    assert sum(confusion[k][k] for k in range(10)) / n == pytest.approx(result["accuracy"])
    gaps = [c / n * abs(a - p) for c, a, p in zip(bins["count"], bins["accuracy"], bins["confidence"], strict=True)
            if c]
    assert math.fsum(gaps) == pytest.approx(result["ece"], rel=1e-6)
    assert evaluate_cli([str(IPS_DEMO)]) == 0
    rows = re.findall(r"^ +\(([\d.]+), ([\d.]+)\] +(\d+) ", capsys.readouterr().out, re.MULTILINE)
    assert [int(count) for _, _, count in rows] == [c for c in bins["count"] if c]


def test_a_refused_evaluate_argument_is_one_line_and_exit_code_2(capsys):
    with pytest.raises(SystemExit) as refused:
        evaluate_cli([])
    err = capsys.readouterr().err
    assert refused.value.code == 2 and err == ("python -m explorer.evaluate: error: the following arguments are "
                                               "required: checkpoint (see --help)\n")
