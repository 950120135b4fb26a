"""The Train tab's plain functions: curves read from run folders, the curves figure, the comparison method."""

import json

import pytest

from explorer.analysis.figures import CURVE_PANELS, training_curves
from explorer.training.methods import METHODS, method_colour
from explorer.training.runfolder import RunInfo
from explorer.training.runfolder import training_curves as run_curves
from explorer.ui.train import describe, reference_runs
from tests.helpers import DEMO, IPS_DEMO

IPS = IPS_DEMO


def test_run_curves_put_steps_at_fractional_epochs_and_epochs_at_whole_ones():
    records = [json.loads(line) for line in (IPS / "metrics.jsonl").read_text().splitlines()]
    steps_per_epoch = json.loads((IPS / "config.json").read_text())["steps_per_epoch"]
    method, curves = run_curves(IPS)
    assert method == "ips" and steps_per_epoch == 32
    steps = [r for r in records if r["kind"] == "step"]
    assert curves["kd"] == ([r["step"] / 32 for r in steps], [r["kd"] for r in steps])
    n_epochs = json.loads((IPS / "config.json").read_text())["epochs"]
    assert curves["loss"][0][:3] == pytest.approx([10 / 32, 20 / 32, 30 / 32]) and curves["loss"][0][-1] == n_epochs
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert curves["test_accuracy"] == (list(range(1, n_epochs + 1)), [r["test_accuracy"] for r in epochs])
    assert curves["test_ece"][1] == [r["test_ece"] for r in epochs]


def test_run_curves_of_a_run_that_has_not_started_are_empty(tmp_path):
    method, curves = run_curves(tmp_path)
    assert method == "?" and all(curves[metric] == ([], []) for metric, _, _ in CURVE_PANELS)


def test_reference_runs_are_the_demo_run_folders():
    assert list(reference_runs(DEMO)) == ["mnist5k-small_cnn-ce", "mnist5k-small_cnn-cskd", "mnist5k-small_cnn-ips"]
    assert reference_runs(DEMO / "missing") == {}


def test_training_curves_colour_by_method_and_dash_the_references():
    one = {metric: ([1, 2], [0.5, 0.4]) for metric, _, _ in CURVE_PANELS}
    fig = training_curves({"run 1": one, "run 2": one, "demo": one}, {"run 1": "ips", "run 2": "ips", "demo": "ips"},
                          dashed=["demo"])
    assert len(fig.data) == 3 * len(CURVE_PANELS)
    by_name = {t.name: t for t in fig.data if t.showlegend}
    assert by_name["run 1"].line.color == method_colour("ips") == by_name["demo"].line.color
    assert by_name["run 2"].line.color != method_colour("ips")  # two runs of one method: another shade
    assert by_name["run 2"].marker.symbol != by_name["run 1"].marker.symbol
    assert by_name["demo"].line.dash == "dash" and by_name["run 1"].line.dash == "solid"
    assert [a.text for a in fig.layout.annotations] == [title for _, title, _ in CURVE_PANELS]


def test_other_method_is_the_baseline_for_distillation_and_ips_for_the_baseline():
    assert [METHODS[m].compare_with for m in ("ce", "cskd", "ips")] == ["ips", "ce", "ce"]


def test_describe_says_why_a_run_failed_and_where_a_finished_one_went(tmp_path):
    info = RunInfo(run_id="r1", method="ips", dataset="digits", model="small_cnn", state="failed",
                   message="the loss became non-finite (nan) at epoch 1, step 10", progress=0.8, epoch=0, epochs=1,
                   device="cpu", processes=1, gpus=(), best_test_accuracy=None, images_per_s=None, eta_s=None,
                   started=0.0, path=tmp_path)
    assert "**failed**: the loss became non-finite (nan) at epoch 1, step 10" in describe(info)
    finished = describe(RunInfo(**{**info.__dict__, "state": "finished", "message": "finished 1 epochs in 2.0 s",
                                   "best_test_accuracy": 0.873}))
    assert "Best test accuracy **87.3 %**" in finished and "Model A and Model B pickers" in finished
    running = describe(RunInfo(**{**info.__dict__, "state": "running", "progress": 0.5, "images_per_s": 1500.0,
                                  "eta_s": 12.0}))
    assert "50 %" in running and "1500 images/s" in running and "about 12 s left" in running
