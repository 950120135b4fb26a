"""Transfer runs end to end on a few digit scenes: the run folder, the checkpoint, resume, refusals, the manager."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from explorer.analysis.catalog import default_pair, list_checkpoints
from explorer.checkpoints import load_checkpoint, save_checkpoint
from explorer.data.scenes import digit_scenes
from explorer.models import build_model
from explorer.training.runfolder import CONFIG, STATUS, epoch_records, read_json, read_metrics, write_status
from explorer.training.runs import RunError, RunManager
from explorer.training.study import comparison_spec, save_spec
from explorer.transfer import loop
from explorer.transfer import study as transfer_study
from explorer.transfer.checkpoints import load_transfer_checkpoint
from explorer.transfer.launch import launch_transfer
from explorer.transfer.loop import evaluate, main
from explorer.transfer.metrics import DETECTION_METRICS, SEGMENTATION_METRICS
from explorer.ui.train import reference_runs
from tests.helpers import CE_DEMO, DEMO, IPS_DEMO, wait_for

SCENES = ["--train-scenes", "64", "--test-scenes", "16", "--batch-size", "32", "--scene-size", "48"]
TINY = [*SCENES, "--epochs", "1", "--warmup-epochs", "0", "--log-every", "1", "--device", "cpu"]


def _transfer(tmp_path, *args: str, run_id: str = "r") -> int:
    return main([*args, "--out", str(tmp_path), "--run-id", run_id])


def _backbone_weights(run_dir) -> dict[str, torch.Tensor]:
    """The backbone's tensors of a transfer checkpoint, named as in the classifier (block1.0.weight, ...)."""
    weights = load_file(str(run_dir / "model.safetensors"))
    prefix = "net.backbone.features."  # FCN's backbone holds small_cnn's blocks as features.0, .1, .2
    blocks = ("block1", "block2", "block3")
    named = {}
    for key, value in weights.items():
        if key.startswith(prefix):
            index, rest = key[len(prefix):].split(".", 1)
            named[f"{blocks[int(index)]}.{rest}"] = value
    return named


@pytest.mark.parametrize(("task", "metrics"), [("segmentation", SEGMENTATION_METRICS),
                                               ("detection", DETECTION_METRICS)])
def test_a_short_run_writes_a_run_folder_whose_card_holds_the_task_metrics(tmp_path, task, metrics):
    assert _transfer(tmp_path, "--task", task, "--backbone", str(IPS_DEMO), *TINY) == 0
    run = tmp_path / "r"
    config, status = read_json(run / CONFIG), read_json(run / STATUS)
    assert config["task"] == task and config["backbone_run_id"] == "mnist5k-small_cnn-ips"
    assert config["backbone_card"] == load_checkpoint(IPS_DEMO).card and config["method"] == f"{task}:ips"
    assert status["state"] == "finished" and status["progress"] == 1.0 and status["step"] == 2
    records = epoch_records(run)
    assert [r["epoch"] for r in records] == [1]
    checkpoint = load_transfer_checkpoint(run)
    assert checkpoint.card["test_metrics"] == {name: records[0][f"test_{name}"] for name in metrics}
    scenes = digit_scenes(48, 64, 16)
    assert evaluate(checkpoint.model, scenes, torch.device("cpu")) == checkpoint.card["test_metrics"]
    assert all(0.0 <= value <= 1.0 for value in checkpoint.card["test_metrics"].values())


def test_the_backbone_is_the_classifier_s_and_freezing_keeps_it_as_it_was(tmp_path):
    classifier = load_checkpoint(CE_DEMO).model.state_dict()
    assert _transfer(tmp_path, "--task", "segmentation", "--backbone", str(CE_DEMO), *TINY, "--freeze-backbone",
                     run_id="frozen") == 0
    frozen = _backbone_weights(tmp_path / "frozen")
    assert len(frozen) == len([k for k in classifier if k.startswith("block")])
    assert all(torch.equal(frozen[k], classifier[k]) for k in frozen)  # BatchNorm statistics included
    assert _transfer(tmp_path, "--task", "segmentation", "--backbone", str(CE_DEMO), *TINY, run_id="tuned") == 0
    tuned = _backbone_weights(tmp_path / "tuned")
    assert not torch.equal(tuned["block1.0.weight"], classifier["block1.0.weight"])


def test_a_cancelled_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path, monkeypatch, capsys):
    two_epochs = ["--task", "segmentation", "--backbone", str(CE_DEMO), *SCENES, "--epochs", "2", "--device", "cpu"]
    assert _transfer(tmp_path, *two_epochs, run_id="straight") == 0
    original = loop.train_step

    def step_then_signal(s):
        out = original(s)
        if s.step == 3:  # in the second epoch (2 steps each)
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(loop, "train_step", step_then_signal)
    assert _transfer(tmp_path, *two_epochs, run_id="stopped") == 128 + signal.SIGTERM
    assert read_json(tmp_path / "stopped" / STATUS)["state"] == "cancelled"
    monkeypatch.undo()
    assert main(["--resume", str(tmp_path / "stopped")]) == 0
    kinds = [r["kind"] for r in read_metrics(tmp_path / "stopped") if r["kind"] != "step"]
    assert kinds == ["epoch", "resume", "epoch"]
    straight, resumed = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("straight", "stopped"))
    assert straight.keys() == resumed.keys() and all(torch.equal(straight[k], resumed[k]) for k in straight)


def _save_classifier(folder, model: str, channels: int):
    card = {"dataset": "x", "model": model, "method": "ce", "in_channels": channels, "num_classes": 10,
            "class_names": [str(i) for i in range(10)], "mean": [0.5] * channels, "std": [0.25] * channels,
            "image_size": [28, 28]}
    return save_checkpoint(folder, build_model(model, channels, 10), card)


@pytest.mark.parametrize(("case", "expected"), [
    ("missing", "no checkpoint at"),
    ("transfer run", "is a segmentation run; give a classification run"),
    ("mobilenet", "is a mobilenet_v3_small, which cannot serve as a backbone"),
    ("rgb", "takes 3-channel images, but digit-scenes has 1 channels"),
    ("scene size", "a 50-pixel scene does not fit a fcn head on a small_cnn backbone (stride 4)"),
    ("voc", "Pascal VOC 2012 was not found under"),
    ("head", "--head fcos does not do segmentation"),
])
def test_what_cannot_work_is_one_line_and_exit_code_2(tmp_path, capsys, case, expected):
    backbone, extra = str(CE_DEMO), []
    if case == "missing":
        backbone = str(tmp_path / "nothing")
    elif case == "transfer run":
        assert _transfer(tmp_path, "--task", "segmentation", "--backbone", str(CE_DEMO), *TINY, run_id="seg") == 0
        backbone = str(tmp_path / "seg")
    elif case in ("mobilenet", "rgb"):
        backbone = str(_save_classifier(tmp_path / case, "mobilenet_v3_small" if case == "mobilenet" else "small_cnn",
                                        1 if case == "mobilenet" else 3))
    extra = {"scene size": ["--scene-size", "50"], "voc": ["--dataset", "voc", "--data-root", str(tmp_path)],
             "head": ["--head", "fcos"]}.get(case, [])
    capsys.readouterr()
    assert _transfer(tmp_path, "--task", "segmentation", "--backbone", backbone, *TINY, *extra, run_id="bad") == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_transfer_checkpoint_refuses_scenes_of_other_classes(tmp_path):
    assert _transfer(tmp_path, "--task", "detection", "--backbone", str(CE_DEMO), *TINY) == 0
    other = digit_scenes(48, 64, 16)
    other = type(other)("five-digits", other.train, other.test, other.class_names[:5])
    with pytest.raises(ValueError, match="trained for 10 classes of 1-channel digit-scenes scenes, not for the 5"):
        load_transfer_checkpoint(tmp_path / "r", dataset=other)
    with pytest.raises(ValueError, match="is not a transfer checkpoint"):
        load_transfer_checkpoint(CE_DEMO)


def test_the_run_manager_launches_lists_cancels_and_resumes_a_transfer_run(tmp_path):
    runs = RunManager(tmp_path / "runs", grace_s=20)
    try:
        settings = {"task": "segmentation", "backbone": str(CE_DEMO), "epochs": 40, "train_scenes": 64,
                    "test_scenes": 16, "scene_size": 48, "device": "cpu", "log_every": 1}
        run_id = launch_transfer(runs, settings)
        info = runs.info(run_id)
        assert info.method == "segmentation:ce" and info.model == "fcn/small_cnn"
        run_dir = runs.run_dir(run_id)
        wait_for(lambda: (run_dir / "train_state.safetensors").is_file(), 300, "the first epoch's training state")
        runs.cancel(run_id)
        wait_for(lambda: runs.info(run_id).state == "cancelled" and not runs.has_active_runs(), 60, "the cancel")
        assert [i.run_id for i in runs.runs()] == [run_id]
        runs.resume(run_id)
        assert read_json(run_dir / "launch.json")["command"][1:4] == ["-m", "explorer.transfer", "--resume"]
        wait_for(lambda: any(r["kind"] == "resume" for r in runs.metrics(run_id)), 300, "the resumed run")
        runs.cancel(run_id)
        wait_for(lambda: not runs.has_active_runs(), 60, "the end of the resumed run")
        with pytest.raises(RunError, match="--head fcos does not do segmentation"):
            launch_transfer(runs, {**settings, "head": "fcos"})
        with pytest.raises(RunError, match="no classification run"):
            launch_transfer(runs, {**settings, "backbone": str(run_dir)})
    finally:
        runs.close()


def _finished_run(folder, record: dict) -> None:
    folder.mkdir(parents=True)
    write_status(folder, "finished")
    (folder / "metrics.jsonl").write_text(json.dumps({"kind": "epoch", "epoch": 1, **record}) + "\n")


def test_the_transfer_study_fine_tunes_every_backbone_and_pairs_the_seeds(tmp_path, monkeypatch, capsys):
    spec = comparison_spec("bb", "mnist5k", "small_cnn", ["ce", "ips"], 8, ["equal-epochs"], [0, 1, 2])
    save_spec(spec, tmp_path)
    for setting, seed in spec.runs():
        _finished_run(tmp_path / spec.run_id(setting, seed), {"test_accuracy": 0.9})
    commands = []

    def fake_run(command):  # a transfer run that scores miou 0.50 + seed / 100 (+ 0.02 with an IPS backbone)
        commands.append(command)
        args = dict(zip(command[3::2], command[4::2], strict=False))
        gain = 0.02 if "-ips-" in args["--backbone"] else 0.0
        _finished_run(Path(args["--out"]) / args["--run-id"], {"test_miou": 0.5 + int(args["--seed"]) / 100 + gain,
                                                                "test_pixel_accuracy": 0.9})
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(transfer_study.subprocess, "run", fake_run)
    assert transfer_study.main(["--study", "bb", "--out", str(tmp_path), "--tasks", "segmentation", "--",
                                "--epochs", "2"]) == 0
    assert len(commands) == 6 and all(c[-2:] == ["--epochs", "2"] for c in commands)
    assert {(c[c.index("--backbone") + 1].rsplit("/", 1)[1], c[c.index("--seed") + 1]) for c in commands} == {
        (spec.run_id(s, seed), str(seed)) for s, seed in spec.runs()}
    report = capsys.readouterr().out
    assert "ips 8 ep vs ce 8 ep (segmentation miou): +2.00 points" in report  # per seed exactly +2: no spread
    assert transfer_study.main(["--study", "bb", "--out", str(tmp_path), "--tasks", "segmentation"]) == 0
    assert len(commands) == 6  # finished transfer runs are not trained again


def test_the_transfer_study_fine_tunes_only_the_settings_and_seeds_asked(tmp_path, monkeypatch, capsys):
    spec = comparison_spec("bb", "mnist5k", "small_cnn", ["ce", "ips", "ls"], 8, ["equal-epochs"], [0, 1, 2])
    save_spec(spec, tmp_path)
    for setting, seed in spec.runs():
        _finished_run(tmp_path / spec.run_id(setting, seed), {"test_accuracy": 0.9})
    trained = []

    def fake_run(command):
        args = dict(zip(command[3::2], command[4::2], strict=False))
        trained.append(args["--run-id"])
        _finished_run(Path(args["--out"]) / args["--run-id"], {"test_miou": 0.5, "test_pixel_accuracy": 0.9})
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(transfer_study.subprocess, "run", fake_run)
    base = ["--study", "bb", "--out", str(tmp_path), "--tasks", "detection", "segmentation"]
    assert transfer_study.main([*base, "--settings", "ls 8 ep", "ce 8 ep", "--seeds", "2", "0"]) == 0
    assert trained == [f"bb-{task}-{method}-8-ep-s{seed}" for seed in (0, 2) for task in ("detection", "segmentation")
                       for method in ("ce", "ls")]  # the study's order: seed, task, setting
    for refused, message in ((["--settings", "kd 8 ep"], "study 'bb' has no setting 'kd 8 ep'; its settings: ce 8 ep"),
                             (["--seeds", "7"], "study 'bb' has no seed 7; its seeds: 0 1 2")):
        with pytest.raises(SystemExit) as stop:
            transfer_study.main([*base, *refused])
        assert stop.value.code == 2 and message in capsys.readouterr().err
    assert len(trained) == 8


def test_a_transfer_run_started_from_the_command_line_counts_as_alive_for_the_manager(tmp_path):
    """An app started (or restarted) while a CLI transfer run trains must neither mark it interrupted nor delete it."""
    runs_dir = tmp_path / "runs"
    command = [sys.executable, "-m", "explorer.transfer", "--task", "segmentation", "--backbone", str(CE_DEMO), *SCENES,
               "--epochs", "500", "--device", "cpu", "--out", str(runs_dir), "--run-id", "cli"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: read_json(runs_dir / "cli" / STATUS).get("state") == "running", 120, "the CLI run")
        runs = RunManager(runs_dir)
        try:
            assert runs.reconcile() == [] and runs.info("cli").state == "running"
            with pytest.raises(RunError, match="only finished, failed or cancelled runs can be deleted"):
                runs.delete("cli")
        finally:
            runs.close()
    finally:
        process.terminate()
        process.wait(60)
    assert read_json(runs_dir / "cli" / STATUS)["state"] == "cancelled"


SHIPPED = [f"digit-scenes-{task}-{method}" for task in ("segmentation", "detection") for method in ("ce", "ips")]


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_transfer_checkpoint_scores_what_its_card_says(name):
    checkpoint = load_transfer_checkpoint(DEMO / name)
    card = checkpoint.card
    assert card["backbone_run_id"] == f"mnist5k-small_cnn-{name.rsplit('-', 1)[1]}"
    assert f"--out checkpoints --run-id {name}" in card["command"]
    scenes = digit_scenes(64, card["hyperparameters"]["train_scenes"], card["hyperparameters"]["test_scenes"])
    assert evaluate(checkpoint.model, scenes, torch.device("cpu")) == pytest.approx(card["test_metrics"], abs=1e-6)
    assert (DEMO / name / "model.safetensors").stat().st_size < 2_000_000
    assert not (DEMO / name / "train_state.safetensors").exists()  # shipped without what only a resume needs


def test_classifier_pickers_leave_transfer_checkpoints_out_and_the_transfer_pickers_take_them():
    classifiers = [name for _, name in list_checkpoints([DEMO])]
    assert "checkpoints/mnist5k-small_cnn-ce" in classifiers and not any("digit-scenes" in n for n in classifiers)
    assert default_pair([DEMO]) == ("checkpoints/mnist5k-small_cnn-ce", "checkpoints/mnist5k-small_cnn-ips")
    listed = list_checkpoints([DEMO], task="detection")
    assert [name for _, name in listed] == ["checkpoints/digit-scenes-detection-ce",
                                            "checkpoints/digit-scenes-detection-ips"]
    assert all("test map " in label for label, _ in listed)
    assert list(reference_runs(DEMO)) == [f"mnist5k-small_cnn-{m}" for m in ("ce", "cskd", "ips")]  # Train tab


@pytest.mark.parametrize("module", ["explorer.transfer", "explorer.transfer.study"])
def test_the_commands_run_as_modules(module):
    """``python -m`` runs each command's main (a module without its ``__main__`` guard exits 0 doing nothing)."""
    out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and f"usage: python -m {module}" in out.stdout
