"""DistributedDataParallel: the training CLI under torchrun, 2 processes with gloo on the CPU, launched by the run
manager. The manager is made to believe two GPUs are visible; the workers see none, so they train on the CPU."""

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import torch

from explorer.checkpoints import load_checkpoint
from explorer.data import load_dataset
from explorer.evaluate import classification_metrics, predict_logits
from explorer.training import processes, runs
from explorer.training.loop import main
from explorer.training.runs import RunManager
from tests.helpers import ENDLESS, group_gone, leader_pid, training, wait_for

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="reads /proc to find the torchrun workers"),
    pytest.mark.skipif(torch.cuda.is_available(), reason="fakes two GPUs, so that the workers fall back to the CPU; "
                                                         "with real GPUs they would take them"),
]

ONE_EPOCH = {"dataset": "digits", "method": "ips", "epochs": 1, "log_every": 1}

# sitecustomize.py for the test's processes: every torchrun worker (RANK is set) records the files it creates,
# writes, renames or removes under the runs folder, and saves the list when it exits.
WRITE_PROBE = '''
import atexit, json, os, sys

if "RANK" in os.environ and "WRITE_PROBE_DIR" in os.environ:
    _runs = os.path.join(os.environ["WRITE_PROBE_RUNS"], "")
    _writes = []
    _WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def _note(path):
        if isinstance(path, (str, bytes)) and os.path.abspath(os.fsdecode(path)).startswith(_runs):
            _writes.append(os.fsdecode(path))

    def _hook(event, args):
        if event == "open" and isinstance(args[2], int) and args[2] & _WRITE_FLAGS:
            _note(args[0])
        elif event == "os.rename":
            _note(args[1])
        elif event in ("os.mkdir", "os.remove", "os.rmdir"):
            _note(args[0])

    def _save():
        with open(os.path.join(os.environ["WRITE_PROBE_DIR"], "rank%s.json" % os.environ["RANK"]), "w") as f:
            json.dump(_writes, f)

    sys.addaudithook(_hook)
    atexit.register(_save)
'''


@pytest.fixture
def two_gpus(monkeypatch):
    """The manager's view: two CUDA GPUs (the workers, in their own processes, find none and use gloo)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def _records(path: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["kind"] == kind]


def test_ddp_on_two_processes_matches_the_single_process_run_and_only_rank_0_writes(tmp_path, monkeypatch):
    # the reference: the same run in one process (in this process, before the GPUs are faked)
    assert main(["--dataset", "digits", "--method", "ips", "--epochs", "1", "--log-every", "1", "--device", "cpu",
                 "--out", str(tmp_path), "--run-id", "single"]) == 0
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "sitecustomize.py").write_text(WRITE_PROBE)
    for name, value in {"PYTHONPATH": str(probe), "WRITE_PROBE_DIR": str(probe),
                        "WRITE_PROBE_RUNS": str(tmp_path / "runs")}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    manager = RunManager(tmp_path / "runs", max_concurrent=2)
    try:
        run_id = manager.launch(ONE_EPOCH, gpus=2)
        wait_for(lambda: not manager.has_active_runs(), 180, "the DDP run to end")
    finally:
        manager.close()
    run_dir = manager.run_dir(run_id)
    assert manager.info(run_id).state == "finished", manager.log_tail(run_id)
    launch = json.loads((run_dir / "launch.json").read_text())
    assert launch["command"][1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert launch["process"]["gpus"] == [0, 1] and manager.info(run_id).row()[6] == "cpu on GPU 0,1"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["environment"]["world_size"] == 2 and config["environment"]["device"] == "cpu"
    assert manager.log_tail(run_id, 200).count("epoch   1/1") == 1  # one rank prints

    # Same initial weights and the same global batches: the runs differ only where BatchNorm normalises each
    # rank's half batch with its own statistics. Measured over 5 seeds: per-step loss within 0.014 of the
    # single-process run, while two single-process runs with different seeds differ by >= 0.055 somewhere in
    # these 12 steps; test NLL within 0.0025, test accuracy within 6 of the 359 test images.
    ddp_steps = _records(run_dir / "metrics.jsonl", "step")
    single_steps = _records(tmp_path / "single" / "metrics.jsonl", "step")
    assert [r["step"] for r in ddp_steps] == [r["step"] for r in single_steps] == list(range(1, 13))
    assert max(abs(d["loss"] - s["loss"]) for d, s in zip(ddp_steps, single_steps, strict=True)) < 0.03
    [ddp] = _records(run_dir / "metrics.jsonl", "epoch")
    [single] = _records(tmp_path / "single" / "metrics.jsonl", "epoch")
    assert ddp["test_nll"] == pytest.approx(single["test_nll"], abs=0.01)
    assert ddp["test_accuracy"] == pytest.approx(single["test_accuracy"], abs=0.03)
    assert ddp["train_accuracy"] == pytest.approx(single["train_accuracy"], abs=0.03)  # over all ranks' anchors

    checkpoint = load_checkpoint(run_dir)  # the bare model (no "module." prefix), saved by rank 0
    dataset = load_dataset("digits")
    metrics = classification_metrics(predict_logits(checkpoint.model, dataset, dataset.test_images),
                                     dataset.test_labels)
    assert metrics["accuracy"] == pytest.approx(ddp["test_accuracy"], abs=1e-6)

    rank0 = json.loads((probe / "rank0.json").read_text())
    rank1 = json.loads((probe / "rank1.json").read_text())
    assert any(p.endswith("model.safetensors") for p in rank0) and any(p.endswith("status.json") for p in rank0)
    assert rank1 == []


def _worker_pids(run_id: str) -> list[int]:
    """The torchrun workers of a run: processes whose command line runs explorer.train for it."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
        except OSError:
            continue
        if b"explorer.train" in args and run_id.encode() in args and b"torch.distributed.run" not in args:
            found.append(int(entry.name))
    return found


def test_cancel_kills_torchrun_workers_when_torchrun_cannot_stop_them(tmp_path, two_gpus):
    manager = RunManager(tmp_path / "runs", max_concurrent=2, grace_s=1.0)
    try:
        run_id = manager.launch(ENDLESS, gpus=2)
        wait_for(lambda: training(manager, run_id), 120, "the DDP run to train")
        leader = leader_pid(manager, run_id)
        workers = _worker_pids(run_id)
        assert len(workers) == 2 and all(os.getsid(w) != leader for w in workers)  # out of the group's reach
        os.kill(leader, signal.SIGSTOP)  # torchrun can no longer pass SIGTERM on to its workers
        start = time.monotonic()
        manager.cancel(run_id)
        wait_for(lambda: manager.info(run_id).state == "cancelled" and group_gone(leader)
                 and all(processes.process_identity(w) is None for w in workers), 15,
                 "the run to end cancelled with torchrun and both workers gone")
        assert time.monotonic() - start >= manager.grace_s  # killed when the grace period ended
        assert "stopped before it could save its state" in manager.info(run_id).message
    finally:
        manager.close()
        for process in list(manager._active.values()):
            process.signal_group(signal.SIGKILL)


def test_runs_that_cannot_split_over_the_gpus_are_refused(tmp_path, two_gpus):
    for limit, settings, message in [
        (2, {"dataset": "digits", "batch_size": 6, "equal_compute": True},
         r"3 anchors per step \(--batch-size 6, halved by --equal-compute\) do not split evenly over 2 processes"),
        (1, {"dataset": "digits"}, "a run on 2 GPUs needs 2 slots, but this app runs at most 1 training process"),
    ]:
        manager = RunManager(tmp_path / f"runs{limit}", max_concurrent=limit)
        try:
            with pytest.raises(runs.RunError, match=message):
                manager.launch(settings, gpus=2)
        finally:
            manager.close()
        assert list(manager.runs_dir.iterdir()) == []


def test_each_run_gets_its_own_gpu(tmp_path, two_gpus, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    manager = RunManager(tmp_path / "runs", max_concurrent=2)
    try:
        first, second, third = (manager.launch(ENDLESS) for _ in range(3))
        assert manager.info(third).state == "queued"  # two GPUs, two slots
        for run_id, gpu in ((first, 0), (second, 1)):
            environ = Path(f"/proc/{leader_pid(manager, run_id)}/environ").read_bytes().split(b"\0")
            assert f"CUDA_VISIBLE_DEVICES={gpu}".encode() in environ and manager.info(run_id).gpus == (gpu,)
        manager.cancel(first)
        assert wait_for(lambda: manager.info(third).gpus, 10, "the queued run to take the freed GPU") == (0,)
        for run_id in (second, third):
            manager.cancel(run_id)
        wait_for(lambda: not manager.has_active_runs(), 15, "every run to stop")
    finally:
        manager.close()
        for process in list(manager._active.values()):
            process.signal_group(signal.SIGKILL)
