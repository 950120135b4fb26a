"""One writer per run folder: a second training process, or a fresh start over a trained run, is refused at once and
touches nothing; a re-run study waits for the runs an earlier study left training and resumes the ones it stopped."""

import json
import shutil
import subprocess
import sys
import threading
import time

import pytest

from explorer.training import study_cli
from explorer.training.loop import main
from explorer.training.runfolder import LOCK, sole_writer, writer_pid
from explorer.training.runs import RunError, RunManager
from explorer.training.study import Setting, StudySpec
from tests.helpers import IPS_DEMO, ROOT, wait_while_progressing

QUICK_CLI = ["--dataset", "digits", "--epochs", "1", "--log-every", "1"]


def _contents(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != LOCK}


def test_a_second_training_process_into_a_live_run_folder_fails_at_once_and_writes_nothing(tmp_path, stall_s):
    run_dir = tmp_path / "live"
    first = subprocess.Popen([sys.executable, "-m", "explorer.train", *QUICK_CLI, "--epochs", "500",
                              "--out", str(tmp_path), "--run-id", "live"], cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        wait_while_progressing(lambda: (run_dir / "metrics.jsonl").is_file() and (run_dir / "status.json").is_file(),
                               lambda: run_dir.is_dir() and sorted(p.name for p in run_dir.iterdir()), stall_s,
                               "the first run to start writing")
        assert writer_pid(run_dir) == first.pid
        second = subprocess.run([sys.executable, "-m", "explorer.train", *QUICK_CLI,
                                 "--out", str(tmp_path), "--run-id", "live"], cwd=ROOT, capture_output=True,
                                text=True)
        assert second.returncode == 2 and second.stdout == ""
        assert second.stderr == (f"explorer.train: error: run live is being trained by another process (pid "
                                 f"{first.pid}); wait for it to end, or choose another --run-id\n")
        status = json.loads((run_dir / "status.json").read_text())
        assert status["pid"] == first.pid and status["state"] == "running"
    finally:
        first.kill()
        first.wait()
    assert writer_pid(run_dir) is None  # the lock goes with its process, however it ends


def test_a_fresh_run_is_refused_a_folder_that_holds_a_trained_run(tmp_path, capsys):
    finished = shutil.copytree(IPS_DEMO, tmp_path / "demo")  # a finished 15-epoch mnist5k run
    before = _contents(finished)
    assert main([*QUICK_CLI, "--out", str(tmp_path), "--run-id", "demo"]) == 2
    assert capsys.readouterr().err == (f"explorer.train: error: run folder {finished} already holds a finished run; "
                                       f"choose another --run-id (or --out)\n")
    assert _contents(finished) == before  # nothing replaced: card, checkpoint, metrics

    stopped = tmp_path / "stopped"
    stopped.mkdir()
    (stopped / "train_state.safetensors").write_bytes(b"state of epoch 1")
    (stopped / "status.json").write_text(json.dumps({"state": "cancelled"}))
    assert main([*QUICK_CLI, "--out", str(tmp_path), "--run-id", "stopped"]) == 2
    assert f"holds a trained run; continue it with --resume {stopped}, or choose" in capsys.readouterr().err
    assert (stopped / "train_state.safetensors").read_bytes() == b"state of epoch 1"


def test_a_run_held_by_a_writer_is_refused_in_process_too_and_a_failed_start_leaves_no_folder(tmp_path, capsys):
    held = tmp_path / "held"
    with sole_writer(held, resuming=False):
        assert main([*QUICK_CLI, "--out", str(tmp_path), "--run-id", "held"]) == 2
        assert "run held is being trained by another process" in capsys.readouterr().err
        assert sorted(p.name for p in held.iterdir()) == [LOCK]
    assert not held.exists()  # made by the writer and left empty: removed
    assert main([*QUICK_CLI, "--batch-size", "5000", "--out", str(tmp_path), "--run-id", "never"]) == 2
    assert not (tmp_path / "never").exists()  # the start-up failed: no folder of this run is left behind


def test_the_run_manager_does_not_delete_a_folder_a_writer_holds(tmp_path):
    runs_dir = tmp_path / "runs"
    folder = runs_dir / "cli"
    folder.mkdir(parents=True)
    (folder / "status.json").write_text(json.dumps({"state": "failed"}))
    manager = RunManager(runs_dir)
    try:
        with sole_writer(folder, resuming=True):
            with pytest.raises(RunError, match="run cli is failed, but its process .* has not exited yet"):
                manager.delete("cli")
        manager.delete("cli")
        assert not folder.exists()
    finally:
        manager.close()


def _one_run_study(tmp_path) -> tuple[StudySpec, object]:
    spec = StudySpec("s", "digits", "small_cnn", [0], [Setting("ce", {"method": "ce", "epochs": 1})], [])
    return spec, tmp_path / spec.run_id(spec.settings[0], 0)


def _finish(run_dir):
    (run_dir / "status.json").write_text(json.dumps({"state": "finished"}))
    (run_dir / "metrics.jsonl").write_text(json.dumps({"kind": "epoch", "epoch": 1, "test_accuracy": 0.9}) + "\n")


def test_a_rerun_study_waits_for_the_run_an_earlier_study_left_training(tmp_path, monkeypatch, capsys):
    spec, run_dir = _one_run_study(tmp_path)
    started = []
    monkeypatch.setattr(study_cli.subprocess, "Popen", lambda *a, **k: started.append(a) or pytest.fail("started"))
    writing = threading.Event()

    def orphan():  # the training child of a killed study: it goes on, finishes, lets go of the folder
        with sole_writer(run_dir, resuming=False):
            writing.set()
            time.sleep(1.0)
            _finish(run_dir)

    child = threading.Thread(target=orphan)
    child.start()
    writing.wait(5)
    assert study_cli._train(spec, tmp_path, None) == 0
    child.join()
    assert started == [] and "is being trained by process" in capsys.readouterr().out


def test_a_rerun_study_resumes_a_run_it_stopped_after_an_epoch(tmp_path, monkeypatch):
    spec, run_dir = _one_run_study(tmp_path)
    run_dir.mkdir()
    (run_dir / "train_state.safetensors").write_bytes(b"state of epoch 1")
    commands = []

    class Finishing:
        def __init__(self, command, **_):
            commands.append(command)
            _finish(run_dir)
            self.returncode = 0

        def poll(self):
            return 0

    monkeypatch.setattr(study_cli.subprocess, "Popen", Finishing)
    assert study_cli._train(spec, tmp_path, None) == 0
    assert commands == [[sys.executable, "-m", "explorer.train", "--resume", str(run_dir)]]
