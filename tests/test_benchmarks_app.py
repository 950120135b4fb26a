"""The app's load benchmark: its bounds and its summary (the measurements themselves are the benchmark's job)."""

import subprocess
import sys
import time

import pytest

from explorer.benchmarks.app import main
from explorer.benchmarks.classroom import Recorder, _cpu_seconds, _percentile, _steps_per_s, _training_steps
from explorer.training.runfolder import write_status
from tests.helpers import wait_for


def test_percentiles_are_order_statistics():
    values = [float(v) for v in range(1, 21)]  # 1..20
    assert _percentile(values, 0.5) == 11.0 and _percentile(values, 0.95) == 19.0 and _percentile([3.0], 0.95) == 3.0


def test_a_request_after_the_deadline_is_not_sent_and_failures_are_recorded():
    class Failing:
        def submit(self, **inputs):
            raise ConnectionError("refused")

    late = Recorder(deadline=0.0)
    late.call(Failing(), "swap_pair")
    assert late.errors == {} and late.latency == {}
    recorder = Recorder(deadline=float("inf"))
    recorder.call(Failing(), "swap_pair", seed=1)
    assert recorder.errors == {"swap_pair": ["ConnectionError: refused"]} and recorder.latency == {}


@pytest.mark.parametrize("argv", [["--users", "0"], ["--users", "201"], ["--users", "3", "--rounds", "0"],
                                  ["--users", "3", "--think", "-1"]])
def test_a_class_out_of_bounds_is_refused(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and "--users must be 1..200" in capsys.readouterr().err


def test_cpu_seconds_count_the_apps_process_and_the_clients():
    """The class's report splits the machine's CPU time between the app and the benchmark's own clients."""
    busy = "import sys, time\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass\nsys.stdin.read()"
    child = subprocess.Popen([sys.executable, "-c", busy], stdin=subprocess.PIPE)
    try:
        start = _cpu_seconds(child.pid)
        used = wait_for(lambda: (c := _cpu_seconds(child.pid))["server"] >= 0.6 and c, 60, "the busy child")
        t = time.process_time()
        while time.process_time() - t < 0.3:
            pass
        clients = _cpu_seconds(child.pid)["clients"] - start["clients"]
    finally:
        child.communicate(b"")
    assert 0.6 <= used["server"] < 0.6 + 1.5  # its busy loop and its start-up
    assert 0.3 <= clients < 1.0


def test_the_client_processes_recorders_add_up():
    recorder = Recorder(deadline=float("inf"))
    recorder.record("swap_pair", seconds=0.5)
    recorder.merge({"swap_pair": [0.25, 1.0], "gradcam": [0.5]}, {"compare": ["TimeoutError: late"]}, 3.0)
    recorder.merge({"gradcam": [2.0]}, {}, 1.5)
    assert recorder.latency == {"swap_pair": [0.5, 0.25, 1.0], "gradcam": [0.5, 2.0]}
    assert recorder.errors == {"compare": ["TimeoutError: late"]} and recorder.client_cpu_s == 4.5


def test_a_training_runs_speed_comes_from_its_status(tmp_path):
    """--while-training states the run's cost: its steps per second during the class and alone."""
    run = tmp_path / "run-1"
    run.mkdir()
    assert _training_steps(str(tmp_path), None) is None
    write_status(run, "running", step=120)
    first = _training_steps(str(tmp_path), "run-1")
    time.sleep(0.05)
    write_status(run, "running", step=150)
    second = _training_steps(str(tmp_path), "run-1")
    assert first[0] == 120 and second[0] == 150
    assert _steps_per_s(first, second) == pytest.approx(30 / (second[1] - first[1]))
    assert _steps_per_s((100, 10.0), (160, 14.0)) == 15.0
