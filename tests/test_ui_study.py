"""The Study tab's plain functions and the run manager's named runs: no training process is started here.

The run manager's queue is held (``_advance`` does nothing), so launched runs stay ``queued``; finished runs are
run folders written by hand with known metrics. The end-to-end study (real runs through the app) is in
test_ui_api.py.
"""

import glob
import json
import os
import tempfile

import gradio as gr
import pytest

from explorer.analysis.payloads import STUDY_COMPARISON_HEADERS, STUDY_RUNS_HEADERS, STUDY_SUMMARY_HEADERS
from explorer.stats import t_critical
from explorer.training.runfolder import CONFIG, LAUNCH, write_status
from explorer.training.runs import RunError, RunManager
from explorer.training.study import STUDIES, comparison_spec, load_spec, save_spec
from explorer.ui.binding import flatten
from explorer.ui.study import (
    cancel_study,
    estimate_study,
    export_study,
    form_spec,
    launch_study,
    queue_runs,
    refresh,
    refresh_studies,
    resume_study,
    run_states,
    show_teacher,
    study_results,
)
from tests.helpers import fake_study_run, save_digits_run, wait_for

FORM = dict(study_id="s", dataset="digits", model="small_cnn", methods=["ce", "ips"],
            comparisons=["equal-epochs", "equal-compute"], seeds=3, epochs=1, batch_size=64, lr=0.05)
# the final test metrics of the hand-written runs: setting label -> seed -> (accuracy, nll, ece, brier)
FINISHED = {"ce 1 ep": {0: (0.90, 0.30, 0.020, 0.15), 1: (0.92, 0.28, 0.030, 0.14), 2: (0.91, 0.29, 0.025, 0.145)},
            "ips 1 ep": {0: (0.93, 0.25, 0.010, 0.12), 1: (0.92, 0.27, 0.020, 0.13), 2: (0.95, 0.22, 0.015, 0.10)},
            "ce 2 ep": {0: (0.94, 0.20, 0.030, 0.11)}}


@pytest.fixture
def held(tmp_path, monkeypatch):
    """A run manager whose queue never starts a run."""
    monkeypatch.setattr(RunManager, "_advance", lambda self: None)
    manager = RunManager(tmp_path / "runs", max_concurrent=1)
    yield manager
    manager.close()


@pytest.fixture
def finished_study(held):
    """Study "s" saved, with the runs of FINISHED finished; ce 2 ep seeds 1 and 2 not started."""
    spec = form_spec(**FORM)
    save_spec(spec, held.runs_dir)
    for label, by_seed in FINISHED.items():
        for seed, metrics in by_seed.items():
            fake_study_run(held.runs_dir, spec.run_id(spec.setting(label), seed), *metrics)
    return spec


def test_launch_names_the_run_and_records_its_study(held):
    run_id = held.launch({"dataset": "digits", "epochs": 1}, run_id="named-run", study="my-study")
    launch = json.loads((held.runs_dir / "named-run" / LAUNCH).read_text())
    assert run_id == "named-run" and launch["study"] == "my-study" and launch["config"]["run_id"] == "named-run"
    assert "--run-id" in launch["command"] and "named-run" in launch["command"]
    assert "study" not in json.loads((held.runs_dir / held.launch({"dataset": "digits"}) / LAUNCH).read_text())
    with pytest.raises(RunError, match="run named-run already exists"):
        held.launch({"dataset": "digits"}, run_id="named-run")
    for bad in ("../escape", "a/b", "..", ""):
        with pytest.raises(RunError, match="is not a run id"):
            held.launch({"dataset": "digits"}, run_id=bad)
    assert sorted(p.name for p in held.runs_dir.iterdir()) == sorted([run_id, held.runs()[0].run_id])


def test_form_spec_builds_the_comparison_study_and_refuses_bad_values():
    spec = form_spec(**FORM)
    assert [s.label for s in spec.settings] == ["ce 1 ep", "ips 1 ep", "ce 2 ep"] and spec.seeds == [0, 1, 2]
    assert len(spec.runs()) == 9 and spec.shared == {"batch_size": 64, "lr": 0.05}
    assert [(c.setting, c.baseline) for c in spec.comparisons] == [("ips 1 ep", "ce 1 ep"), ("ips 1 ep", "ce 2 ep")]
    assert form_spec(**{**FORM, "methods": ["ips"]}).settings == spec.settings  # the baseline is always trained
    assert form_spec(**{**FORM, "study_id": ""}).study_id.startswith("digits-ips-")
    for change, message in (({"seeds": 0}, "number of seeds must be a whole number of at least 1"),
                            ({"epochs": 1.5}, "epochs must be a whole number"), ({"lr": 0}, "learning rate"),
                            ({"comparisons": []}, "choose at least one comparison"),
                            ({"methods": ["ce"]}, "at least one method besides the baseline"),
                            ({"study_id": "a/b"}, "a study id may hold")):
        with pytest.raises(ValueError, match=message):
            form_spec(**{**FORM, **change})


def test_queue_runs_queues_each_setting_and_seed_with_the_specs_config(held):
    spec = form_spec(**FORM)
    queued = queue_runs(held, spec)
    assert queued == [spec.run_id(s, seed) for s, seed in spec.runs()] and len(queued) == 9
    for setting, seed in spec.runs():
        launch = json.loads((held.runs_dir / spec.run_id(setting, seed) / LAUNCH).read_text())
        expected = spec.config(setting, seed, held.runs_dir)
        assert launch["study"] == "s" and launch["config"]["seed"] == seed
        assert {k: launch["config"][k] for k in ("method", "epochs", "batch_size", "lr", "dataset")} == {
            "method": expected.method, "epochs": expected.epochs, "batch_size": 64, "lr": 0.05, "dataset": "digits"}
    assert queue_runs(held, spec) == []  # every run is queued already
    cancelled = spec.run_id(spec.settings[2], 1)
    held.cancel(cancelled)
    assert run_states(spec, held.runs_dir)[cancelled] == "cancelled"
    assert queue_runs(held, spec) == [cancelled]  # a cancelled run is trained again under its id
    assert run_states(spec, held.runs_dir)[cancelled] == "queued"


def test_a_refused_run_cancels_the_runs_queued_before_it(held):
    spec = comparison_spec("bad", "digits", "small_cnn", ["ce", "ips"], 1, ["equal-epochs"], [0],
                           {"patch_size": 3})  # ce ignores the patch size; ips is refused
    with pytest.raises(RunError, match=r"study bad: --patch-size 3 does not divide .*the 1 run\(s\) queued before it"
                                       r" were cancelled"):
        queue_runs(held, spec)
    assert run_states(spec, held.runs_dir) == {"bad-ce-1-ep-s0": "cancelled", "bad-ips-1-ep-s0": "not started"}


def test_launch_study_saves_the_spec_queues_and_refuses_an_id_in_use(held):
    picker = launch_study(held, *FORM.values())
    assert picker.value == "s" and ("s · digits · 9 runs", "s") in picker.choices
    assert load_spec(held.runs_dir, "s").settings == form_spec(**FORM).settings
    assert set(run_states(load_spec(held.runs_dir, "s"), held.runs_dir).values()) == {"queued"}
    with pytest.raises(ValueError, match="a study 's' exists already"):
        launch_study(held, *FORM.values())
    with pytest.raises(RunError, match="cifar10 was not found"):
        launch_study(held, *{**FORM, "study_id": "c", "dataset": "cifar10"}.values())
    assert not (held.runs_dir / STUDIES / "c.json").exists()  # nothing was queued: no study left behind
    assert cancel_study(held, "s") == "s"
    assert set(run_states(load_spec(held.runs_dir, "s"), held.runs_dir).values()) == {"cancelled"}
    assert resume_study(held, "s") == "s"
    assert set(run_states(load_spec(held.runs_dir, "s"), held.runs_dir).values()) == {"queued"}


def test_estimate_counts_the_runs_and_reports_problems(held):
    text = estimate_study(held, *FORM.values())
    assert text.startswith("**9 runs**: 3 settings (ce 1 ep, ips 1 ep, ce 2 ep) × 3 seeds; 2 comparisons")
    assert "assumed 1500 images/s" in text
    assert estimate_study(held, *{**FORM, "comparisons": []}.values()).startswith("⚠ choose at least one comparison")


def _expected_difference(setting, baseline, index, scale):
    """Mean, std and 95 % interval of the per-seed differences, computed from FINISHED by hand."""
    seeds = sorted(set(FINISHED[setting]) & set(FINISHED[baseline]))
    diffs = [scale * (FINISHED[setting][s][index] - FINISHED[baseline][s][index]) for s in seeds]
    mean = sum(diffs) / len(diffs)
    if len(diffs) == 1:
        return mean, None, None
    std = (sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)) ** 0.5
    half = t_critical(len(diffs)) * std / len(diffs) ** 0.5
    return mean, mean - half, mean + half


def test_refresh_shows_progress_tables_intervals_and_the_plot(held, finished_study):
    view = refresh(held, "s", "accuracy", None)
    runs_table, summary, comparisons, sentences, plot = (view.runs, view.summary, view.comparisons, view.sentences,
                                                         view.plot)
    assert view.progress.startswith("**7 of 9 runs finished** (2 not started)") and view.timer.active is False
    row = runs_table[(runs_table.setting == "ips 1 ep") & (runs_table.seed == 2)].iloc[0]
    assert (row.state, row["test acc (%)"], row["test NLL"], row["test ECE (%)"]) == ("finished", 95.0, 0.22, 1.5)
    assert runs_table[runs_table.setting == "ce 2 ep"].state.tolist() == ["finished", "not started", "not started"]
    ips = summary[summary.setting == "ips 1 ep"].iloc[0]
    assert ips["finished seeds"] == 3 and ips["test acc (%)"] == "93.33 ± 1.53"
    assert summary[summary.setting == "ce 2 ep"].iloc[0]["test acc (%)"] == "94.00"  # one seed: no std

    mean, low, high = _expected_difference("ips 1 ep", "ce 1 ep", 0, 100)
    accuracy = comparisons[(comparisons.comparison == "equal epochs") & (comparisons.metric == "acc (%)")].iloc[0]
    assert accuracy["Δ mean"] == f"{mean:+.2f}".replace("-", "−") and accuracy.seeds == 3
    assert accuracy["95 % CI"] == f"{low:+.2f} to {high:+.2f}".replace("-", "−")
    nll = comparisons[(comparisons.comparison == "equal epochs") & (comparisons.metric == "NLL")].iloc[0]
    assert nll["Δ mean"] == f"{_expected_difference('ips 1 ep', 'ce 1 ep', 1, 1)[0]:+.4f}".replace("-", "−")
    one_seed = comparisons[comparisons.comparison.str.startswith("equal compute")].iloc[0]
    assert one_seed["95 % CI"] == "needs 2 seeds" and one_seed.seeds == 1 and one_seed["Δ per seed"] == "s0: −1.00"
    assert "equal epochs" in sentences and "one seed gives no interval" in sentences
    assert "Only 3 seeds: the t critical value is 4.30" in sentences

    dots, means = plot.data[0], plot.data[1]
    assert list(dots.x) == pytest.approx([100 * (FINISHED["ips 1 ep"][s][0] - FINISHED["ce 1 ep"][s][0])
                                          for s in (0, 1, 2)])
    assert means.x[0] == pytest.approx(mean) and means.error_x.array[0] == pytest.approx(high - mean)
    assert plot.data[3].x[0] == pytest.approx(-1.0) and plot.data[3].error_x.array[0] == 0  # ce 2 ep, one seed
    again = refresh(held, "s", "accuracy", view.shown)
    assert all(part == gr.skip() for part in flatten(again)[:-1])  # nothing changed: nothing is resent but the timer
    ece_plot = refresh(held, "s", "ece", view.shown).plot
    assert ece_plot.data[1].x[0] == pytest.approx(_expected_difference("ips 1 ep", "ce 1 ep", 2, 100)[0])


def test_refresh_keeps_the_timer_ticking_while_a_run_is_queued(held, finished_study):
    queue_runs(held, finished_study)  # the two missing ce 2 ep runs
    view = refresh(held, "s", "accuracy", None)
    assert "**7 of 9 runs finished** (2 queued)" in view.progress and view.timer.active is True
    data = study_results(held, "s")
    assert data["active"] is True and [r["state"] for r in data["runs"]].count("queued") == 2


def test_study_results_and_export_match_the_run_folders(held, finished_study):
    data = study_results(held, "s")
    assert (data["total"], data["finished"], data["active"], data["pending"]) == (9, 7, False, 2)
    assert {r["run_id"]: r["state"] for r in data["runs"]} == run_states(finished_study, held.runs_dir)
    assert data["values"]["brier"]["ips 1 ep"] == [{"seed": s, "value": FINISHED["ips 1 ep"][s][3]} for s in (0, 1, 2)]
    mean, low, high = _expected_difference("ips 1 ep", "ce 1 ep", 0, 100)
    accuracy = data["comparisons"][0]["differences"]["accuracy"]
    assert (accuracy["mean"], accuracy["low"], accuracy["high"]) == pytest.approx((mean, low, high))
    def exports() -> set:
        return set(glob.glob(os.path.join(tempfile.gettempdir(), "ips-study-*")))

    before = exports()
    markdown, csv = export_study(held, "s")
    assert export_study(held, "s") == (markdown, csv)  # exporting again replaces the files
    assert exports() <= before | {os.path.dirname(markdown)}  # no folder left behind per export
    assert markdown.endswith("s.md") and csv.endswith("s.csv")
    text = open(markdown).read()
    assert text.startswith("# Study s\n") and "| ips 1 ep | 2 | 95.00 | 0.2200 | 1.50 | 0.1000 |" in text
    rows = open(csv).read().splitlines()
    assert rows[0] == "study,setting,seed,accuracy,nll,ece,brier" and len(rows) == 8
    assert rows[1].split(",")[:4] == ["s", '"ce 1 ep"', "0", repr(90.0)]


def test_unknown_studies_are_refused(held):
    for study_id, message in (("missing", "there is no study 'missing'"), ("../x", "is not a study id"),
                              (None, "choose a study")):
        with pytest.raises(ValueError, match=message):
            study_results(held, study_id)
    assert refresh(held, None, "accuracy", None).progress.startswith("No study chosen")


# ---- issue 24 item 9: calm empty states and buttons that apply ----
def test_a_new_page_opens_on_the_newest_study_or_on_empty_tables_with_their_headers(held):
    assert refresh_studies(held, None).value is None  # no study yet
    view = refresh(held, None, "accuracy", None)
    assert view.progress.startswith("No study chosen: launch one above")
    assert [list(table.columns) for table in (view.runs, view.summary, view.comparisons)] == [
        list(STUDY_RUNS_HEADERS), list(STUDY_SUMMARY_HEADERS), list(STUDY_COMPARISON_HEADERS)]  # not "1 2 3"
    assert [b.interactive for b in view.buttons] == [False, False, False]  # no Export to answer with an error
    for study_id in ("older", "newer"):
        save_spec(form_spec(**{**FORM, "study_id": study_id}), held.runs_dir)
    picker = refresh_studies(held, None)
    assert picker.value == "newer" and [value for _, value in picker.choices] == ["newer", "older"]
    assert refresh_studies(held, "older").value == "older"


def test_the_buttons_apply_only_to_what_the_study_can_do(held, finished_study):
    view = refresh(held, "s", "accuracy", None)  # 7 finished, 2 not started
    assert [b.interactive for b in view.buttons] == [True, False, True]  # resume, cancel, export
    queue_runs(held, finished_study)
    assert [b.interactive for b in refresh(held, "s", "accuracy", None).buttons] == [False, True, True]
    for run_id, state in run_states(finished_study, held.runs_dir).items():
        if state != "finished":
            held.cancel(run_id)
    wait_for(lambda: not held.has_active_runs(), 10, "the queue to empty")
    resumable = refresh(held, "s", "accuracy", None).buttons
    assert (resumable.resume.interactive, resumable.cancel.interactive) == (True, False)  # cancelled runs: resume


def test_a_finished_study_offers_neither_cancel_nor_train_unfinished_runs(held):
    spec = comparison_spec("done", "digits", "small_cnn", ["ce", "ips"], 1, ["equal-epochs"], [0])
    save_spec(spec, held.runs_dir)
    for setting, seed in spec.runs():
        fake_study_run(held.runs_dir, spec.run_id(setting, seed), 0.9)
    view = refresh(held, "done", "accuracy", None)
    assert view.progress.startswith("**2 of 2 runs finished**")
    assert [b.interactive for b in view.buttons] == [False, False, True]


def test_the_progress_line_names_the_shared_settings_in_words(held, finished_study):
    progress = refresh(held, "s", "accuracy", None).progress
    assert progress.endswith("seeds 0, 1, 2; every setting with batch_size 64, lr 0.05")
    assert "{" not in progress and "'" not in progress  # not a Python dict


# ---- issue 20: a kd arm needs a teacher, picked as in the Train tab ----
def test_a_study_with_kd_offers_the_finished_runs_as_teachers_and_trains_from_the_one_picked(held):
    teacher = save_digits_run(held.runs_dir, "teacher-run")  # a checkpoint of digits' classes and image size
    write_status(teacher, "finished", progress=1.0)
    (teacher / CONFIG).write_text(json.dumps({"method": "ce", "model": "small_cnn", "dataset": "digits"}))
    assert show_teacher(held, ["ce", "ips"]).visible is False
    picker = show_teacher(held, ["ce", "kd"])
    public = f"{held.runs_dir.name}/teacher-run"
    assert picker.visible is True and [value for _, value in picker.choices] == ["", public]
    kd = {**FORM, "study_id": "k", "methods": ["ce", "kd"], "comparisons": ["equal-epochs"], "seeds": 1}
    with pytest.raises(ValueError, match="a kd arm needs a teacher"):
        launch_study(held, *kd.values())
    assert "⚠ a kd arm needs a teacher" in estimate_study(held, *kd.values())
    assert estimate_study(held, *kd.values(), teacher=public).startswith("**2 runs**")
    launch_study(held, *kd.values(), teacher=public)
    spec = load_spec(held.runs_dir, "k")
    arm = spec.setting("kd 1 ep")
    launch = json.loads((held.runs_dir / spec.run_id(arm, 0) / LAUNCH).read_text())
    assert launch["config"]["method"] == "kd" and launch["config"]["teacher"] == str(held.runs_dir / "teacher-run")
    with pytest.raises(ValueError, match="not one of the checkpoints offered here"):
        launch_study(held, *{**kd, "study_id": "k2"}.values(), teacher="/etc")


# ---- issue 20: a study of several methods from the tab ----
def test_a_study_of_four_methods_from_the_tab_queues_every_arm_and_compares_each_with_ce_and_ips(held):
    four = {**FORM, "study_id": "four", "methods": ["ce", "ips", "ls", "pskd"], "comparisons": ["equal-epochs"],
            "seeds": 2}
    assert estimate_study(held, *four.values()).startswith("**8 runs**")
    launch_study(held, *four.values())
    spec = load_spec(held.runs_dir, "four")
    assert [s.label for s in spec.settings] == ["ce 1 ep", "ips 1 ep", "ls 1 ep", "pskd 1 ep"]
    assert {(c.setting, c.baseline) for c in spec.comparisons} == {
        ("ips 1 ep", "ce 1 ep"), ("ls 1 ep", "ce 1 ep"), ("pskd 1 ep", "ce 1 ep"),
        ("ls 1 ep", "ips 1 ep"), ("pskd 1 ep", "ips 1 ep")}
    queued = {json.loads((held.runs_dir / spec.run_id(s, seed) / LAUNCH).read_text())["config"]["method"]
              for s in spec.settings for seed in spec.seeds}
    assert queued == {"ce", "ips", "ls", "pskd"} and len(list(held.runs_dir.glob("four-*"))) == 8
