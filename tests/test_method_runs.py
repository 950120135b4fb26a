"""kd trains from any finished run that fits (every other method's epoch on digits: test_training_loop), and
every other teacher is refused in one line with exit code 2; PS-KD and DLB resume bit-identically with their state
and keep it whole under torchrun."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from explorer.checkpoints import save_checkpoint
from explorer.models import build_model
from explorer.training.config import ConfigError, parse_config
from explorer.training.loop import main
from tests.helpers import stop_at_step

DIGITS = ["--dataset", "digits", "--epochs", "1"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """A finished 1-epoch CE run on digits: the teacher of the kd runs."""
    out = tmp_path_factory.mktemp("teacher")
    assert main([*DIGITS, "--method", "ce", "--out", str(out), "--run-id", "ce"]) == 0
    return out / "ce"


def _fake_run(teacher: Path, folder: Path, state: str = "finished", **card_changes) -> Path:
    """A run folder holding a model the card describes (``model``, ``num_classes`` or ``image_size`` changed)."""
    card = {**json.loads((teacher / "card.json").read_text()), **card_changes}
    model = build_model(card["model"], card["in_channels"], card["num_classes"])
    save_checkpoint(folder, model, card)
    (folder / "status.json").write_text(json.dumps({"state": state}))
    return folder


@pytest.mark.parametrize(("method", "state_key"), [("pskd", "method.pskd.predictions"), ("dlb", "method.dlb.logits")])
def test_a_stateful_method_resumed_mid_epoch_is_bit_identical(method, state_key, tmp_path, monkeypatch):
    args = ["--dataset", "digits", "--method", method, "--epochs", "3", "--log-every", "5"]  # 12 steps per epoch
    assert main([*args, "--out", str(tmp_path), "--run-id", "alone"]) == 0
    stop_at_step(monkeypatch, 29)  # epoch 3, after 2 finished epochs and 5 more steps
    assert main([*args, "--out", str(tmp_path), "--run-id", "cut"]) == 128 + signal.SIGTERM
    monkeypatch.undo()
    assert main(["--resume", str(tmp_path / "cut")]) == 0
    for name in ("model.safetensors", "train_state.safetensors"):
        alone, resumed = (load_file(str(tmp_path / run / name)) for run in ("alone", "cut"))
        assert alone.keys() == resumed.keys()
        assert all(torch.equal(alone[k], resumed[k]) for k in alone), name
    assert state_key in load_file(str(tmp_path / "alone" / "train_state.safetensors"))


def test_kd_distils_from_a_teacher_of_another_architecture(tmp_path, teacher):
    resnet = _fake_run(teacher, tmp_path / "resnet", model="resnet18")
    assert main([*DIGITS, "--method", "kd", "--teacher", str(resnet), "--out", str(tmp_path), "--run-id", "s"]) == 0
    assert json.loads((tmp_path / "s" / "card.json").read_text())["model"] == "small_cnn"


@pytest.mark.parametrize(("make", "message"), [
    (lambda t, d: None, "--method kd needs --teacher RUN_DIR"),
    (lambda t, d: d / "missing", "no such run folder"),
    (lambda t, d: _fake_run(t, d / "c", state="cancelled"), "not a finished run (its status is cancelled)"),
    (lambda t, d: _fake_run(t, d / "k", num_classes=3, class_names=["a", "b", "c"]), "3 classes vs 10"),
    (lambda t, d: _fake_run(t, d / "i", image_size=[28, 28]), "image size (28, 28) vs (8, 8)"),
])
def test_kd_refuses_a_missing_unfinished_or_unfitting_teacher_in_one_line(make, message, tmp_path, teacher, capsys):
    folder = make(teacher, tmp_path)
    flag = [] if folder is None else ["--teacher", str(folder)]
    assert main([*DIGITS, "--method", "kd", *flag, "--out", str(tmp_path), "--run-id", "s"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_teacher_applies_to_kd_only(teacher):
    with pytest.raises(ConfigError, match="--teacher applies to --method kd only"):
        parse_config([*DIGITS, "--method", "ce", "--teacher", str(teacher)])


def test_under_torchrun_pskd_writes_every_ranks_predictions_and_dlb_stashes_the_global_batch(tmp_path):
    """2 processes with gloo on the CPU: rank 0 saves the state, so it must hold what every rank computed."""
    for method in ("pskd", "dlb"):
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                   "explorer.train", "--dataset", "digits", "--method", method, "--epochs", "1", "--device", "cpu",
                   "--out", str(tmp_path), "--run-id", method]
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-5000:]  # the ranks' own lines come before torchrun's summary
    predictions = load_file(str(tmp_path / "pskd" / "train_state.safetensors"))["method.pskd.predictions"]
    still_one_hot = (predictions == 1).any(dim=1)  # the initial labels: a row no rank has written yet
    assert predictions.shape[1] == 10 and not still_one_hot.any()  # after an epoch, every row, from either rank
    dlb = load_file(str(tmp_path / "dlb" / "train_state.safetensors"))
    assert dlb["method.dlb.logits"].shape == (128, 10) and dlb["method.dlb.images"].shape[0] == 128
