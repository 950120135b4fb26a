"""TensorBoard event files: the same scalars as metrics.jsonl, read back with TensorBoard's own reader."""

import signal
import sys
from pathlib import Path

import pytest

from explorer.training.events import scalars
from explorer.training.loop import main
from explorer.training.runfolder import read_metrics
from tests.helpers import stop_at_step

pytest.importorskip("tensorboardX", reason="tensorboardX (the event writer, requirements.txt) is not installed")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                        reason="tensorboard (the reader, requirements-dev.txt) is not installed")

RUN = ["--dataset", "digits", "--method", "ips", "--epochs", "2", "--log-every", "4", "--run-id", "r"]


def _events(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} as TensorBoard reads the run folder."""
    acc = event_accumulator.EventAccumulator(str(run_dir), size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _expected(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """The same from metrics.jsonl."""
    expected: dict[str, list[tuple[int, float]]] = {}
    for record in read_metrics(run_dir):
        for tag, value in scalars(record).items():
            expected.setdefault(tag, []).append((record["step"], value))
    return expected


def _assert_same(events, expected) -> None:
    assert sorted(events) == sorted(expected)
    for tag, points in expected.items():
        assert [step for step, _ in events[tag]] == [step for step, _ in points], tag
        assert [v for _, v in events[tag]] == pytest.approx([v for _, v in points], rel=1e-6), tag  # float32


def test_a_run_writes_the_scalars_of_its_metrics_as_tensorboard_events(tmp_path):
    assert main([*RUN, "--out", str(tmp_path)]) == 0
    run_dir = tmp_path / "r"
    events, expected = _events(run_dir), _expected(run_dir)
    for tag in ("step/loss", "step/ce", "step/kd", "step/lr", "step/images_per_s", "epoch/train_accuracy",
                "epoch/test_accuracy", "epoch/test_nll", "epoch/test_ece", "epoch/teacher_confidence"):
        assert tag in events
    assert [step for step, _ in events["step/loss"]] == [4, 8, 12, 16, 20, 24]  # 12 steps an epoch
    assert [step for step, _ in events["epoch/test_accuracy"]] == [12, 24]
    _assert_same(events, expected)


def test_a_resumed_run_has_each_step_once_in_its_events(tmp_path, monkeypatch):
    """Cancelled at step 17 (epoch 2's step records 16 written), resumed after epoch 1: TensorBoard drops the
    first attempt's events after step 12 as metrics.jsonl drops its records."""
    stop_at_step(monkeypatch, 17)
    assert main([*RUN, "--out", str(tmp_path)]) == 128 + signal.SIGTERM
    monkeypatch.undo()
    run_dir = tmp_path / "r"
    assert main(["--resume", str(run_dir)]) == 0
    events = _events(run_dir)
    assert [step for step, _ in events["step/loss"]] == [4, 8, 12, 16, 20, 24]
    _assert_same(events, _expected(run_dir))


def test_without_tensorboardx_a_run_trains_and_says_once_that_logging_is_off(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import tensorboardX raises ImportError
    assert main([*RUN, "--out", str(tmp_path)]) == 0
    run_dir = tmp_path / "r"
    assert read_metrics(run_dir)[-1]["kind"] == "epoch"
    assert not list(run_dir.glob("events.out.tfevents.*"))
    assert capsys.readouterr().err.count("TensorBoard logging is off") == 1
