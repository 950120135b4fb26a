"""--resume: the training state saved at every epoch end, and runs that continue from it bit-identically."""

import json
import os
import pickle
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, safe_open, save_file

from explorer.training import loop
from explorer.training.config import ConfigError, parse_config
from explorer.training.loop import main
from tests.helpers import stop_at_step

ARGS = ["--dataset", "digits", "--method", "ips", "--epochs", "3", "--log-every", "5"]  # 12 steps per epoch
TIMES = ("elapsed", "images_per_s")


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _without_times(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMES} for r in records if r["kind"] != "resume"]


def _state(run_dir: Path) -> tuple[dict, dict]:
    with safe_open(str(run_dir / "train_state.safetensors"), framework="pt") as f:
        meta = json.loads(f.metadata()["train_state"])
    return meta, load_file(str(run_dir / "train_state.safetensors"))


@pytest.fixture(scope="module")
def left_alone(tmp_path_factory) -> Path:
    """The reference: the run trained from start to end in one go."""
    out = tmp_path_factory.mktemp("runs")
    assert main([*ARGS, "--out", str(out), "--run-id", "alone"]) == 0
    return out / "alone"


def test_a_run_stopped_mid_epoch_and_resumed_is_bit_identical_to_the_run_left_alone(tmp_path, monkeypatch,
                                                                                    left_alone):
    stop_at_step(monkeypatch, 29)  # in epoch 3, after 2 finished epochs (24 steps) and 5 more steps
    assert main([*ARGS, "--out", str(tmp_path), "--run-id", "cut"]) == 128 + signal.SIGTERM
    run_dir = tmp_path / "cut"
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "cancelled" and "--resume continues" in status["message"]
    assert _state(run_dir)[0]["epoch"] == 2 and _state(run_dir)[0]["step"] == 24
    cancelled_records = _records(run_dir)
    monkeypatch.undo()

    assert main(["--resume", str(run_dir)]) == 0
    alone_weights, resumed_weights = (load_file(str(d / "model.safetensors")) for d in (left_alone, run_dir))
    assert alone_weights.keys() == resumed_weights.keys()
    assert all(torch.equal(alone_weights[k], resumed_weights[k]) for k in alone_weights)
    (alone_meta, alone_tensors), (resumed_meta, resumed_tensors) = _state(left_alone), _state(run_dir)
    assert all(torch.equal(alone_tensors[k], resumed_tensors[k]) for k in alone_tensors)  # momentum, generators too
    assert {k: v for k, v in alone_meta.items() if k != "elapsed"} == \
        {k: v for k, v in resumed_meta.items() if k != "elapsed"}

    # metrics.jsonl continues: the records up to epoch 2 kept, the step records of the cut epoch replaced
    records = _records(run_dir)
    resume_at = next(i for i, r in enumerate(records) if r["kind"] == "resume")
    assert records[:resume_at] == cancelled_records[:resume_at] and records[resume_at - 1]["epoch"] == 2
    assert records[resume_at]["epoch"] == 2 and records[resume_at]["step"] == 24
    assert _without_times(records) == _without_times(_records(left_alone))
    assert [r["elapsed"] for r in records if r["kind"] == "epoch"] == sorted(r["elapsed"] for r in records
                                                                             if r["kind"] == "epoch")
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "finished" and status["step"] == 36 and status["progress"] == 1.0


def test_a_run_stopped_after_an_epoch_resumes_at_the_next(tmp_path, monkeypatch, left_alone):
    stop_at_step(monkeypatch, 12)  # the signal comes in the last step of epoch 1: epoch 1 still ends and saves
    assert main([*ARGS, "--out", str(tmp_path), "--run-id", "cut"]) == 128 + signal.SIGTERM
    assert _state(tmp_path / "cut")[0]["epoch"] == 1
    monkeypatch.undo()
    assert main(["--resume", str(tmp_path / "cut")]) == 0
    assert _without_times(_records(tmp_path / "cut")) == _without_times(_records(left_alone))


def test_resume_refuses_what_it_cannot_continue(tmp_path, left_alone, capsys):
    with pytest.raises(ConfigError, match="run alone finished all its 3 epochs; there is nothing to resume"):
        parse_config(["--resume", str(left_alone)])
    assert main(["--resume", str(left_alone)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert json.loads((left_alone / "status.json").read_text())["state"] == "finished"  # untouched

    early = tmp_path / "early"
    early.mkdir()
    (early / "config.json").write_text((left_alone / "config.json").read_text())
    (early / "status.json").write_text(json.dumps({"state": "cancelled", "progress": 0.1}))
    with pytest.raises(ConfigError, match="run early has no training state .* before its first epoch ended"):
        parse_config(["--resume", str(early)])
    (early / "status.json").write_text(json.dumps({"state": "running", "pid": os.getpid()}))
    (early / "train_state.safetensors").write_bytes((left_alone / "train_state.safetensors").read_bytes())
    parse_config(["--resume", str(early)])  # "running", but its pid is not a training process: interrupted


def test_a_training_state_is_never_unpickled(tmp_path, left_alone):
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('pickle executed')",))

    run_dir = tmp_path / "evil"
    run_dir.mkdir()
    for name in ("config.json", "metrics.jsonl"):
        (run_dir / name).write_text((left_alone / name).read_text())
    (run_dir / "status.json").write_text(json.dumps({"state": "failed"}))
    (run_dir / "train_state.safetensors").write_bytes(pickle.dumps(Boom()))
    assert main(["--resume", str(run_dir)]) == 2
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed" and "is not a readable training state" in status["message"]


def test_a_state_from_another_kind_of_device_is_refused(tmp_path, left_alone):
    run_dir = tmp_path / "gpu-run"
    run_dir.mkdir()
    for name in ("config.json", "metrics.jsonl"):
        (run_dir / name).write_text((left_alone / name).read_text())
    (run_dir / "status.json").write_text(json.dumps({"state": "cancelled", "progress": 0.66, "step": 24}))
    meta, tensors = _state(left_alone)
    save_file(tensors, str(run_dir / "train_state.safetensors"),
              metadata={"train_state": json.dumps({**meta, "device_type": "cuda"})})
    assert main(["--resume", str(run_dir)]) == 2
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed" and "trained on cuda, so it resumes on cuda only" in status["message"]
    assert status["progress"] == 0.66  # a resume that could not start keeps the run's progress



def test_resumed_momentum_takes_the_layout_of_its_channels_last_weights(tmp_path, monkeypatch):
    """On CUDA the fused SGD kernel refuses momentum whose strides differ from the weight's (seen on an H200:
    a channels-last run could not resume); the layout is checked here on the CPU with --channels-last on."""
    stop_at_step(monkeypatch, 14)  # after epoch 1 (12 steps): its state holds momentum for every weight
    args = [*ARGS, "--channels-last", "on", "--out", str(tmp_path), "--run-id", "nhwc"]
    assert main(args) == 128 + signal.SIGTERM
    s = loop.setup(parse_config(["--resume", str(tmp_path / "nhwc")]))
    convolutions = [p for p in s.bare_model.parameters() if p.dim() == 4]
    assert convolutions and all(p.is_contiguous(memory_format=torch.channels_last) for p in convolutions)
    for param in s.bare_model.parameters():
        assert s.optimizer.state[param]["momentum_buffer"].stride() == param.stride()
