"""The training CLI: run folders, determinism, signals, bad arguments, and the evaluate CLI."""

import dataclasses
import json
import math
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from explorer.checkpoints import load_checkpoint
from explorer.data import augment, load_dataset
from explorer.evaluate import classification_metrics, predict_logits
from explorer.ips import build_class_index, default_patch_size, patch_swap, same_class_partners
from explorer.models import build_model
from explorer.training import loop
from explorer.training.config import parse_config
from explorer.training.loop import main, method_loss, train_step
from explorer.training.methods import METHODS
from tests.helpers import ROOT, slow_start_trainer, stop_at_step, wait_for


def _read_run(run_dir: Path):
    config = json.loads((run_dir / "config.json").read_text())
    status = json.loads((run_dir / "status.json").read_text())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return config, status, records


def _spawn(args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "explorer.train", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.mark.parametrize("method", [m for m in METHODS if not METHODS[m].needs_teacher])  # kd: test_method_runs
def test_one_epoch_on_digits_writes_every_run_file(tmp_path, method):
    code = main(["--dataset", "digits", "--method", method, "--epochs", "1", "--out", str(tmp_path),
                 "--run-id", "r", "--log-every", "3"])
    assert code == 0
    run_dir = tmp_path / "r"
    config, status, records = _read_run(run_dir)
    assert config["method"] == method and config["dataset"] == "digits" and config["epochs"] == 1
    expected_device = "cuda" if torch.cuda.is_available() else "cpu"  # --device auto
    assert config["environment"]["torch"] == torch.__version__ and config["environment"]["device"] == expected_device
    expected_precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    assert config["precision"] == "auto" and config["precision_used"] == expected_precision
    images = 128 * (2 if METHODS[method].two_views else 1)  # BAKE: 32 anchors with 3 partners each, 128 images
    assert config["images_per_step"] == images and config["steps_per_epoch"] == 12
    assert "explorer.train" in config["command"] and "--method " + method in config["command"]
    assert status["state"] == "finished" and status["progress"] == 1.0 and status["step"] == 12
    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["step"] for r in steps] == [3, 6, 9, 12] and len(epochs) == 1
    for key in ("loss", "ce", "kd", "train_accuracy", "test_accuracy", "test_nll", "test_ece", "lr",
                "images_per_s", "elapsed"):
        assert key in epochs[0]
    assert (epochs[0]["kd"] > 0) == (method != "ce")
    assert epochs[0]["test_accuracy"] > 0.3  # one epoch on 8x8 digits is well above chance (0.1)
    # the run folder is a checkpoint whose card holds the test metrics it reproduces
    ckpt = load_checkpoint(run_dir)
    ds = load_dataset("digits")
    metrics = classification_metrics(predict_logits(ckpt.model, ds, ds.test_images), ds.test_labels)
    assert metrics["accuracy"] == pytest.approx(epochs[0]["test_accuracy"], abs=1e-6)
    assert ckpt.card["test_metrics"]["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-6)
    assert ckpt.card["method"] == method and ckpt.card["hyperparameters"]["patch_size"] == 2
    assert json.loads((run_dir / "card.json").read_text()) == ckpt.card


def test_same_seed_same_run(tmp_path):
    args = ["--dataset", "digits", "--method", "ips", "--epochs", "1", "--out", str(tmp_path)]
    assert main([*args, "--run-id", "a"]) == 0 and main([*args, "--run-id", "b"]) == 0
    assert main([*args, "--run-id", "c", "--seed", "1"]) == 0
    nll = {r: _read_run(tmp_path / r)[2][-1]["test_nll"] for r in "abc"}
    if torch.cuda.is_available():  # cuDNN's backward kernels are not bitwise deterministic: the last digits differ
        assert nll["a"] == pytest.approx(nll["b"], rel=1e-3) and nll["a"] != pytest.approx(nll["c"], rel=1e-2)
    else:  # on the CPU a seed fixes the run exactly
        assert nll["a"] == nll["b"] and nll["a"] != nll["c"]


def test_equal_compute_halves_the_pairs(tmp_path):
    assert main(["--dataset", "digits", "--method", "ips", "--epochs", "1", "--equal-compute", "--batch-size", "64",
                 "--out", str(tmp_path), "--run-id", "eq"]) == 0
    config, _, _ = _read_run(tmp_path / "eq")
    assert config["anchors_per_step"] == 32 and config["images_per_step"] == 64


def test_holdout_trains_and_evaluates_inside_the_training_split(tmp_path):
    assert main(["--dataset", "digits", "--method", "ce", "--epochs", "1", "--holdout", "--out", str(tmp_path),
                 "--run-id", "h"]) == 0
    config, _, records = _read_run(tmp_path / "h")
    card = load_checkpoint(tmp_path / "h").card
    assert config["holdout"] is True and card["dataset"] == "digits[holdout]"
    full = load_dataset("digits")
    held = full.holdout()
    assert len(held.train_labels) + len(held.test_labels) == len(full.train_labels) == 1438
    assert len(held.test_labels) == 287 and config["steps_per_epoch"] == 9  # 20 % of each class; ceil(1151 / 128)
    train_rows = {tuple(x.flatten().tolist()) for x in full.train_images}
    assert all(tuple(x.flatten().tolist()) in train_rows for x in held.test_images)  # no test image used
    assert records[-1]["test_accuracy"] == pytest.approx(card["test_metrics"]["accuracy"])


def test_default_patch_size_is_a_divisor_giving_at_least_a_4x4_grid():
    assert default_patch_size((28, 28)) == 7
    assert default_patch_size((32, 32)) == 8
    assert default_patch_size((8, 8)) == 2
    assert default_patch_size((30, 20)) == 5


@pytest.mark.parametrize("args,message", [
    (["--swap-ratio", "2"], r"--swap-ratio must be in \[0, 1\]; got 2.0"),
    (["--swap-prob", "-1"], r"--swap-prob must be in \[0, 1\]"),
    (["--epochs", "0"], "--epochs must be between 1 and 100000"),
    (["--method", "nosuch"], "invalid choice: 'nosuch'"),
    (["--epochs", "many"], "invalid int value: 'many'"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["--run-id", "../escape"], "--run-id may hold letters"),
    (["--run-id", "name\n"], "--run-id may hold letters"),
    (["--temperature", "0"], "--temperature must be between 0.1 and 100"),
    (["--equal-compute", "--batch-size", "33"], "--equal-compute needs an even --batch-size"),
    (["--dataset", "digits", "--patch-size", "3"],
     r"--patch-size 3 does not divide the 8x8 images of digits; allowed: \[1, 2, 4, 8\]"),
    (["--dataset", "mnist"], "unknown dataset 'mnist'"),
    (["--dataset", "cifar10", "--data-root", "/nonexistent"], "cifar10 was not found under /nonexistent"),
    (["--dataset", "digits", "--model", "no_such_net"], "unknown model 'no_such_net'"),
    (["--device", "cuda:7"], "cuda"),
    (["--dataset", "digits", "--batch-size", "2000"],
     "2000 anchors per step, more than the 1438 training images of digits; pick at most 1438"),
    (["--dataset", "digits", "--holdout", "--batch-size", "1200"],  # the 80 % left after --holdout
     r"more than the 1151 training images of digits\[holdout\]; pick at most 1151"),
    (["--dataset", "digits", "--batch-size", "2", "--epochs", "100000"],
     r"is 71900000 steps; a run may take at most 2000000 \(at most 2781 epochs here\)"),
])
def test_bad_arguments_exit_non_zero_with_one_line(tmp_path, capsys, args, message):
    assert main(["--out", str(tmp_path), *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("explorer.train: error: ")
    assert re.search(message, lines[0]), lines[0]
    assert not any(tmp_path.iterdir())  # nothing written for a run that never started


def test_bad_argument_exit_code_of_the_real_command(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "explorer.train", "--out", str(tmp_path), "--swap-ratio", "1.5"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == "explorer.train: error: --swap-ratio must be in [0, 1]; got 1.5\n"


def test_a_batch_beyond_the_training_split_fails_the_run_folder_the_manager_made(tmp_path, capsys):
    """The run manager creates the folder and marks it running before the CLI starts; the CLI's refusal ends it."""
    run_dir = tmp_path / "made"
    run_dir.mkdir()
    (run_dir / "status.json").write_text(json.dumps({"state": "running", "message": "starting"}))
    assert main(["--dataset", "digits", "--batch-size", "2000", "--out", str(tmp_path), "--run-id", "made"]) == 2
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed" and "more than the 1438 training images of digits" in status["message"]
    assert sorted(p.name for p in run_dir.iterdir()) == ["run.lock", "status.json"]  # no config, metrics, checkpoint
    assert capsys.readouterr().err.count("\n") == 1


def test_non_finite_loss_fails_the_run(tmp_path, monkeypatch):
    """A loss that turns NaN (the learning rate is bounded, so a real divergence is hard to provoke on digits)."""
    original = loop.method_loss

    def exploding(*args, **kwargs):
        out = original(*args, **kwargs)
        return dataclasses.replace(out, loss=out.loss * float("nan"), ce=out.ce * float("nan"))

    monkeypatch.setattr(loop, "method_loss", exploding)
    code = main(["--dataset", "digits", "--method", "ce", "--epochs", "1", "--out", str(tmp_path),
                 "--run-id", "nan", "--log-every", "2"])
    assert code == 1
    _, status, _ = _read_run(tmp_path / "nan")
    assert status["state"] == "failed" and "non-finite" in status["message"] and "--lr" in status["message"]


def _status_after_first_checkpoint(run_dir: Path):
    try:
        return (run_dir / "model.safetensors").exists() and json.loads((run_dir / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def test_sigkill_mid_training_leaves_readable_files(tmp_path):
    run_dir = tmp_path / "killed"
    proc = _spawn(["--dataset", "digits", "--epochs", "200", "--log-every", "1", "--out", str(tmp_path),
                   "--run-id", "killed"])
    try:
        wait_for(lambda: _status_after_first_checkpoint(run_dir), 90, "the first checkpoint")
        time.sleep(0.3)  # deep inside the writes of later steps
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    config, status, records = _read_run(run_dir)  # every JSON file parses
    assert status["state"] == "running" and 0 < status["progress"] < 1
    assert records and all("step" in r for r in records)
    assert load_checkpoint(run_dir).card["epoch"] >= 1


def test_sigterm_cancels_cleanly_and_keeps_the_checkpoint(tmp_path):
    run_dir = tmp_path / "stopped"
    proc = _spawn(["--dataset", "digits", "--epochs", "200", "--out", str(tmp_path), "--run-id", "stopped"])
    try:
        wait_for(lambda: _status_after_first_checkpoint(run_dir), 90, "the first checkpoint")
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    finally:
        proc.kill()
    assert code == 128 + signal.SIGTERM
    _, status, _ = _read_run(run_dir)
    assert status["state"] == "cancelled" and "checkpoint" in status["message"]
    assert load_checkpoint(run_dir).card["epoch"] >= 1


def _cut_after_step_13(tmp_path: Path, monkeypatch) -> Path:
    """A run cancelled in its second epoch (12 steps each), so it has a training state to resume from."""
    stop_at_step(monkeypatch, 13)
    assert main(["--dataset", "digits", "--method", "ce", "--epochs", "2", "--out", str(tmp_path), "--run-id", "cut"]) \
        == 128 + signal.SIGTERM
    monkeypatch.undo()
    return tmp_path / "cut"


@pytest.mark.parametrize("sig,resume", [(signal.SIGTERM, False), (signal.SIGINT, False), (signal.SIGTERM, True)])
def test_a_signal_during_start_up_ends_the_run_cancelled_at_once(tmp_path, monkeypatch, sig, resume):
    """SIGTERM (the run manager's cancel) or Ctrl-C while the dataset opens: the process exits 128 + the signal with
    one line, and the run folder (made by the run manager, or the run resumed) says cancelled, not running."""
    run_dir = tmp_path / "made"
    if resume:
        run_dir = _cut_after_step_13(tmp_path, monkeypatch)
        args = ["--resume", str(run_dir)]
    else:
        run_dir.mkdir()
        (run_dir / "status.json").write_text(json.dumps({"state": "running", "message": "starting"}))
        args = ["--dataset", "digits", "--out", str(tmp_path), "--run-id", "made"]
    proc = subprocess.Popen([slow_start_trainer(tmp_path), "-m", "explorer.train", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (tmp_path / "in_setup").exists(), 90, "the run to open its dataset")
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=20)  # the stand-in start-up blocks for 60 s unless cut short
    finally:
        proc.kill()
    kept = "; the checkpoint and training state of the last finished epoch are kept (--resume continues)"
    line = f"cancelled by signal {sig} during start-up{kept if resume else ', before the first step'}"
    assert (proc.returncode, err) == (128 + sig, f"explorer.train: {line}\n")
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "cancelled" and status["message"] == line
    assert status["progress"] == (13 / 24 if resume else 0.0)  # a resume keeps the progress it had


def test_evaluate_cli_prints_the_card_metrics(tmp_path):
    assert main(["--dataset", "digits", "--method", "ce", "--epochs", "1", "--out", str(tmp_path),
                 "--run-id", "e"]) == 0
    proc = subprocess.run([sys.executable, "-m", "explorer.evaluate", str(tmp_path / "e"), "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    card = load_checkpoint(tmp_path / "e").card
    assert result["n"] == 359 and result["accuracy"] == pytest.approx(card["test_metrics"]["accuracy"], abs=1e-6)
    assert result["ece"] == pytest.approx(card["test_metrics"]["ece"], abs=1e-6)
    bad = subprocess.run([sys.executable, "-m", "explorer.evaluate", str(tmp_path / "e"), "--dataset", "cifar10",
                          "--data-root", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "cifar10 was not found" in bad.stderr


def test_the_teacher_variants_train_on_the_same_path_and_change_the_kd_term(tmp_path):
    """Same seed, same first batch: only the rule of the KD term differs, so the runs' KD terms differ."""
    kd = {}
    for method in ("ips", "ips-margin", "ips-correct"):
        assert main(["--dataset", "digits", "--method", method, "--epochs", "1", "--out", str(tmp_path),
                     "--run-id", method]) == 0
        kd[method] = _read_run(tmp_path / method)[2][-1]["kd"]
    assert kd["ips-correct"] < kd["ips"]  # the KD of pairs with a wrong teacher is dropped
    assert kd["ips-margin"] != kd["ips"]


# ------------------------------------------------------------------ what a step feeds the model
def _recorded_step(digits, argv):
    """One ``method_loss`` call of the config ``argv`` on digits, with the images each forward pass received and
    whether it could back-propagate; and the same draws redone by hand with a copy of the generator."""
    cfg = parse_config(["--dataset", "digits", *argv])
    generator = torch.Generator().manual_seed(3)
    replay = torch.Generator().set_state(generator.get_state())
    model = build_model("small_cnn", 1, 10)
    seen = []

    def forward(images):
        seen.append((images.clone(), torch.is_grad_enabled()))
        return model(digits.normalize(images))

    index = build_class_index(digits.train_labels, 10)
    anchors = torch.arange(40, 72)
    out = method_loss(cfg, forward, digits, anchors, index, 2, generator, slice(None))
    x_a = augment(digits.train_images[anchors], digits.crop_padding, digits.flip, replay)
    x_b = augment(digits.train_images[same_class_partners(anchors, index, replay)], digits.crop_padding, digits.flip,
                  replay)
    return cfg, out, seen, x_a, x_b, replay


@pytest.mark.parametrize("ratio,prob", [(0.5, 1.0), (0.25, 1.0), (0.75, 0.5)])
def test_the_ips_step_forwards_the_swapped_views_as_the_flags_say(digits, ratio, prob):
    cfg, out, seen, x_a, x_b, replay = _recorded_step(digits, ["--method", "ips", "--swap-ratio", str(ratio),
                                                               "--swap-prob", str(prob)])
    view_a, view_b, mask = patch_swap(x_a, x_b, 2, ratio, prob, replay)
    assert len(seen) == 1 and seen[0][1]  # one pass over both views, with gradients
    assert torch.equal(seen[0][0], torch.cat([view_a, view_b]))
    swapped = mask.flatten(1).sum(1)
    assert set(swapped.tolist()) <= {0, round(ratio * 16)} and swapped.sum() > 0  # 4x4 patches of 2 px
    assert (swapped > 0).float().mean().item() == (1.0 if prob == 1.0 else pytest.approx(prob, abs=0.3))
    assert not torch.equal(seen[0][0], torch.cat([x_a, x_b]))  # the swap happened
    assert out.kd > 0 and out.correct.dtype == torch.int64


def test_the_ips_step_reports_how_sure_and_how_right_its_teachers_are(digits):
    cfg = parse_config(["--dataset", "digits", "--method", "ips"])
    model, logits = build_model("small_cnn", 1, 10), []

    def forward(images):
        logits.append(model(digits.normalize(images)))
        return logits[-1]

    anchors = torch.arange(40, 72)
    out = method_loss(cfg, forward, digits, anchors, build_class_index(digits.train_labels, 10), 2,
                      torch.Generator().manual_seed(3), slice(None))
    logits_a, logits_b = logits[0].detach().chunk(2)
    targets = digits.train_labels[anchors]
    p_a, p_b = (x.softmax(1).gather(1, targets[:, None]).squeeze(1) for x in (logits_a, logits_b))
    assert float(out.teacher_confidence) == pytest.approx(float(torch.maximum(p_a, p_b).sum()), rel=1e-6)
    teacher = torch.where((p_a >= p_b)[:, None], logits_a, logits_b)
    assert int(out.teacher_correct) == int((teacher.argmax(1) == targets).sum())


@pytest.mark.parametrize("partner_pass", ["separate", "joint"])
def test_the_cskd_step_forwards_the_unswapped_pair(digits, partner_pass):
    _, out, seen, x_a, x_b, _ = _recorded_step(digits, ["--method", "cskd", "--cskd-partner-pass", partner_pass])
    if partner_pass == "separate":  # the anchors with gradients, then the partners in a no-grad pass, as published
        assert [grad for _, grad in seen] == [True, False]
        assert torch.equal(seen[0][0], x_a) and torch.equal(seen[1][0], x_b)
    else:
        assert len(seen) == 1 and torch.equal(seen[0][0], torch.cat([x_a, x_b]))
    out.loss.backward()  # the partner's logits are detached either way
    assert out.kd > 0


def test_the_learning_rate_of_every_step_over_two_epochs(tmp_path):
    assert main(["--dataset", "digits", "--method", "ce", "--epochs", "2", "--log-every", "1", "--out", str(tmp_path),
                 "--run-id", "lr"]) == 0
    steps = [r for r in _read_run(tmp_path / "lr")[2] if r["kind"] == "step"]
    assert [r["step"] for r in steps] == list(range(1, 25))
    # the rate logged after step s is the one of the next step: 0.1 x half a cosine over all 24 steps
    assert [r["lr"] for r in steps] == pytest.approx([0.05 * (1 + math.cos(math.pi * s / 24)) for s in range(1, 25)],
                                                     abs=1e-12)


def test_train_accuracy_and_teacher_shares_are_counted_over_anchors(tmp_path, monkeypatch):
    correct, teachers, original = [], [], loop.method_loss

    def counting(*args, **kwargs):
        out = original(*args, **kwargs)
        correct.append(int(out.correct))
        teachers.append((float(out.teacher_confidence), int(out.teacher_correct)))
        return out

    monkeypatch.setattr(loop, "method_loss", counting)
    assert main(["--dataset", "digits", "--method", "ips", "--epochs", "1", "--out", str(tmp_path), "--run-id",
                 "acc"]) == 0
    epoch = _read_run(tmp_path / "acc")[2][-1]
    assert len(correct) == 12 and sum(correct) > 0
    assert epoch["train_accuracy"] == pytest.approx(sum(correct) / (12 * 128), abs=1e-12)  # 128 anchors, 256 images
    assert epoch["teacher_confidence"] == pytest.approx(sum(c for c, _ in teachers) / (12 * 128), rel=1e-5)
    assert epoch["teacher_correct"] == pytest.approx(sum(n for _, n in teachers) / (12 * 128), abs=1e-12)


def test_an_unexpected_error_in_the_loop_fails_the_run(tmp_path, monkeypatch):
    def broken_step(s):
        if s.step == 2:
            raise RuntimeError("out of cheese")
        return train_step(s)

    monkeypatch.setattr(loop, "train_step", broken_step)
    with pytest.raises(RuntimeError, match="out of cheese"):
        main(["--dataset", "digits", "--epochs", "1", "--out", str(tmp_path), "--run-id", "boom"])
    _, status, _ = _read_run(tmp_path / "boom")
    assert status["state"] == "failed" and status["message"] == "RuntimeError: out of cheese" and status["step"] == 2


@pytest.mark.parametrize("method", ["ce", "cskd", "ips"])
def test_a_training_step_reads_nothing_back_to_the_host(monkeypatch, method):
    """No Python-level read-back (item, tolist, bool, int, float, cpu, numpy) inside a step, an epoch's anchor
    refill included; on a GPU each would be a blocking sync (test_cuda.py checks the kernels too, in every
    precision)."""
    s = loop.setup(parse_config(["--dataset", "digits", "--method", method, "--device", "cpu"]))
    train_step(s)  # the first step fills the caches

    def read_back(*args, **kwargs):
        raise AssertionError("a tensor was read back to the host inside a training step")

    for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, read_back)
    for _ in range(s.steps_per_epoch + 1):
        parts = train_step(s)
    monkeypatch.undo()
    assert parts.shape == (7,) and parts[4] == 128 and s.step == s.steps_per_epoch + 2


def test_an_in_memory_run_trains_exactly_the_steps_of_the_in_memory_loop_it_always_had(tmp_path):
    """The in-memory path, bit for bit: main's loop (before streaming existed) written out from the public pieces
    (anchors from a stream of permutations, crop, partners, crop, swap, IPS loss, SGD with the cosine schedule,
    every draw on one generator in this order) reaches the very weights the run saves, whatever --data-mode."""
    from explorer.ips import ips_loss
    from explorer.training.optimizer import build_optimizer, build_scheduler

    args = ["--dataset", "digits", "--method", "ips", "--epochs", "1", "--device", "cpu", "--out", str(tmp_path)]
    assert main([*args, "--data-mode", "memory", "--run-id", "memory"]) == 0
    assert main([*args, "--data-mode", "stream", "--run-id", "stream"]) == 2  # digits only lives in memory
    cfg = parse_config(args)
    data = load_dataset("digits")
    torch.manual_seed(0)
    model = build_model("small_cnn", 1, 10)
    optimizer = build_optimizer(model.parameters(), cfg, torch.device("cpu"))
    scheduler = build_scheduler(optimizer, cfg, 12)
    generator, index = torch.Generator().manual_seed(0), build_class_index(data.train_labels, 10)
    anchors_left = torch.empty(0, dtype=torch.long)
    for _ in range(12):  # ceil(1438 / 128) steps
        while len(anchors_left) < 128:
            anchors_left = torch.cat([anchors_left, torch.randperm(1438, generator=generator)])
        anchors, anchors_left = anchors_left[:128], anchors_left[128:]
        x_a = augment(data.train_images[anchors], 1, False, generator)
        x_b = augment(data.train_images[same_class_partners(anchors, index, generator)], 1, False, generator)
        view_a, view_b, _ = patch_swap(x_a, x_b, 2, cfg.swap_ratio, cfg.swap_prob, generator)
        logits_a, logits_b = model(data.normalize(torch.cat([view_a, view_b]))).chunk(2)
        loss = ips_loss(logits_a, logits_b, data.train_labels[anchors], cfg.temperature, cfg.kd_weight).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    saved = load_checkpoint(tmp_path / "memory").model.state_dict()
    assert saved.keys() == model.state_dict().keys()
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
