"""The slurm executor: how SLURM's word settles a run (no cluster needed), then studies and runs on a real SLURM
cluster (scripts/local-slurm; these skip with the reason where none can run)."""

import json
import time
from pathlib import Path

import pytest

from explorer.training import slurm, study_cli
from explorer.training.executors import train_main
from explorer.training.runfolder import SLURM, STATUS, epoch_records, read_json, read_metrics, write_json, write_status
from explorer.training.runs import RunManager
from explorer.training.study import comparison_spec, save_spec
from tests.helpers import ENDLESS, wait_for

STUDY = ["--dataset", "digits", "--methods", "ce", "ips", "--epochs", "1", "--seeds", "0", "1", "--id", "st"]
MEASURED_NOT_COMPUTED = ("elapsed", "images_per_s")  # wall-clock figures; everything else is computed


# --------------------------------------------------------------------------------------------------
# settle: SLURM's word on a job ends its run (no cluster)
# --------------------------------------------------------------------------------------------------
def _run(tmp_path: Path, state: str, message: str = "", **progress) -> Path:
    run_dir = tmp_path / "r"
    run_dir.mkdir(exist_ok=True)
    write_status(run_dir, state, message=message, **progress)
    write_json(run_dir / SLURM, {"job_id": "7", "options": {"time": "1"}, "state": "RUNNING", "reason": ""})
    return run_dir


def test_a_job_past_its_time_limit_fails_its_run_with_the_reason_though_the_run_wrote_cancelled(tmp_path):
    run_dir = _run(tmp_path, "cancelled", "cancelled by signal 15 at step 30", progress=0.25, epoch=2, step=30)
    slurm.settle(run_dir, slurm.JobState("7", "TIMEOUT", "TimeLimit"))
    status = read_json(run_dir / STATUS)
    assert status["state"] == "failed"
    assert status["message"].startswith("SLURM job 7 ended TIMEOUT (TimeLimit): past its time limit (--slurm-time 1)")
    assert "--resume continues" in status["message"]
    assert (status["progress"], status["epoch"], status["step"]) == (0.25, 2, 30)
    assert read_json(run_dir / SLURM)["state"] == "TIMEOUT"


@pytest.mark.parametrize("job_state,run_state,expected", [
    ("CANCELLED", "queued", "cancelled"),  # scancel before the job started: nobody else writes it
    ("CANCELLED", "running", "cancelled"),  # killed before the run could write it
    ("NODE_FAIL", "running", "failed"),
    ("OUT_OF_MEMORY", "running", "failed"),
    ("COMPLETED", "running", "failed"),  # the job ended but the run never said finished: it did not finish
    ("COMPLETED", "finished", "finished"),
    ("CANCELLED", "finished", "finished"),  # a run that finished keeps it
    ("RUNNING", "running", "running"),
    ("PENDING", "queued", "queued"),
])
def test_slurm_states_settle_the_run_state(tmp_path, job_state, run_state, expected):
    run_dir = _run(tmp_path, run_state, "its own message")
    slurm.settle(run_dir, slurm.JobState("7", job_state, "None"))
    status = read_json(run_dir / STATUS)
    assert status["state"] == expected
    assert (status["message"] == "its own message") == (expected == run_state)
    if expected != run_state:
        assert status["message"] == f"SLURM job 7 ended {job_state}"


def test_a_run_that_failed_on_its_own_keeps_its_reason(tmp_path):
    run_dir = _run(tmp_path, "failed", "the loss became non-finite")
    slurm.settle(run_dir, slurm.JobState("7", "FAILED", "NonZeroExitCode"))
    assert read_json(run_dir / STATUS)["message"] == "the loss became non-finite"


def test_options_become_submitit_parameters_and_bad_ones_are_refused():
    options = slurm.SlurmOptions(partition="gpu", gpus_per_run=2, cpus_per_run=4, time="0:30", nodes=2,
                                 tasks_per_node=2, sbatch=("account=lab", "--exclusive"), setup=("module load x",))
    params = options.parameters()
    assert params["slurm_partition"] == "gpu" and params["slurm_gpus_per_node"] == 2
    assert params["slurm_cpus_per_task"] == 4 and params["slurm_nodes"] == 2 and params["slurm_ntasks_per_node"] == 2
    assert params["slurm_additional_parameters"] == {"time": "0:30", "signal": "URG@1", "account": "lab",
                                                     "exclusive": True}
    assert params["slurm_setup"][-1] == "module load x" and options.tasks == 4
    assert "slurm_partition" not in slurm.SlurmOptions().parameters()  # the cluster's default partition
    with pytest.raises(slurm.SlurmError, match="--slurm-cpus-per-run must be a whole number >= 1; got 0"):
        slurm.SlurmOptions(cpus_per_run=0)
    assert train_main(["--executor", "slurm", "--slurm-time", " ", "--out", "/nonexistent"]) == 2


# --------------------------------------------------------------------------------------------------
# On a real SLURM cluster
# --------------------------------------------------------------------------------------------------
def _final_records(runs_dir: Path) -> dict[str, dict]:
    return {p.parent.name: {k: v for k, v in epoch_records(p.parent)[-1].items() if k not in MEASURED_NOT_COMPUTED}
            for p in sorted(runs_dir.glob(f"*/{STATUS}"))}


def test_a_study_through_slurm_gives_the_metrics_of_the_local_executor(tmp_path, slurm_cluster, capsys):
    """2 settings x 2 seeds, one epoch on digits: the same final records, bit for bit on the CPU."""
    assert study_cli.main([*STUDY, "--out", str(tmp_path / "local")]) == 0
    capsys.readouterr()
    assert study_cli.main([*STUDY, "--out", str(tmp_path / "slurm"), "--executor", "slurm", "--slurm-time", "10"]) == 0
    printed = capsys.readouterr().out
    local, on_slurm = _final_records(tmp_path / "local"), _final_records(tmp_path / "slurm")
    assert sorted(on_slurm) == ["st-ce-1-ep-s0", "st-ce-1-ep-s1", "st-ips-1-ep-s0", "st-ips-1-ep-s1"]
    assert on_slurm == local
    for run_id in on_slurm:
        record = read_json(tmp_path / "slurm" / run_id / SLURM)
        assert record["state"] == "COMPLETED" and record["config"]["run_id"] == run_id
        assert f"{run_id}: finished · SLURM job {record['job_id']} COMPLETED" in printed
        assert not (tmp_path / "local" / run_id / SLURM).exists()
    # finished runs are not submitted again
    assert study_cli.main([*STUDY, "--out", str(tmp_path / "slurm"), "--executor", "slurm"]) == 0
    assert "->" not in capsys.readouterr().out


@pytest.fixture(scope="module")
def stopped_jobs(tmp_path_factory, slurm_cluster):
    """Two endless runs: one cancelled through a run manager started after the jobs were submitted (an app
    restart finds them in the run folders), one killed by SLURM at its 1-minute time limit."""
    runs_dir = tmp_path_factory.mktemp("runs")
    from explorer.training.config import TrainConfig

    def submit(run_id: str, time_limit: str) -> Path:
        cfg = TrainConfig(**{**ENDLESS, "out": str(runs_dir), "run_id": run_id})
        slurm.submit([cfg], slurm.SlurmOptions(time=time_limit))
        return runs_dir / run_id

    cancelled, timed_out = submit("cancelled", "10"), submit("timed-out", "1")
    manager = RunManager(runs_dir, slurm_options=slurm.SlurmOptions())
    try:
        wait_for(lambda: read_json(cancelled / STATUS).get("step", 0) >= 3, 120, "the run to train")
        assert manager.has_active_runs() and manager.info("cancelled").state == "running"
        manager.cancel("cancelled")
        wait_for(lambda: manager.runs() and not manager.has_active_runs(), 240, "both jobs to end")
    finally:
        manager.close()
    return cancelled, timed_out


def test_scancel_of_a_running_job_ends_its_run_cancelled(stopped_jobs):
    run_dir = stopped_jobs[0]
    status = read_json(run_dir / STATUS)
    assert status["state"] == "cancelled" and status["step"] >= 3
    assert read_json(run_dir / SLURM)["state"] == "CANCELLED"


def test_a_job_past_slurm_time_ends_failed_with_slurms_reason(stopped_jobs):
    run_dir = stopped_jobs[1]
    status = read_json(run_dir / STATUS)
    assert status["state"] == "failed"
    assert "TIMEOUT" in status["message"] and "past its time limit (--slurm-time 1)" in status["message"]
    assert read_json(run_dir / SLURM)["state"] == "TIMEOUT"


def test_a_two_task_job_trains_one_run_with_gloo_and_rank_0_writes(tmp_path, slurm_cluster):
    code = train_main(["--dataset", "digits", "--epochs", "1", "--log-every", "3", "--out", str(tmp_path),
                       "--run-id", "ddp", "--executor", "slurm", "--tasks-per-node", "2", "--slurm-time", "10"])
    run_dir = tmp_path / "ddp"
    assert code == 0, read_json(run_dir / STATUS)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["environment"]["world_size"] == 2
    steps = [r["step"] for r in read_metrics(run_dir) if r["kind"] == "step"]
    assert steps == [3, 6, 9, 12]  # written once, by rank 0
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    logs = Path(read_json(run_dir / SLURM)["logs"])
    assert sorted(p.name.rsplit("_", 2)[-2] for p in logs.glob("*_log.out")) == ["0", "1"]  # both tasks ran


def test_slurm_refuses_a_job_it_cannot_run_with_one_line(tmp_path, slurm_cluster, capsys):
    code = train_main(["--dataset", "digits", "--out", str(tmp_path), "--run-id", "r", "--executor", "slurm",
                       "--slurm-partition", "no-such-partition"])
    assert code == 2
    err = capsys.readouterr().err
    assert err == "explorer.train: error: SLURM refused the job(s): Batch job submission failed: Invalid partition " \
                  "name specified\n"
    assert read_json(tmp_path / "r" / STATUS)["state"] == "failed"


def _ended(shown: tuple) -> tuple | None:
    """The Study tab's answer once no job of the study is pending or running any more."""
    return None if shown[-1].active else shown


def test_the_study_tab_launches_on_slurm_and_shows_the_slurm_states(tmp_path, slurm_cluster):
    gr = pytest.importorskip("gradio")
    del gr
    from explorer.ui import study as tab

    manager = RunManager(tmp_path, slurm_options=slurm.SlurmOptions(time="10"))
    try:
        tab.launch_study(manager, "tab", "digits", "small_cnn", ["ce", "ips"], ["equal-epochs"], 1, 1, 128, 0.05,
                         "slurm")
        shown = wait_for(lambda: time.sleep(1) or _ended(tab.refresh(manager, "tab", "accuracy", None)), 180,
                         "the study's jobs to end")
    finally:
        manager.close()
    runs_table = shown[1]
    assert shown[-1].active is False  # the tab stops refreshing once the jobs ended, not before
    assert list(runs_table["state"]) == ["finished", "finished"]
    assert all(job.startswith("job ") and job.endswith(" COMPLETED") for job in runs_table["SLURM"])
    assert runs_table["test acc (%)"].notna().all()


def test_the_study_cli_cancels_a_studys_slurm_jobs(tmp_path, slurm_cluster, capsys):
    spec = comparison_spec("cx", "digits", "small_cnn", ["ce", "ips"], 500, ["equal-epochs"], [0])
    save_spec(spec, tmp_path)
    slurm.submit([spec.config(s, seed, tmp_path) for s, seed in spec.runs()], slurm.SlurmOptions(time="10"))
    run_dirs = [tmp_path / spec.run_id(s, seed) for s, seed in spec.runs()]
    wait_for(lambda: all(read_json(d / STATUS).get("state") == "running" for d in run_dirs), 120, "both runs to train")
    assert study_cli.main(["--id", "cx", "--out", str(tmp_path), "--cancel"]) == 0
    printed = capsys.readouterr().out
    for run_dir in run_dirs:
        assert f"{run_dir.name}: cancelled SLURM job {read_json(run_dir / SLURM)['job_id']}" in printed
    ended = slurm.wait(run_dirs, poll_s=0.5)
    assert {job.state for job in ended.values()} == {"CANCELLED"}
    assert {read_json(d / STATUS)["state"] for d in run_dirs} == {"cancelled"}
