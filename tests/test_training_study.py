"""The study: its settings and comparisons, results read from run folders, the paired intervals, the CLI."""

import json
import math
import os
import signal
import subprocess
import sys

import pytest

from explorer.training.study import (
    COMPARISONS,
    PRESETS,
    Comparison,
    Setting,
    StudySpec,
    comparison_spec,
    estimate_seconds,
    list_studies,
    load_spec,
    save_spec,
)
from explorer.training.study_cli import main
from explorer.training.study_results import read_results
from tests.helpers import ROOT, fake_study_run, wait_for


def test_comparison_spec_builds_the_arms_each_comparison_needs():
    spec = comparison_spec("s", "digits", "small_cnn", ["ce", "ips", "cskd"], 10, list(COMPARISONS), [0, 1])
    assert [s.label for s in spec.settings] == ["ce 10 ep", "ips 10 ep", "ce 20 ep", "ips 10 ep --equal-compute",
                                                "cskd 10 ep", "cskd 10 ep --equal-compute"]
    assert [(c.setting, c.baseline) for c in spec.comparisons] == [
        ("ips 10 ep", "ce 10 ep"), ("ips 10 ep", "ce 20 ep"), ("ips 10 ep --equal-compute", "ce 10 ep"),
        ("cskd 10 ep", "ce 10 ep"), ("cskd 10 ep", "ce 20 ep"), ("cskd 10 ep --equal-compute", "ce 10 ep"),
        ("cskd 10 ep", "ips 10 ep")]  # with IPS in the study, every other method is also compared with it
    assert spec.comparisons[-1].name == "equal epochs, against IPS"
    cfg = spec.config(spec.setting("ips 10 ep --equal-compute"), 1, "/tmp/out")
    assert (cfg.method, cfg.epochs, cfg.equal_compute, cfg.seed, cfg.dataset) == ("ips", 10, True, 1, "digits")
    assert cfg.run_id == "s-ips-10-ep-equal-compute-s1" and spec.run_id(spec.settings[0], 0) == "s-ce-10-ep-s0"


@pytest.mark.parametrize("kwargs,message", [
    ({"methods": ["ce"]}, "at least one method besides the baseline"),
    ({"methods": ["ce", "nope"]}, "unknown method 'nope'"),
    ({"comparisons": ["fair"]}, "unknown comparison"),
    ({"epochs": 0}, "epochs must be at least 1"),
    ({"methods": ["ce", "kd"]}, "a kd arm needs a teacher"),
])
def test_comparison_spec_refuses_what_cannot_work(kwargs, message):
    args = {"methods": ["ce", "ips"], "epochs": 5, "comparisons": ["equal-epochs"], **kwargs}
    with pytest.raises(ValueError, match=message):
        comparison_spec("s", "digits", "small_cnn", args["methods"], args["epochs"], args["comparisons"], [0])


def test_a_spec_refuses_bad_ids_unknown_arguments_and_dangling_comparisons():
    base = Setting("ce", {"method": "ce"})
    with pytest.raises(ValueError, match="a study id may hold"):
        StudySpec("../x", "digits", "small_cnn", [0], [base], [])
    with pytest.raises(ValueError, match="unknown training arguments"):
        StudySpec("s", "digits", "small_cnn", [0], [Setting("x", {"learning_rate": 1})], [])
    with pytest.raises(ValueError, match="names a setting the study lacks"):
        StudySpec("s", "digits", "small_cnn", [0], [base], [Comparison("c", "ips", "ce")])


def test_results_give_paired_differences_computed_by_hand(tmp_path):
    spec = comparison_spec("s", "digits", "small_cnn", ["ce", "ips"], 30, ["equal-epochs"], [0, 1, 2])
    ce = {0: 0.980, 1: 0.985, 2: 0.970}
    ips = {0: 0.990, 1: 0.985, 2: 0.990}
    for seed in ce:
        fake_study_run(tmp_path, f"s-ce-30-ep-s{seed}", ce[seed], nll=0.05)
        fake_study_run(tmp_path, f"s-ips-30-ep-s{seed}", ips[seed], nll=0.10)
    fake_study_run(tmp_path, "s-ips-30-ep-s9", 0.5)  # not a seed of the study: ignored
    results = read_results(spec, tmp_path)
    assert results.pending == 0
    assert results.values["accuracy"]["ips 30 ep"] == pytest.approx({0: 99.0, 1: 98.5, 2: 99.0})
    diff = results.difference("accuracy", spec.comparisons[0])
    # differences 1.0, 0.0, 2.0 points: mean 1, std 1, t(0.975, 2) = 4.3027
    assert diff.per_seed == pytest.approx({0: 1.0, 1: 0.0, 2: 2.0})
    assert (diff.mean, diff.std) == pytest.approx((1.0, 1.0))
    assert (diff.low, diff.high) == pytest.approx((1 - 4.302653 / math.sqrt(3), 1 + 4.302653 / math.sqrt(3)), abs=1e-5)
    table = results.markdown().splitlines()
    assert table[2] == ("| equal epochs | ips 30 ep | ce 30 ep | 98.83 ± 0.29 | 97.83 ± 0.76 "
                        "| **+1.00** (-1.48 to +3.48) | 0.050 → 0.100 | 1.00 → 1.00 | 3 |")
    assert "the interval includes 0, so no difference is shown" in results.sentences()[0]
    assert results.csv().splitlines()[1] == "s,\"ce 30 ep\",0,98.0,0.05,1.0,0.02"
    assert json.loads(json.dumps(results.to_json()))["comparisons"][0]["differences"]["accuracy"]["n"] == 3


def test_unfinished_runs_are_pending_not_results(tmp_path):
    spec = comparison_spec("s", "digits", "small_cnn", ["ce", "ips"], 30, ["equal-epochs"], [0])
    fake_study_run(tmp_path, "s-ce-30-ep-s0", 0.98)
    fake_study_run(tmp_path, "s-ips-30-ep-s0", 0.5, state="running")
    results = read_results(spec, tmp_path)
    assert results.pending == 1 and "ips 30 ep" not in results.values["accuracy"]
    assert results.difference("accuracy", spec.comparisons[0]) is None and results.sentences() == []


def test_specs_round_trip_through_the_runs_folder(tmp_path):
    spec = PRESETS["holdout-digits"]()
    save_spec(spec, tmp_path)
    assert load_spec(tmp_path, spec.study_id) == spec
    (tmp_path / "studies" / "broken.json").write_text("{\"study_id\": 3}")
    assert [s.study_id for s in list_studies(tmp_path)] == [spec.study_id]
    with pytest.raises(ValueError, match="there is no study 'missing'"):
        load_spec(tmp_path, "missing")


def test_the_estimate_uses_the_measured_speed_of_earlier_runs(tmp_path, digits):
    spec = comparison_spec("s", "digits", "small_cnn", ["ce", "ips"], 10, ["equal-epochs"], [0])
    config = {"dataset": "digits", "model": "small_cnn", "method": "ce"}
    fake_study_run(tmp_path, "earlier-ce", 0.9, images_per_s=1000.0, config=config)
    fake_study_run(tmp_path, "earlier-ips", 0.9, images_per_s=500.0, config={**config, "method": "ips"})
    seconds, how = estimate_seconds(spec, tmp_path)
    images = math.ceil(len(digits.train_labels) / 128) * 128  # whole steps of 128 anchors per epoch
    assert seconds == pytest.approx(2 * 6.0 + 10 * images / 1000.0 + 10 * 2 * images / 500.0)
    assert "measured" in how
    fake_study_run(tmp_path, "s-ce-10-ep-s0", 0.9)  # a finished run of the study costs nothing more
    assert estimate_seconds(spec, tmp_path)[0] == pytest.approx(6.0 + 10 * 2 * images / 500.0)


@pytest.mark.parametrize("load,busy", [(1.9, False), (2.0, False), (7.0, True)])
def test_an_estimate_says_when_the_machine_is_busy(tmp_path, digits, monkeypatch, load, busy):
    """Estimates come from step times measured before; at load 7 on 2 cores a study took 62 s for an estimate of
    39 s. The note is ``busy_note``'s, which the one-click training button shows too."""
    monkeypatch.setattr(os, "getloadavg", lambda: (load, 0.5, 0.5))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    spec = comparison_spec("s", "digits", "small_cnn", ["ce", "ips"], 1, ["equal-epochs"], [0])
    seconds, how = estimate_seconds(spec, tmp_path)
    note = "; this machine is busy now (load average 7.0 on 2 cores), so it will take longer"
    assert how.endswith(note) if busy else "busy" not in how
    assert seconds == estimate_seconds(spec, tmp_path)[0] > 0  # the note changes the words, not the number


def test_a_study_trains_through_the_cli_skips_finished_runs_and_prints_its_table(tmp_path, capsys):
    args = ["--out", str(tmp_path), "--id", "t", "--dataset", "digits", "--methods", "ce", "ips", "--epochs", "1",
            "--seeds", "0", "--only", "ce 1 ep"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "== ce 1 ep, seed 0" in first and "| ce 1 ep | 0 |" in first
    config = json.loads((tmp_path / "t-ce-1-ep-s0" / "config.json").read_text())
    assert config["dataset"] == "digits" and config["epochs"] == 1 and config["method"] == "ce"
    assert load_spec(tmp_path, "t").settings[1].label == "ips 1 ep"
    assert main(args) == 0  # finished runs are not trained again
    assert "== ce 1 ep" not in capsys.readouterr().out


def test_jobs_train_several_runs_at_once_and_every_one_finishes(tmp_path, capsys):
    args = ["--out", str(tmp_path), "--id", "j", "--dataset", "digits", "--methods", "ce", "ips", "--epochs", "1",
            "--seeds", "0", "1", "--only", "ce 1 ep", "--jobs", "2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| ce 1 ep | 0 |" in out and "| ce 1 ep | 1 |" in out
    seeds = {json.loads((tmp_path / f"j-ce-1-ep-s{s}" / "config.json").read_text())["seed"] for s in (0, 1)}
    assert seeds == {0, 1}
    with pytest.raises(SystemExit):
        main([*args[:-1], "0"])
    assert "--jobs must be at least 1" in capsys.readouterr().err


def test_a_stopped_study_stops_its_running_runs(tmp_path):
    study = subprocess.Popen([sys.executable, "-m", "explorer.study", "--out", str(tmp_path), "--id", "stop",
                              "--dataset", "digits", "--methods", "ce", "ips", "--epochs", "200", "--seeds", "0",
                              "--jobs", "2"], cwd=ROOT, stdout=subprocess.DEVNULL)
    runs = [tmp_path / "stop-ce-200-ep-s0", tmp_path / "stop-ips-200-ep-s0"]

    def state(run):
        return json.loads((run / "status.json").read_text())["state"] if (run / "status.json").is_file() else None

    wait_for(lambda: all(state(run) == "running" for run in runs), 120, "both runs to start")
    study.terminate()
    assert study.wait(60) == 128 + signal.SIGTERM
    assert [state(run) for run in runs] == ["cancelled", "cancelled"]  # none trains on as an orphan


@pytest.mark.parametrize("argv,message", [
    (["--dataset", "nosuch"], "unknown dataset 'nosuch'"),
    (["--preset", "digits", "--seeds", "-1"], "seeds must be whole numbers from 0 to 2^63 - 1; got '-1'"),
    (["--dataset", "digits", "--seeds", "0", "-1"], "seeds must be whole numbers from 0 to 2^63 - 1; got '-1'"),
    (["--dataset", "digits", "--epochs", "100001"], "--epochs must be between 1 and 100000; got 100001"),
    (["--dataset", "digits", "--methods", "ce", "ips", "--nonsense"], "unrecognized arguments: --nonsense"),
])
def test_a_refused_study_is_one_line_exit_code_2_and_writes_nothing(tmp_path, capsys, argv, message):
    """Refused before any run starts (a run's own training process refuses the same values, after the study had
    written its spec and started)."""
    with pytest.raises(SystemExit) as refused:
        main(["--out", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert refused.value.code == 2 and err.count("\n") == 1 and message in err
    assert list(tmp_path.iterdir()) == []


def test_table_only_without_finished_runs_says_so_and_fails(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--preset", "digits", "--table-only"]) == 1
    assert "no finished run of study digits" in capsys.readouterr().err


def test_the_confidence_profile_of_a_real_run_matches_its_checkpoint(tmp_path, digits):
    """Errors' confidence and NLL share recomputed here by hand from the checkpoint's own predictions."""
    import torch.nn.functional as F

    from explorer.checkpoints import load_checkpoint
    from explorer.evaluate import predict_logits
    from explorer.training.loop import main as train
    from explorer.training.overconfidence import confidence_profile

    assert train(["--dataset", "digits", "--method", "ips", "--epochs", "1", "--kd-weight", "0.5", "--out",
                  str(tmp_path), "--run-id", "r"]) == 0
    profile = confidence_profile(tmp_path / "r")
    logits = predict_logits(load_checkpoint(tmp_path / "r").model, digits, digits.test_images)
    wrong = logits.argmax(1) != digits.test_labels
    nll = F.cross_entropy(logits, digits.test_labels, reduction="none")
    assert profile["errors"] == int(wrong.sum()) > 0 and profile["n"] == len(digits.test_labels)
    assert profile["error_confidence"] == pytest.approx(float(logits.softmax(1).max(1).values[wrong].mean()), rel=1e-5)
    assert profile["error_nll_share"] == pytest.approx(float(nll[wrong].sum() / nll.sum()), rel=1e-5)
    last = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()][-1]
    assert profile["kd_ce_ratio"] == pytest.approx(0.5 * last["kd"] / last["ce"])
    with pytest.raises(ValueError, match="not a finished run"):
        confidence_profile(tmp_path / "missing")
