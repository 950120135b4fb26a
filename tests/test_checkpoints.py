"""Checkpoints: safetensors with the card inside, atomic writes, clear refusals, the demo checkpoints."""

import json
import pickle

import pytest
import torch

from explorer.checkpoints import CheckpointError, atomic_write_text, load_card, load_checkpoint, save_checkpoint
from explorer.data import load_dataset
from explorer.evaluate import classification_metrics, predict_logits
from explorer.models import build_model
from tests.helpers import DEMO

CARD = {"dataset": "digits", "model": "small_cnn", "method": "ce", "in_channels": 1, "num_classes": 10,
        "class_names": [str(i) for i in range(10)], "mean": [0.3], "std": [0.4], "image_size": [8, 8]}


def test_round_trip_keeps_weights_and_card(tmp_path):
    torch.manual_seed(0)
    model = build_model("small_cnn", 1, 10)
    save_checkpoint(tmp_path / "c", model, CARD)
    loaded = load_checkpoint(tmp_path / "c")
    assert loaded.card == CARD and not loaded.model.training
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert json.loads((tmp_path / "c" / "card.json").read_text()) == CARD
    assert load_card(tmp_path / "c" / "model.safetensors") == CARD  # the weights file alone is enough
    assert not list((tmp_path / "c").glob(".*.tmp"))


def test_a_pickle_is_refused_without_being_unpickled(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('pickle executed')",))

    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(CheckpointError, match="is not an IPS Explorer checkpoint"):
        load_checkpoint(path)


def test_missing_and_mismatched_checkpoints_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nothing")
    save_checkpoint(tmp_path / "c", build_model("small_cnn", 1, 10), {**CARD, "num_classes": 3})
    with pytest.raises(CheckpointError, match="do not fit a small_cnn"):
        load_checkpoint(tmp_path / "c")
    with pytest.raises(CheckpointError, match=r"lacks \['std'\]"):
        save_checkpoint(tmp_path / "d", build_model("small_cnn", 1, 10), {k: v for k, v in CARD.items() if k != "std"})


def test_atomic_write_replaces_whole_files(tmp_path):
    path = tmp_path / "a" / "status.json"
    atomic_write_text(path, "first")
    atomic_write_text(path, "second")
    assert path.read_text() == "second" and [p.name for p in path.parent.iterdir()] == ["status.json"]


@pytest.mark.parametrize("method", ["ce", "cskd", "ips"])
def test_demo_checkpoints_reproduce_their_cards(method):
    ckpt = load_checkpoint(DEMO / f"mnist5k-small_cnn-{method}")
    card = ckpt.card
    assert card["method"] == method and card["dataset"] == "mnist5k" and card["epoch"] == card["epochs"] == 30
    assert f"--method {method}" in card["command"] and f"--run-id mnist5k-small_cnn-{method}" in card["command"]
    dataset = load_dataset("mnist5k")
    metrics = classification_metrics(predict_logits(ckpt.model, dataset, dataset.test_images), dataset.test_labels)
    for key in ("accuracy", "nll", "ece", "brier"):
        assert metrics[key] == pytest.approx(card["test_metrics"][key], abs=1e-4), key
    assert (DEMO / f"mnist5k-small_cnn-{method}" / "model.safetensors").stat().st_size < 500_000
