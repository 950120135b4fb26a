"""The run manager with real training processes on ``digits``: queue, cancel, kill -9, reconcile, refusals."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from explorer.checkpoints import load_checkpoint
from explorer.training import processes, run_processes, runs
from explorer.training.run_processes import TRAINING_NICENESS
from explorer.training.runfolder import FINAL_STATES, RUN_TABLE_HEADERS
from explorer.training.runs import RunError, RunManager
from tests.helpers import (
    ENDLESS,
    QUICK,
    files_written,
    group_gone,
    leader_pid,
    slow_start_trainer,
    training,
    wait_for,
    wait_while_progressing,
)


@pytest.fixture
def make_manager(tmp_path):
    """RunManagers on one runs folder; every process group they started is killed at the end of the test."""
    made: list[RunManager] = []

    def make(**kwargs) -> RunManager:
        made.append(RunManager(tmp_path / "runs", **kwargs))
        return made[-1]

    yield make
    for manager in made:
        manager.close()
        for process in list(manager._active.values()):
            process.signal_group(signal.SIGKILL)


def test_two_launches_with_a_limit_of_one_run_one_after_the_other(make_manager, stall_s):
    manager = make_manager(max_concurrent=1)
    first = manager.launch({**QUICK, "method": "ce", "epochs": 1.0, "log_every": 1})  # a number box sends floats
    second = manager.launch({**QUICK, "method": "ips", "log_every": 1})
    with pytest.raises(RunError, match="is queued; only finished, failed or cancelled runs can be deleted"):
        manager.delete(second)
    states: dict[str, list[str]] = {first: [], second: []}
    pairs = set()

    def both_final() -> bool:
        now = {run_id: manager.info(run_id).state for run_id in states}
        for run_id, state in now.items():
            if not states[run_id] or states[run_id][-1] != state:
                states[run_id].append(state)
        pairs.add((now[first], now[second]))
        return all(state in FINAL_STATES for state in now.values()) and not manager.has_active_runs()

    wait_while_progressing(both_final, lambda: files_written(*(manager.runs_dir / r for r in states)), stall_s,
                           "both runs to finish")
    assert states[first] == ["running", "finished"]  # a free slot: it started inside launch()
    assert states[second] == ["queued", "running", "finished"]
    assert ("running", "queued") in pairs and ("running", "running") not in pairs
    first_end = json.loads((manager.run_dir(first) / "status.json").read_text())["updated"]
    second_launch = json.loads((manager.run_dir(second) / "launch.json").read_text())
    assert second_launch["process"]["started_at"] > first_end  # started only once the first had ended
    assert second_launch["command"][1:3] == ["-m", "explorer.train"]
    second_status = json.loads((manager.run_dir(second) / "status.json").read_text())
    # the training process names itself by pid and start time, so a reused pid is told from it
    assert (second_status["pid"], second_status["pid_start"]) == (second_launch["process"]["pid"],
                                                                   second_launch["process"]["start"])

    checkpoint = load_checkpoint(manager.run_dir(second))
    info = manager.info(second)
    assert checkpoint.card["method"] == "ips" and checkpoint.card["dataset"] == "digits"
    assert info.best_test_accuracy == pytest.approx(checkpoint.card["test_metrics"]["accuracy"])
    assert info.best_test_accuracy > 0.3  # one epoch on digits is well above chance (0.1)
    on_gpu = torch.cuda.is_available()  # "auto" picks CUDA where there is one, on the GPU the manager gave it
    assert (info.method, info.dataset, info.model, info.progress) == ("ips", "digits", "small_cnn", 1.0)
    assert (info.device, info.gpus) == (("cuda", (0,)) if on_gpu else ("cpu", ()))
    assert [r.run_id for r in manager.runs()] == [second, first]  # newest first
    row = manager.runs()[0].row()
    assert len(row) == len(RUN_TABLE_HEADERS) and row[4] == "finished" and row[5] == "100 % (epoch 1/1)"
    assert [r["epoch"] for r in manager.metrics(second) if r["kind"] == "epoch"] == [1]
    assert "epoch   1/1" in manager.log_tail(second)
    assert manager.settings(first)["method"] == "ce" and manager.settings(first)["epochs"] == 1
    manager.delete(first)
    assert not (manager.runs_dir / first).exists() and [r.run_id for r in manager.runs()] == [second]


def test_cancel_stops_a_run_gracefully_and_leaves_no_process(make_manager):
    manager = make_manager(max_concurrent=1, grace_s=10.0)
    running = manager.launch(ENDLESS)
    waiting = manager.launch(QUICK)
    manager.cancel(waiting)  # queued: cancelled at once, never started
    assert manager.info(waiting).state == "cancelled" and manager.info(waiting).message == "cancelled before it started"
    assert "process" not in json.loads((manager.run_dir(waiting) / "launch.json").read_text())

    wait_for(lambda: training(manager, running), 60, "the run to train")
    with pytest.raises(RunError, match="is running; only finished"):
        manager.delete(running)
    pgid = leader_pid(manager, running)
    start = time.monotonic()
    manager.cancel(running)
    wait_for(lambda: manager.info(running).state == "cancelled" and group_gone(pgid), manager.grace_s,
             "the run to end cancelled with its process group gone")
    assert time.monotonic() - start < manager.grace_s
    assert manager.info(running).message.startswith("cancelled by signal 15")  # written by the run itself
    wait_for(lambda: not manager.has_active_runs(), 5, "the manager to let go of the run")
    with pytest.raises(RunError, match="is cancelled; there is nothing to cancel"):
        manager.cancel(running)
    manager.delete(running)
    assert not (manager.runs_dir / running).exists()


def test_cancel_during_start_up_ends_the_run_cancelled_by_its_own_process(make_manager, tmp_path, monkeypatch):
    """The process is still opening its dataset when the user cancels: it writes its own cancelled state at once."""
    monkeypatch.setattr(sys, "executable", str(slow_start_trainer(tmp_path)))
    manager = make_manager(grace_s=30.0)
    run_id = manager.launch(QUICK)
    wait_for(lambda: (tmp_path / "in_setup").exists(), 90, "the run to open its dataset")
    pgid = leader_pid(manager, run_id)
    assert manager.info(run_id).state == "running"
    manager.cancel(run_id)
    wait_for(lambda: not manager.has_active_runs() and group_gone(pgid), 20, "the run's process to end")
    info = manager.info(run_id)
    assert (info.state, info.message) == ("cancelled", "cancelled by signal 15 during start-up, before the first step")
    assert manager.log_tail(run_id) == f"explorer.train: {info.message}"  # one line, no traceback


def test_a_run_whose_status_is_final_is_not_deleted_while_its_process_is_active(make_manager, tmp_path, monkeypatch):
    """A start-up failure writes "failed" before its process has exited: the folder must outlive the process."""
    monkeypatch.setattr(sys, "executable", str(slow_start_trainer(tmp_path)))
    manager = make_manager(grace_s=30.0)
    run_id = manager.launch(QUICK)
    wait_for(lambda: (tmp_path / "in_setup").exists(), 90, "the run to open its dataset")
    run_dir = manager.run_dir(run_id)
    (run_dir / "status.json").write_text(json.dumps({"state": "failed", "message": "the dataset is unreadable"}))
    with pytest.raises(RunError, match=f"run {run_id} is failed, but its process has not ended yet"):
        manager.delete(run_id)
    assert run_dir.is_dir() and manager.has_active_runs()
    os.killpg(leader_pid(manager, run_id), signal.SIGKILL)
    wait_for(lambda: not manager.has_active_runs(), 10, "the watcher to let go of the ended run")
    manager.delete(run_id)
    assert not run_dir.exists()


def test_kill_9_fails_the_run_and_reconciliation_marks_an_orphaned_run_interrupted(make_manager):
    watching = make_manager()
    killed = watching.launch(ENDLESS)
    wait_for(lambda: training(watching, killed), 60, "the run to train")
    os.killpg(leader_pid(watching, killed), signal.SIGKILL)  # e.g. the out-of-memory killer
    wait_for(lambda: watching.info(killed).state == "failed", 5, "the watcher to notice")
    assert "killed by signal 9" in watching.info(killed).message

    orphan = watching.launch(ENDLESS)
    wait_for(lambda: training(watching, orphan), 60, "the run to train")
    watching.close()  # the app stops; the training goes on
    adopting = make_manager()  # the app restarts while the run is alive: it is adopted, not failed
    assert adopting.info(orphan).state == "running" and adopting.has_active_runs()
    adopting.close()
    pid = leader_pid(adopting, orphan)
    os.killpg(pid, signal.SIGKILL)  # now the run dies while no app watches it
    os.waitpid(pid, 0)  # this test process is its parent: reap it, as the OS would after an app crash
    make_manager()
    info = adopting.info(orphan)
    assert info.state == "failed" and info.message.startswith("interrupted")
    assert info.progress > 0  # its progress is kept


def _fake_run(runs_dir: Path, run_id: str, state: str, launch: dict) -> Path:
    run_dir = runs_dir / run_id
    run_dir.mkdir(parents=True)
    (run_dir / "status.json").write_text(json.dumps({"state": state, "progress": 0.5}))
    (run_dir / "launch.json").write_text(json.dumps({"processes": 1, **launch}))
    return run_dir


def test_reconcile_tells_a_live_process_from_a_reused_pid(make_manager, tmp_path):
    runs_dir = tmp_path / "runs"
    me = processes.process_identity(os.getpid())
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:
        alive = wait_for(lambda: processes.process_identity(sleeper.pid), 5, "the sleeper's identity")
        _fake_run(runs_dir, "alive", "running", {"process": {"pid": sleeper.pid, "start": alive[0]}})
        # the pid of a live process that is not the run's (same pid, another start time): the run is dead
        _fake_run(runs_dir, "reused", "running", {"process": {"pid": os.getpid(), "start": "not-" + me[0]}})
        _fake_run(runs_dir, "queued-here", "queued", {"manager": {"pid": os.getpid(), "start": me[0]}})
        _fake_run(runs_dir, "queued-gone", "queued", {"manager": {"pid": os.getpid(), "start": "not-" + me[0]}})
        _fake_run(runs_dir, "garbled", "running", {"process": {"pid": "1; rm -rf /", "start": None}})
        manager = make_manager()
        states = {r.run_id: (r.state, r.message.split(":")[0]) for r in manager.runs()}
        assert states == {"alive": ("running", ""), "reused": ("failed", "interrupted"),
                          "queued-here": ("queued", ""), "queued-gone": ("failed", "interrupted"),
                          "garbled": ("failed", "interrupted")}
        assert manager.has_active_runs()  # the live one was adopted and is watched
        sleeper.kill()
        sleeper.wait()
        wait_for(lambda: manager.info("alive").state == "failed", 5, "the watcher to see the adopted run end")
        assert manager.info("alive").message.startswith("interrupted") and not manager.has_active_runs()
    finally:
        sleeper.kill()
        sleeper.wait()


def _sleeper(*argv: str) -> tuple[subprocess.Popen, tuple[str, str]]:
    """A sleeping Python process with ``argv`` on its command line, and its identity once it has exec'd."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", *argv], start_new_session=True)
    # until the child has exec'd, /proc shows the forked parent's command line: wait for it
    identity = wait_for(lambda: (i := processes.process_identity(child.pid)) and "time.sleep(120)" in i[1] and i,
                        10, "the child's command line")
    return child, identity


def test_reconcile_fails_a_cli_run_whose_pid_now_belongs_to_another_process(make_manager, tmp_path):
    runs_dir = tmp_path / "runs"
    child, identity = _sleeper("explorer.train")  # a live training CLI, as far as its command line tells
    try:
        for run_id, start in (("cli-alive", identity[0]), ("cli-reused", "not-" + identity[0])):
            _fake_run(runs_dir, run_id, "running", {})
            (runs_dir / run_id / "status.json").write_text(
                json.dumps({"state": "running", "pid": child.pid, "pid_start": start}))
        manager = make_manager()
        assert manager.info("cli-alive").state == "running"
        reused = manager.info("cli-reused")
        assert reused.state == "failed" and f"its pid {child.pid} now belongs to another process" in reused.message
    finally:
        child.kill()
        child.wait()


def test_a_status_without_pid_start_whose_pid_is_another_live_program_has_no_live_process(make_manager, tmp_path):
    """A folder written before ``pid_start`` was recorded: its pid now names a live process that is not a training
    run (its command line says so), which neither keeps the run "running" nor blocks its deletion."""
    runs_dir = tmp_path / "runs"
    child, _ = _sleeper()  # a live Python process, not a training run
    trainer, _ = _sleeper("explorer.train")  # a live training CLI, as far as its command line tells
    try:
        assert not processes.training_process_alive({"pid": child.pid})
        assert processes.training_process_alive({"pid": trainer.pid})
        for run_id, state, pid in (("old-running", "running", child.pid), ("old-finished", "finished", child.pid),
                                   ("old-live", "running", trainer.pid)):
            _fake_run(runs_dir, run_id, state, {})
            (runs_dir / run_id / "status.json").write_text(json.dumps({"state": state, "pid": pid}))
        manager = make_manager()
        old = manager.info("old-running")
        assert old.state == "failed" and f"its pid {child.pid} now belongs to another process" in old.message
        assert manager.info("old-live").state == "running"  # the fallback: a training command line is a live run
        manager.delete("old-finished")
        assert not (runs_dir / "old-finished").exists()
    finally:
        for process in (child, trainer):
            process.kill()
            process.wait()


def test_delete_refuses_a_final_run_whose_process_has_not_exited(make_manager, tmp_path):
    runs_dir = tmp_path / "runs"
    child, identity = _sleeper("explorer.train")
    try:
        run_dir = _fake_run(runs_dir, "closing", "finished", {})
        (run_dir / "status.json").write_text(json.dumps({"state": "finished", "pid": child.pid,
                                                         "pid_start": identity[0]}))
        manager = make_manager()
        with pytest.raises(RunError, match=f"its process \\(pid {child.pid}\\) has not exited yet"):
            manager.delete("closing")
        assert run_dir.is_dir()
    finally:
        child.kill()
        child.wait()
    manager.delete("closing")
    assert not run_dir.exists()


def test_a_group_signal_reaches_members_that_are_not_the_leaders_descendants():
    """A worker whose parent ended is re-parented (to init), out of the leader's tree, yet still in its group."""
    leader = subprocess.Popen(["sh", "-c", "(sleep 120 &); exec sleep 120"], start_new_session=True)
    try:
        def orphans() -> list[int]:
            in_group = [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit() and
                        _pgid(int(e.name)) == leader.pid and int(e.name) != leader.pid]
            return [pid for pid in in_group if pid not in processes.descendants(leader.pid)]

        orphan = wait_for(lambda: orphans(), 10, "the orphaned member of the group")[0]
        group = processes.ProcessGroup(leader.pid, processes.process_identity(leader.pid)[0], 1, [], leader)
        group.signal_group(signal.SIGTERM)
        wait_for(lambda: processes.process_identity(orphan) is None, 10, "the orphan to end")
        leader.wait(10)
    finally:
        leader.kill()
        leader.wait()


def _pgid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None



def test_a_symlinked_run_folder_is_not_listed_reconciled_nor_deleted(make_manager, tmp_path):
    target = _fake_run(tmp_path / "elsewhere", "linked", "running", {})  # left running, no process: orphaned
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "linked").symlink_to(target, target_is_directory=True)
    _fake_run(tmp_path / "runs", "own", "cancelled", {})
    manager = make_manager()
    assert [r.run_id for r in manager.runs()] == ["own"] and manager.reconcile() == []
    assert json.loads((target / "status.json").read_text())["state"] == "running"  # not written through the link
    for action in (manager.delete, manager.info, manager.resume):
        with pytest.raises(RunError, match="run linked is a symbolic link in .*; the app does not follow links"):
            action("linked")
    assert (target / "status.json").is_file() and (tmp_path / "runs" / "linked").is_symlink()

@pytest.mark.skipif(shutil.which("ps") is None or not Path("/proc/stat").exists(), reason="needs ps and /proc")
def test_process_identity_without_proc_asks_ps(monkeypatch):
    """The fallback for systems without /proc (macOS) names the same process, with one start time on every call
    (the pid-reuse checks compare it with itself), and a process that ended is gone for both.

    Not compared with /proc's start: /proc counts clock ticks after a boot time that the kernel recomputes from
    the wall clock, so the two drift apart by a second now and then (a race that failed this test once)."""
    child, on_linux = _sleeper()
    try:
        monkeypatch.setattr(processes, "_LINUX_PROC", False)
        start, command = processes.process_identity(child.pid)
        assert command == on_linux[1]
        assert processes.process_identity(child.pid) == (start, command)
        assert abs(time.mktime(time.strptime(start, "%a %b %d %H:%M:%S %Y")) - time.time()) < 120  # a real date
        assert child.pid in processes.descendants(os.getpid())
    finally:
        child.kill()
        child.wait()
    assert processes.process_identity(child.pid) is None


@pytest.mark.parametrize("settings,message", [
    ({"swap_ratio": 2}, r"^--swap-ratio must be in \[0, 1\]; got 2.0$"),
    ({"epochs": 0}, "^--epochs must be between 1 and 100000; got 0$"),
    ({"epochs": 1e308}, r"^--epochs must be between 1 and 100000; got 1e\+308$"),
    ({"seed": 2**70}, "^--seed must be a whole number between 0 and 2\\^63 - 1; got 1180591620717411303424$"),
    ({"temperature": 1e-300}, "^--temperature must be between 0.1 and 100; got 1e-300$"),
    ({"dataset": "digits", "batch_size": 2000}, "2000 anchors per step, more than the 1438 training images of digits"),
    ({"dataset": "digits", "batch_size": 2, "epochs": 10**5}, "a run may take at most 2000000"),
    ({"dataset": "digits", "batch_size": 1200, "holdout": True},  # the split left after the holdout
     "1200 anchors per step, more than the 1151 training images of digits.holdout."),
    ({"dataset": "digits", "model": "vit_b_16"}, "^model vit_b_16 cannot train on the 8x8 images of digits .*; pick a "
                                                 "model for small images"),
    ({"epochs": 2.5}, "invalid int value: '2.5'"),
    ({"epochs": None}, "^--epochs is empty; give it a value$"),
    ({"lr": float("nan")}, "--lr must be a positive number"),
    ({"method": "nosuch"}, "invalid choice: 'nosuch'"),
    ({"equal_compute": "yes"}, "--equal-compute must be true or false"),
    ({"dataset": "mnist"}, "unknown dataset 'mnist'"),
    ({"dataset": "--help"}, "unknown dataset '--help'"),  # a value is never read as a flag
    ({"dataset": "digits", "patch_size": 3}, r"--patch-size 3 does not divide the 8x8 images of digits"),
    ({"dataset": "digits", "model": "no_such_net"}, "unknown model 'no_such_net'"),
    ({"dataset": "cifar10", "data_root": "/nonexistent"}, "cifar10 was not found under /nonexistent"),
    ({"device": "cuda:7"}, "cuda"),
    ({"out": "/tmp/elsewhere"}, "unknown setting.s. out; a run takes dataset, model"),
    ({"run_id": "../escape"}, "unknown setting.s. run_id"),
])
def test_invalid_settings_are_refused_with_a_message_and_write_nothing(make_manager, settings, message):
    manager = make_manager()
    with pytest.raises(RunError, match=message):
        manager.launch(settings)
    assert list(manager.runs_dir.iterdir()) == []


def test_launches_beyond_max_queued_are_refused_and_studies_beyond_max_queued_studies(make_manager):
    manager = make_manager(max_concurrent=1, max_queued=1, max_queued_studies=1)
    running = manager.launch(ENDLESS)
    waiting = manager.launch(QUICK)
    assert manager.info(waiting).state == "queued"
    with pytest.raises(RunError, match=r"^1 runs are already waiting for a free training slot \(at most 1 here\)"):
        manager.launch(QUICK)
    study_runs = [manager.launch(QUICK, study="s1") for _ in range(3)]  # a study queues all its runs at once
    with pytest.raises(RunError, match=r"^1 studies already have runs waiting for a free training slot \(at most 1 "):
        manager.launch(QUICK, study="s2")
    assert {running, waiting, *study_runs} == {info.run_id for info in manager.runs()}
    assert len(list(manager.runs_dir.iterdir())) == 5
    for limit in ("max_queued", "max_queued_studies"):
        with pytest.raises(ValueError, match=f"{limit} must be at least 0"):
            RunManager(manager.runs_dir, **{limit: -1})


def test_gpu_counts_that_cannot_work_are_refused(make_manager):
    manager = make_manager()
    visible = torch.cuda.device_count()
    too_many = max(2, visible + 1)  # one process on the CPU is fine; more need that many GPUs
    for gpus, message in [(0, "whole number >= 1; got 0"), (1.5, "whole number >= 1; got 1.5"),
                          (too_many, f"{too_many} GPUs asked for, but {visible} are visible here")]:
        with pytest.raises(RunError, match=message):
            manager.launch(QUICK, gpus=gpus)
    assert list(manager.runs_dir.iterdir()) == []


def test_a_full_disk_is_refused(make_manager, monkeypatch):
    manager = make_manager()
    monkeypatch.setattr(runs.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**12, 10**12, 10 * 2**20))
    with pytest.raises(RunError, match=r"only 10 MiB free under .*runs; a small_cnn run needs about 65 MiB"):
        manager.launch(QUICK)


@pytest.mark.parametrize("bad_id", ["..", "../outside", "a/b", "/etc", "x/../outside", "", ".hidden", "a\n", None])
def test_run_ids_that_are_paths_are_refused(make_manager, tmp_path, bad_id):
    manager = make_manager()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "status.json").write_text(json.dumps({"state": "finished"}))
    for call in (manager.info, manager.metrics, manager.log_tail, manager.settings, manager.cancel, manager.delete,
                 manager.run_dir):
        with pytest.raises(RunError, match="is not a run id"):
            call(bad_id)
    assert outside.is_dir()
    with pytest.raises(RunError, match="there is no run nope in"):
        manager.delete("nope")


def test_resume_continues_a_cancelled_run_in_its_own_folder(make_manager, stall_s):
    manager = make_manager(max_concurrent=1)
    run_id = manager.launch({**QUICK, "epochs": 6, "log_every": 1})
    run_dir = manager.run_dir(run_id)
    wait_while_progressing(lambda: (run_dir / "train_state.safetensors").exists(), lambda: files_written(run_dir),
                           stall_s, "the first epoch's training state")
    manager.cancel(run_id)
    wait_for(lambda: manager.info(run_id).state == "cancelled" and not manager.has_active_runs(),
             manager.grace_s + stall_s, "the run to end cancelled")
    done_before = manager.info(run_id).epoch
    assert 1 <= done_before < 6

    manager.resume(run_id)
    assert manager.info(run_id).state == "running" and manager.info(run_id).progress > 0  # a free slot: started
    with pytest.raises(RunError, match="is running; only a cancelled, failed or interrupted run can be resumed"):
        manager.resume(run_id)
    wait_while_progressing(lambda: manager.info(run_id).state == "finished", lambda: files_written(run_dir), stall_s,
                           "the resumed run to finish")
    records = manager.metrics(run_id)
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2, 3, 4, 5, 6]
    assert [r["epoch"] for r in records if r["kind"] == "resume"] == [done_before]
    launch = json.loads((run_dir / "launch.json").read_text())
    assert launch["command"][1:] == ["-m", "explorer.train", "--resume", str(run_dir)] and "resumed_at" in launch
    assert f"resumed after epoch {done_before}/6" in manager.log_tail(run_id, lines=200)
    assert load_checkpoint(run_dir).card["epoch"] == 6
    with pytest.raises(RunError, match=f"run {run_id} finished all its 6 epochs; there is nothing to resume"):
        manager.resume(run_id)

    again = manager.launch(manager.settings(run_id))  # every setting of the form, the empty ones included
    manager.cancel(again)  # started at once; stopped before its first epoch ends, so nothing to resume from
    wait_for(lambda: manager.info(again).state == "cancelled" and not manager.has_active_runs(), 30,
             "the second run to end cancelled")
    with pytest.raises(RunError, match=f"run {again} has no training state"):
        manager.resume(again)


def test_resuming_a_folder_that_holds_no_run_names_the_run_not_the_servers_path(make_manager):
    manager = make_manager()
    (manager.runs_dir / "garbled").mkdir()
    (manager.runs_dir / "garbled" / "status.json").write_text("not json")  # listed, but holds no run
    with pytest.raises(RunError) as refused:
        manager.resume("garbled")
    assert str(refused.value) == "run garbled: not a run folder (no readable config.json or status.json)"
    assert str(manager.runs_dir.parent) not in str(refused.value)


def test_a_malformed_run_folder_is_one_unreadable_row_not_a_broken_table(make_manager):
    manager = make_manager()
    good = manager.runs_dir / "good"
    good.mkdir()
    (good / "status.json").write_text(json.dumps({"state": "finished", "progress": 1.0, "epoch": 2, "epochs": 2}))
    (good / "metrics.jsonl").write_text(json.dumps({"kind": "epoch", "epoch": 1, "test_accuracy": 0.5}) + "\n")
    for name, status, record in (("progress-abc", {"state": "finished", "progress": "abc"}, None),
                                 ("accuracy-text", {"state": "finished"}, {"kind": "epoch", "test_accuracy": "x"})):
        folder = manager.runs_dir / name
        folder.mkdir()
        (folder / "status.json").write_text(json.dumps(status))
        if record:
            (folder / "metrics.jsonl").write_text(json.dumps(record) + "\n")
    rows = {info.run_id: info for info in manager.runs()}
    assert rows["good"].state == "finished" and rows["good"].best_test_accuracy == 0.5
    assert rows["progress-abc"].state == "unreadable" and rows["progress-abc"].message == \
        "unreadable: status.json: progress must be a number from 0 to 1; got 'abc'"
    assert rows["accuracy-text"].state == "unreadable" and rows["accuracy-text"].message == \
        "unreadable: metrics.jsonl line 1: test_accuracy must be a number; got 'x'"
    assert all(len(info.row()) == len(RUN_TABLE_HEADERS) for info in rows.values())
    assert manager.info("progress-abc").state == "unreadable"


def test_a_training_process_runs_nicer_than_the_app(make_manager):
    """Beside a CPU training run the app's users waited seconds for a swap: the run now yields the CPU to them."""
    manager = make_manager(max_concurrent=1)
    running = manager.launch(ENDLESS)
    wait_for(lambda: training(manager, running), 60, "the run to train")
    pid = leader_pid(manager, running)
    assert os.getpriority(os.PRIO_PROCESS, pid) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + TRAINING_NICENESS)
    run_group = Path(f"/proc/{pid}/autogroup")
    if run_group.exists():  # the run is a session of its own: with only its niceness raised, it kept half the CPU
        own = Path("/proc/self/autogroup").read_text().split()  # empty where the app is in the root group (CI)
        app_group_nice = int(own[-1]) if own else os.getpriority(os.PRIO_PROCESS, 0)
        assert run_group.read_text().split()[-1] == str(min(19, app_group_nice + TRAINING_NICENESS))
    manager.cancel(running)


def test_an_app_in_the_root_group_still_makes_the_run_session_nicer(monkeypatch):
    """An app in no autogroup of its own reads an empty /proc/self/autogroup (CI's machine): the launch must not fail
    there, and the run's session, which competes with each of the app's threads, must still be made nicer."""
    real_read_text = Path.read_text

    def read_text(path: Path, *args, **kwargs) -> str:
        return "" if str(path) == "/proc/self/autogroup" else real_read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    try:
        run_processes.lower_priority(child.pid)
        expected = min(19, os.getpriority(os.PRIO_PROCESS, 0) + TRAINING_NICENESS)  # the kernel's ceiling is 19
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == expected
        child_group = Path(f"/proc/{child.pid}/autogroup")
        if child_group.exists():
            assert real_read_text(child_group).split()[-1] == str(expected)
    finally:
        child.kill()
        child.wait()


def test_a_launch_is_checked_on_the_data_path_the_training_process_takes(make_manager):
    """The app once checked a launch on the in-memory dataset whatever --data-mode said: digits with --data-mode
    stream was accepted, and the training process then failed. It is refused before anything is written."""
    manager = make_manager()
    with pytest.raises(RunError, match="digits cannot be streamed"):
        manager.launch({"dataset": "digits", "data_mode": "stream", "epochs": 1})
    assert not any(manager.runs_dir.iterdir())
