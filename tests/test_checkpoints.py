"""Checkpoints: safetensors with the card inside, atomic writes, clear refusals, the demo checkpoints."""

import json
import pickle

import pytest
import torch
from safetensors.torch import safe_open, save_file

from explorer import checkpoints
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
    save_checkpoint(tmp_path / "c", build_model("small_cnn", 1, 10), {**CARD, "num_classes": 3,
                                                                      "class_names": ["a", "b", "c"]})
    with pytest.raises(CheckpointError, match="do not fit a small_cnn"):
        load_checkpoint(tmp_path / "c")
    with pytest.raises(CheckpointError, match=r"lacks \['std'\]"):
        save_checkpoint(tmp_path / "d", build_model("small_cnn", 1, 10), {k: v for k, v in CARD.items() if k != "std"})


@pytest.mark.parametrize("field,value,message", [
    ("num_classes", 1e9, r"num_classes must be a whole number from 2 to 100000; got '1000000000.0'"),
    ("num_classes", 10**9, r"num_classes must be a whole number from 2 to 100000"),
    ("in_channels", "abc", r"in_channels must be a whole number from 1 to 4; got 'abc'"),
    ("std", [0.0], r"std must be one positive number per channel"),
    ("image_size", [8], r"image_size must be \[height, width\] up to 4096"),
    ("model", 7, r"model must be a model name; got '7'"),
    ("test_metrics", {"accuracy": "high"}, r"test_metrics must be metric names with numbers; got .*'high'"),
    ("test_metrics", [0.9], r"test_metrics must be metric names with numbers"),
    ("method", ["ips"], r"method must be a method name; got \"\['ips'\]\""),
    ("method", "<img src=x onerror=alert(1)>", r"method must be a method name; got '<img src=x"),
    ("dataset", "<b>digits</b>", r"dataset must be a dataset name"),
    ("class_names", [f"<i>{i}</i>" for i in range(10)], r"class_names must be num_classes names"),
])
def test_crafted_cards_are_refused_naming_the_file_and_field(tmp_path, field, value, message):
    folder = save_checkpoint(tmp_path / "c", build_model("small_cnn", 1, 10), CARD)
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"card": json.dumps({**CARD, field: value})})
    for read in (load_card, load_checkpoint):
        with pytest.raises(CheckpointError, match=f"model card of {folder / 'model.safetensors'}: {message}"):
            read(folder)


def test_a_card_naming_a_huge_model_is_refused_without_building_it_and_once(tmp_path, monkeypatch):
    folder = save_checkpoint(tmp_path / "c", build_model("small_cnn", 1, 10), {**CARD, "model": "vit_h_14"})
    built = []
    real_build = checkpoints.build_model
    monkeypatch.setattr(checkpoints, "build_model", lambda *a: built.append(torch.empty(0).device) or real_build(*a))
    for _ in range(3):
        with pytest.raises(CheckpointError, match="do not fit a vit_h_14 with 1 channels and 10 classes"):
            load_checkpoint(folder)
    assert [str(device) for device in built] == ["meta"]  # built once, on the meta device, never for real


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
