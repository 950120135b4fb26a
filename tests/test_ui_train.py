"""The Train tab's plain functions: curves read from run folders, the curves figure, the comparison method."""

import json
import shlex
import shutil
from types import SimpleNamespace

import gradio as gr
import pytest
import torch

from explorer.analysis.figures import CURVE_PANELS, training_curves_figure
from explorer.analysis.payloads import runs_payload
from explorer.analysis.schedules import (
    QUICK,
    TIMED_STEPS,
    duration_text,
    estimate_run_seconds,
    estimate_text,
    fair_schedule,
    measured_speed,
    schedule_choices,
)
from explorer.training.command import FORM_DEFAULTS
from explorer.training.config import TrainConfig, parse_config
from explorer.training.methods import METHODS, method_colour
from explorer.training.runfolder import METRICS, RUN_TABLE_HEADERS, RunInfo, run_curves, write_status
from explorer.training.runs import RunError, RunManager
from explorer.training.study import STARTUP_S
from explorer.ui.binding import handler
from explorer.ui.context import AppContext
from explorer.ui.train import (
    ask_delete,
    cancel_run,
    delete_run,
    describe,
    follow_selected,
    keep_run,
    launch_other_method,
    launch_pair,
    list_runs,
    reference_runs,
    refresh,
    resume_run,
    run_buttons,
    select_run,
)
from explorer.ui.train_form import (
    CUSTOM,
    apply_schedule,
    command_line,
    launch_run,
    schedule_of,
    show_method,
    show_schedules,
    teacher_choices,
)
from tests.helpers import DEMO, IPS_DEMO, fake_study_run, files_written, wait_for, wait_while_progressing

IPS = IPS_DEMO
SKIP = {"__type__": "update"}  # gr.skip(): the part is not sent again


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
    fig = training_curves_figure({"run 1": one, "run 2": one, "demo": one},
                                 {"run 1": "ips", "run 2": "ips", "demo": "ips"}, dashed=["demo"])
    assert len(fig.data) == 3 * len(CURVE_PANELS)
    by_name = {t.name: t for t in fig.data if t.showlegend}
    assert by_name["run 1"].line.color == method_colour("ips")
    colours = {by_name[name].line.color for name in ("run 1", "run 2", "demo")}
    assert len(colours) == 3  # no run shares the reference's colour, nor another run's
    assert by_name["run 2"].marker.symbol != by_name["run 1"].marker.symbol
    assert by_name["demo"].line.dash == "dash" and by_name["run 1"].line.dash == "solid"
    assert [a.text for a in fig.layout.annotations] == [title for _, title, _ in CURVE_PANELS]
    assert "dashed" in fig.layout.title.text


def test_a_short_run_fills_the_curves_and_the_title_mentions_only_what_is_drawn():
    short = {metric: ([1, 2, 3], [0.5, 0.4, 0.3]) for metric, _, _ in CURVE_PANELS}
    reference = {metric: (list(range(1, 31)), [0.1] * 30) for metric, _, _ in CURVE_PANELS}
    fig = training_curves_figure({"run": short, "demo": reference}, {"run": "ips", "demo": "ips"}, dashed=["demo"],
                          epochs=3)
    assert all(list(fig.layout[axis].range) == [0, 3] for axis in fig.layout if axis.startswith("xaxis"))
    alone = training_curves_figure({"run": short}, {"run": "ips"}, dashed=["demo"])  # the reference unticked
    assert "dashed" not in alone.layout.title.text and alone.layout.xaxis.range is None


def test_schedules_are_named_by_purpose_quote_the_studies_and_are_timed_from_this_machines_runs(tmp_path):
    shutil.copytree(IPS_DEMO, tmp_path / "earlier-ips")  # a finished run of IPS on mnist5k: its speed counts
    fair = fair_schedule("mnist5k")
    assert fair.epochs == 60 and "IPS − CE +0.42 points (95 % CI −0.06 to +0.89)" in fair.evidence
    assert fair.evidence.endswith("swap probability 0.5: IPS − CE +0.65 points (95 % CI +0.38 to +0.92)")
    assert ("15 epochs, holdout split, 3 seeds, swap probability 1: IPS − CE −1.37 points (95 % CI −1.69 to −1.06)"
            in QUICK.evidence)
    seconds, how = estimate_run_seconds(TrainConfig(method="ips", epochs=60), tmp_path)
    speed = [json.loads(line) for line in (IPS_DEMO / "metrics.jsonl").read_text().splitlines()][-1]["images_per_s"]
    assert seconds == pytest.approx(STARTUP_S + 60 * 32 * 128 * 2 / speed) and "measured speeds" in how  # 32 steps
    choices = schedule_choices({"method": "ips"}, tmp_path)
    assert [key for _, key in choices] == [QUICK.key, fair.key]
    assert choices[1][0] == f"fair comparison · 60 epochs · {duration_text(seconds)}: where IPS leads CE on average"
    assert choices[0][0].startswith("quick look · 5 epochs · ~")
    assert choices[0][0].endswith(": IPS usually loses to CE this early")
    radio = show_schedules(AppContext(tmp_path, DEMO, torch.device("cpu")), "mnist5k", "small_cnn", "ips", False, 60)
    assert radio.value == "fair" and "measured speeds" in radio.info and radio.choices[-1] == (CUSTOM, CUSTOM)
    assert QUICK.evidence in radio.info and fair.evidence in radio.info
    assert (apply_schedule("fair", "mnist5k"), apply_schedule("fair", "digits"), apply_schedule("quick", "digits"),
            apply_schedule(CUSTOM, "mnist5k")) == (60, 30, 5, SKIP)
    assert [schedule_of(e, d) for e, d in ((60, "mnist5k"), (30, "digits"), (30, "mnist5k"), (5.0, "mnist5k"),
                                           (None, "digits"))] == ["fair", "fair", CUSTOM, "quick", CUSTOM]
    assert (duration_text(12), duration_text(200), duration_text(9000)) == ("~10 s", "~3 min", "~2.5 h")


def test_the_fair_schedule_says_what_was_measured_on_each_dataset():
    digits = fair_schedule("digits")
    assert digits.epochs == 30 and digits.evidence == (
        "digits, 30 epochs, test split, 6 seeds, swap probability 1: IPS − CE −1.58 points (95 % CI −2.42 to −0.74); "
        "digits, 30 epochs, test split, 6 seeds, swap probability 0.5: IPS − CE +0.32 points (95 % CI −0.64 to +1.29)")
    assert (fair_schedule("cifar10").epochs, fair_schedule("cifar10").evidence) == (30, "not measured on cifar10")


def test_without_an_earlier_run_the_time_comes_from_steps_timed_here(tmp_path):
    cfg = TrainConfig(dataset="digits", method="ce", epochs=30)
    speed = measured_speed(cfg)
    assert speed > 0 and measured_speed(cfg) == speed  # timed once per setting
    duration, how = estimate_text({"dataset": "digits", "method": "ce", "epochs": 30}, tmp_path)
    seconds, _ = estimate_run_seconds(cfg, tmp_path, default_images_per_s=speed)
    assert duration == duration_text(seconds)
    assert how == f"timed here: {speed:.0f} training images/s of ce over {TIMED_STEPS} steps on cpu"
    assert estimate_text({"dataset": "digits"}, tmp_path, measure=False)[0] == "time: open the Train tab"
    assert estimate_text({"dataset": "cifar10"}, tmp_path)[0] == "time unknown"  # no CIFAR files here


def _form(**changes) -> list:
    """The form's values in ``launch_run``'s order: the defaults, with ``changes``."""
    values = {**FORM_DEFAULTS, "gpus": 1, **changes}
    return [values[name] for name in ("dataset", "model", "method", "epochs", "batch_size", "lr", "patch_size",
                                      "swap_ratio", "swap_prob", "temperature", "kd_weight", "seed", "equal_compute",
                                      "device", "gpus", "precision")]


def test_the_command_line_is_the_forms_settings_as_the_cli_takes_them():
    command = command_line(*_form(dataset="digits", method="ce", epochs=60.0, equal_compute=True, precision="bf16"))
    assert command == ("python -m explorer.train --dataset digits --method ce --epochs 60 --equal-compute "
                       "--precision bf16")
    assert parse_config(shlex.split(command)[3:]) == TrainConfig(dataset="digits", method="ce", epochs=60,
                                                                 equal_compute=True, precision="bf16")
    assert "--epochs" not in command_line(*_form(epochs=TrainConfig().epochs))  # the CLI's default needs no flag
    assert command_line(*_form()) == f"python -m explorer.train --epochs {FORM_DEFAULTS['epochs']}"
    assert command_line(*_form(swap_prob=1.5)) == ("# the CLI refuses these settings: --swap-prob must be in [0, 1]; "
                                                   "got 1.5")
    assert command_line(*_form(lr=None)) == "# --lr is empty; give it a value"
    assert command_line(*_form(gpus=2)).startswith("python -m torch.distributed.run --standalone --nproc_per_node=2 "
                                                   "-m explorer.train --epochs")


def test_a_run_for_slurm_shows_the_slurm_command_and_is_refused_by_an_app_without_slurm(tmp_path):
    command = command_line(*_form(dataset="digits"), executor="slurm")
    assert command == f"python -m explorer.train --dataset digits --epochs {FORM_DEFAULTS['epochs']} --executor slurm"
    assert command_line(*_form(gpus=2), executor="slurm").endswith(" --executor slurm --gpus-per-node 2")
    runs = RunManager(tmp_path)
    try:
        with pytest.raises(RunError, match="executor 'slurm' is not available here; this app trains with local "
                                           r"\(start it with --executor slurm to add slurm\)"):
            launch_run(runs, *_form(dataset="digits"), executor="slurm")
    finally:
        runs.close()
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_other_method_is_the_baseline_for_distillation_and_ips_for_the_baseline():
    assert [METHODS[m].compare_with for m in ("ce", "cskd", "ips")] == ["ips", "ce", "ce"]


def test_describe_says_why_a_run_failed_and_where_a_finished_one_went(tmp_path):
    info = RunInfo(run_id="r1", method="ips", dataset="digits", model="small_cnn", state="failed",
                   message="the loss became non-finite (nan) at epoch 1, step 10", progress=0.8, epoch=0, epochs=1,
                   device="cpu", processes=1, gpus=(), best_test_accuracy=None, images_per_s=None, eta_s=None,
                   started=0.0, path=tmp_path)
    assert "**failed**: the loss became non-finite (nan) at epoch 1, step 10" in describe(info)
    run_dir = fake_study_run(tmp_path, "r1", 0.851)  # its final epoch (the checkpoint's): 85.1 %
    finished = describe(RunInfo(**{**info.__dict__, "state": "finished", "message": "finished 2 epochs in 2.0 s",
                                   "best_test_accuracy": 0.873, "path": run_dir}))
    assert "Its checkpoint (the final epoch's, test accuracy **85.1 %**) is listed in the Model A and Model B " \
           "pickers" in finished  # the issue's case: the best epoch's 87.3 % was shown beside "its checkpoint"
    assert "Best test accuracy over its epochs 87.3 %." in finished
    running = describe(RunInfo(**{**info.__dict__, "state": "running", "progress": 0.5, "images_per_s": 1500.0,
                                  "eta_s": 12.0}))
    assert "50 %" in running and "1500 images/s" in running and "about 12 s left" in running


# ---- the tab's handlers on a run manager whose runs folder holds a finished run (a copy of the IPS demo) ----


@pytest.fixture()
def runs(tmp_path):
    shutil.copytree(IPS_DEMO, tmp_path / "runs" / "demo-ips")
    manager = RunManager(tmp_path / "runs", max_concurrent=1)
    yield manager
    manager.close()


def test_refresh_draws_the_runs_and_then_sends_only_what_changed(runs):
    references = reference_runs(DEMO)
    view = follow_selected(runs, references, "demo-ips", [], ["mnist5k-small_cnn-ce"], None)
    table = view.table
    assert table.values.tolist() == list_runs(runs)["data"] and table.iloc[0]["status"] == "finished"
    assert view.plotted.value == ["demo-ips"] and "**finished**" in view.details and not view.log.visible
    assert not view.timer.active and {trace.name for trace in view.curves.data} == {"demo-ips", "mnist5k-small_cnn-ce"}
    assert [b.interactive for b in view.buttons] == [False, True, True, False]  # finished: delete, other method
    shown = view.shown
    again = refresh(runs, references, "demo-ips", ["demo-ips"], ["mnist5k-small_cnn-ce"], shown)
    assert again.table == again.plotted == again.curves == SKIP and again.shown == shown  # unchanged: not resent
    with open(runs.run_dir("demo-ips") / METRICS, "a") as metrics:
        metrics.write(json.dumps({"kind": "epoch", "epoch": 9, "test_accuracy": 0.5}) + "\n")
    redrawn = refresh(runs, references, "demo-ips", ["demo-ips"], ["mnist5k-small_cnn-ce"], shown).curves
    test_accuracy = next(t for t in redrawn.data if t.name == "demo-ips" and t.yaxis == "y5")
    assert redrawn != SKIP and list(test_accuracy.x)[-1] == 9 and list(test_accuracy.y)[-1] == 0.5


def test_reference_curves_are_drawn_beside_runs_of_their_own_dataset_only(runs):
    """The issue's case: a digits run's curves were drawn against the mnist5k reference curves."""
    references = reference_runs(DEMO)
    fake_study_run(runs.runs_dir, "digits-run", 0.9, config={"dataset": "digits", "method": "ce", "epochs": 2})
    digits = follow_selected(runs, references, "digits-run", [], list(references), None)
    assert {trace.name for trace in digits.curves.data} == {"digits-run"}
    mnist = follow_selected(runs, references, "demo-ips", [], ["mnist5k-small_cnn-ce"], None)
    assert {trace.name for trace in mnist.curves.data} == {"demo-ips", "mnist5k-small_cnn-ce"}
    nothing_plotted = refresh(runs, references, None, [], ["mnist5k-small_cnn-ce"], None)
    assert {trace.name for trace in nothing_plotted.curves.data} == {"mnist5k-small_cnn-ce"}


def test_a_run_stopped_before_its_first_epoch_does_not_promise_a_checkpoint(runs):
    """The run manager's own word for a cancelled run whose process could not write its state."""
    for run_id, with_checkpoint in (("early", False), ("later", True)):
        run_dir = runs.runs_dir / run_id
        run_dir.mkdir()
        write_status(run_dir, "running", progress=0.0)
        if with_checkpoint:
            shutil.copy(IPS_DEMO / "model.safetensors", run_dir / "model.safetensors")
        runs._active[run_id] = SimpleNamespace(returncode=-9)
        runs._cancel_deadlines[run_id] = 0.0
        runs._ended(run_id, runs._active[run_id])
    assert runs.info("early").message.endswith("(it had finished no epoch, so there is no checkpoint)")
    assert runs.info("later").message.endswith("(the checkpoint of its last finished epoch is kept)")


def test_a_refused_launch_leaves_the_selected_run_as_it_was(tmp_path):
    """The issue's case: an Error badge in "Selected run" after a launch of −1 epochs; a person's refused launch is
    a warning, and the field keeps its value."""
    runs = RunManager(tmp_path / "runs")
    try:
        page = SimpleNamespace(target=object())  # an event from the page names its component
        with pytest.warns(UserWarning, match="--epochs must be between 1 and 100000; got -1"):
            answer = handler(launch_run, runs)(*_form(dataset="digits", epochs=-1), trigger_=page)
        assert answer == SKIP and runs.runs() == []
    finally:
        runs.close()


def test_list_runs_is_the_runs_payload(runs):
    listed = list_runs(runs)
    assert listed == runs_payload(runs.runs()) and [row[0] for row in listed["data"]] == ["demo-ips"]


def test_select_cancel_and_delete_a_run(runs):
    assert select_run(gr.SelectData(None, {"index": [0, 2], "value": "x", "row_value": ["demo-ips", "ips"]})) \
        == "demo-ips"
    for action in (cancel_run, ask_delete, launch_other_method):
        with pytest.raises(ValueError, match="select a run in the table first"):
            action(runs, "")
    with pytest.raises(ValueError, match="run demo-ips is finished; there is nothing to cancel"):
        cancel_run(runs, "demo-ips")
    asked = ask_delete(runs, "demo-ips")
    assert asked.pending == "demo-ips" and "Delete run **demo-ips** (ips, finished)" in asked.question
    assert asked.row.visible
    with pytest.raises(ValueError, match="press Delete run… first"):
        delete_run(runs, None, "demo-ips", ["demo-ips"])
    assert keep_run().pending is None and not keep_run().row.visible
    deleted = delete_run(runs, "demo-ips", "demo-ips", ["demo-ips", "other"])
    assert (deleted.confirmation.pending, deleted.confirmation.row.visible, deleted.selected, deleted.plotted) == (
        None, False, "", ["other"])
    assert runs.runs() == [] and not (runs.runs_dir / "demo-ips").exists()


def test_the_buttons_apply_only_to_runs_they_can_act_on(runs):
    assert [b.interactive for b in run_buttons(None)] == [False, False, False, False]
    finished = runs.info("demo-ips")
    assert [b.interactive for b in run_buttons(finished)] == [False, True, True, False]  # no cancel: no error toast
    running = RunInfo(**{**finished.__dict__, "state": "running"})
    assert [b.interactive for b in run_buttons(running)] == [True, False, True, False]
    cancelled = RunInfo(**{**finished.__dict__, "state": "cancelled"})
    assert not run_buttons(cancelled).resume.interactive  # the demo folder has no training state to resume from


def test_the_other_method_after_a_quick_look_warns_that_it_is_no_comparison(runs):
    config = runs.run_dir("demo-ips") / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "epochs": QUICK.epochs}))  # a 5-epoch run
    with pytest.warns(UserWarning, match=r"for 5 epochs, as demo-ips\. A comparison this short says little: IPS "
                                         r"needs a long enough schedule \(fair comparison on mnist5k: 60 epochs\)"):
        new_id = launch_other_method(runs, "demo-ips")
    runs.cancel(new_id)
    wait_for(lambda: not runs.has_active_runs(), 60, "the launched run to stop")
    assert runs.settings(new_id)["method"] == "ce" and runs.settings(new_id)["epochs"] == QUICK.epochs


def test_the_other_method_of_a_run_without_a_method_says_so(runs):
    config = runs.run_dir("demo-ips") / "config.json"
    config.write_text(json.dumps({k: v for k, v in json.loads(config.read_text()).items() if k != "method"}))
    with pytest.raises(ValueError, match="run demo-ips does not record a known method \\(its settings name 'none'\\)"):
        launch_other_method(runs, "demo-ips")
    assert not runs.has_active_runs() and [r.run_id for r in runs.runs()] == ["demo-ips"]


def test_reference_runs_do_not_follow_links(tmp_path):
    shutil.copytree(IPS_DEMO, tmp_path / "real")
    (tmp_path / "linked").symlink_to(tmp_path / "real", target_is_directory=True)
    assert reference_runs(tmp_path) == {"real": tmp_path / "real"}


def test_the_headers_button_trains_the_baseline_and_ips_a_dataset_lacks(runs):
    ctx = AppContext(runs.runs_dir, DEMO, torch.device("cpu"))
    with pytest.raises(ValueError, match="mnist5k has a baseline and an IPS checkpoint already"):
        launch_pair(ctx, runs, "train", "mnist5k")
    pair = launch_pair(ctx, runs, "train", "digits")
    launched = [info.run_id for info in runs.runs() if info.dataset == "digits"]
    for run_id in launched:
        runs.cancel(run_id)
    wait_for(lambda: not runs.has_active_runs(), 60, "the launched runs to stop")
    settings = sorted((runs.settings(r)["method"], runs.settings(r)["epochs"], runs.settings(r)["seed"])
                      for r in launched)
    assert settings == [("ce", 30, 0), ("ips", 30, 0)] and pair.selected in launched  # digits' fair comparison
    assert pair.tabs.selected == "train"


def test_a_run_launched_in_a_precision_is_cancelled_and_resumed_from_the_tab(runs, capsys, stall_s, monkeypatch):
    run_id = launch_run(runs, *_form(dataset="digits", method="ce", epochs=40, precision="fp32"))
    assert runs.settings(run_id)["precision"] == "fp32"
    assert not run_buttons(runs.info(run_id)).resume.interactive  # running: nothing to resume
    run_dir = runs.run_dir(run_id)
    wait_while_progressing(lambda: (run_dir / "train_state.safetensors").is_file(), lambda: files_written(run_dir),
                           stall_s, "the first epoch's state")
    cancel_run(runs, run_id)  # the run stops at its next step, or is killed grace_s later
    wait_for(lambda: runs.info(run_id).state == "cancelled" and not runs.has_active_runs(), runs.grace_s + stall_s,
             "the run to stop")
    info = runs.info(run_id)
    assert run_buttons(info).resume.interactive and info.epoch >= 1
    monkeypatch.setattr(RunManager, "_advance", lambda self: None)  # it stays queued: its status is the manager's
    details = resume_run(runs, run_id)
    assert f"run {run_id} resumes after epoch {info.epoch}" in capsys.readouterr().out  # gr.Info outside the app
    queued = runs.info(run_id)  # the case: 12 % → 10 % → 11 %; it resumes at its last finished epoch
    assert queued.progress == pytest.approx(info.epoch / 40) and queued.progress <= info.progress
    assert f"**queued**: waiting for a free slot to resume after epoch {info.epoch}" in details
    monkeypatch.undo()
    with pytest.raises(ValueError, match="only a cancelled, failed or interrupted run can be resumed"):
        resume_run(runs, run_id)
    runs.cancel(run_id)
    wait_for(lambda: not runs.has_active_runs(), runs.grace_s + stall_s, "the resumed run to stop")
    with pytest.raises(ValueError, match="select a run in the table first"):
        resume_run(runs, "")


def _finished_run(runs_dir, run_id, state="finished", method="ce"):
    shutil.copytree(IPS_DEMO, runs_dir / run_id)
    (runs_dir / run_id / "status.json").write_text(json.dumps({"state": state}))
    (runs_dir / run_id / "config.json").write_text(json.dumps({"method": method, "model": "small_cnn",
                                                                "dataset": "mnist5k"}))


def test_the_teacher_picker_lists_finished_runs_and_shows_for_kd_only(tmp_path):
    _finished_run(tmp_path, "a-done")
    _finished_run(tmp_path, "b-cancelled", state="cancelled")
    _finished_run(tmp_path, "c-done", method="ips")
    assert teacher_choices(tmp_path) == [("c-done (ips, small_cnn on mnist5k)", f"{tmp_path.name}/c-done"),
                                         ("a-done (ce, small_cnn on mnist5k)", f"{tmp_path.name}/a-done")]
    ctx = AppContext(tmp_path, DEMO, torch.device("cpu"))
    kd = show_method(ctx, "kd")
    assert kd.teacher.visible is True and kd.method.info == METHODS["kd"].help
    assert [value for _, value in kd.teacher.choices] == ["", f"{tmp_path.name}/c-done", f"{tmp_path.name}/a-done"]
    assert show_method(ctx, "ls").teacher.visible is False


def test_the_command_line_of_kd_names_its_teacher_and_other_methods_drop_it():
    assert command_line(*_form(method="kd"), teacher="runs/t1") == ("python -m explorer.train --method kd --epochs "
                                                                    f"{FORM_DEFAULTS['epochs']} --teacher runs/t1")
    assert "--teacher" not in command_line(*_form(method="ce"), teacher="runs/t1")
    assert command_line(*_form(method="kd")) == ("# the CLI refuses these settings: --method kd needs --teacher "
                                                 "RUN_DIR, the folder of a finished run to distil from")


def test_launching_kd_refuses_a_teacher_the_runs_folder_does_not_hold(tmp_path):
    runs = RunManager(tmp_path / "runs")
    try:
        with pytest.raises(ValueError, match="is not one of the checkpoints offered here"):
            launch_run(runs, *_form(method="kd"), teacher=str(IPS_DEMO))
    finally:
        runs.close()


def test_the_form_lays_out_one_schedule_radio(tmp_path):
    """``show_schedules`` called while the form is laid out must not add a stray (disabled) copy of the Radio."""
    from explorer.ui.train_form import build_form

    with gr.Blocks() as demo:
        build_form(AppContext(tmp_path, DEMO, torch.device("cpu")))
    radios = [block for block in demo.blocks.values() if isinstance(block, gr.Radio)]
    labels = [radio.label for radio in radios]
    assert labels.count("Schedule") == 1 and None not in labels, labels  # the stray copy had no label


def test_while_the_pair_trains_its_runs_appear_in_the_pickers_and_the_button_waits(tmp_path, monkeypatch):
    """The header's one-click pair: a finished run is offered in the pickers by itself, and a running pair
    disables the button, so a second click cannot start duplicates."""

    from explorer.ui.train import watch_pair
    from tests.helpers import save_digits_run

    ctx = AppContext(tmp_path, DEMO, torch.device("cpu"))
    monkeypatch.setattr("explorer.ui.train.train_label", lambda ctx, dataset, checkpoints: "Train IPS on digits")
    save_digits_run(tmp_path)  # the baseline has finished; IPS still trains
    training = watch_pair(ctx, SimpleNamespace(has_active_runs=lambda: True), "digits", None, None)
    (name,) = [path for _, path in training.model_a.choices]
    assert name.endswith("/digits-run") and training.model_a.value == name and training.model_b.value is None
    button = training.train_pair
    assert button.interactive is False and button.visible and training.timer.active is True
    assert button.value == "Training IPS on digits…" and "no IPS checkpoint" in training.notice
    done = watch_pair(ctx, SimpleNamespace(has_active_runs=lambda: False), "digits", name, None)
    assert done.train_pair.interactive is True and done.train_pair.value == "Train IPS on digits"
    assert done.timer.active is False


def test_the_runs_table_columns_fit_their_headers_and_a_whole_start_time(runs):
    """The issue's case: the header "method" wrapped as "meth od" and the start time was cut."""
    from explorer.ui.train import RUN_TABLE_WIDTHS

    char_px, padding_px = 8, 16  # the table's font, and a cell's padding and sort icon
    started = runs.runs()[0].row()[-1]  # "YYYY-MM-DD HH:MM:SS"
    assert list(RUN_TABLE_WIDTHS) == list(RUN_TABLE_HEADERS)
    for header, width in RUN_TABLE_WIDTHS.items():
        assert width >= char_px * len(header) + padding_px, header
    assert RUN_TABLE_WIDTHS["started"] >= char_px * len(started) + padding_px
    assert RUN_TABLE_WIDTHS["progress"] >= char_px * len("100 % (epoch 100/100)") + padding_px
