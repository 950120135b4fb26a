"""What the command lines tell a new user: a busy port, the help texts, the end of a training run."""

import re
import socket
import subprocess
import sys

import pytest

from tests.helpers import ROOT


def _run(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_a_busy_port_is_one_line_that_suggests_port_not_a_traceback(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _run(["app.py", "--port", str(port), "--runs-dir", str(tmp_path / "runs")])
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "GRADIO_SERVER_PORT" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert errors == [f"ips-explorer: error: cannot serve on 127.0.0.1:{port}, the port is in use (or the address is "
                      f"not this machine's); choose another port, e.g. python app.py --port {port + 1}"]


@pytest.mark.parametrize("argv,code", [(["--help"], 0), (["--no-such-flag"], 2), (["--auth", "nocolon"], 2)])
def test_app_help_and_a_refused_flag_answer_before_torch_or_gradio_is_imported(argv, code):
    """Both took seconds (torch, then Gradio, imported before the arguments were parsed); only serving needs them."""
    probe = ("import runpy, sys\nsys.argv = ['app.py', *sys.argv[1:]]\ntry:\n    runpy.run_path('app.py', "
             "run_name='__main__')\nexcept SystemExit as stop:\n    print('exit', stop.code, sorted(m for m in "
             "('torch', 'gradio', 'PIL', 'numpy') if m in sys.modules), file=sys.stderr)")
    result = _run(["-c", probe, *argv])
    lines = result.stderr.splitlines()
    assert lines[-1] == f"exit {code} []", result.stderr
    if code == 2:  # one line, not the 20 lines of usage before it
        assert len(lines) == 2 and lines[0].startswith("app.py: error: ") and lines[0].endswith("(see --help)")


def test_two_checkpoint_folders_with_one_name_are_refused_at_start(tmp_path):
    """Pickers name a checkpoint '<folder name>/<checkpoint>': two folders called 'models' would be ambiguous."""
    (tmp_path / "b" / "models").mkdir(parents=True)
    result = _run(["app.py", "--port", "1", "--runs-dir", str(tmp_path / "a" / "models"),
                   "--checkpoints-dir", str(tmp_path / "b" / "models")])
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("ips-explorer: error: two checkpoint folders share the name "
                                                     "'models' (")


def test_train_help_states_the_run_id_default_once():
    help_text = " ".join(_run(["-m", "explorer.train", "--help"]).stdout.split())
    run_id = help_text[help_text.index("--run-id RUN_ID name"):help_text.index("--log-every LOG_EVERY write")]
    assert run_id.count("default") == 1 and "(default '': a name made of the time" in run_id


def test_bench_docstring_states_no_repeats_other_than_the_parsers():
    from explorer.benchmarks import training as bench

    parser_default = re.search(r"default=(\d+)", (ROOT / "explorer/benchmarks/training.py").read_text().split(
        '"--repeats"')[1]).group(1)
    assert set(re.findall(r"--repeats (\d+)", bench.__doc__)) <= {parser_default}  # it once said 30 beside 40
    assert "--repeats REPEATS" in " ".join(_run(["-m", "explorer.bench", "--help"]).stdout.split())


def test_a_finished_run_names_its_checkpoint_and_how_to_evaluate_it(tmp_path):
    result = _run(["-m", "explorer.train", "--dataset", "digits", "--epochs", "1", "--out", str(tmp_path),
                   "--run-id", "one"])
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "one"
    assert result.stdout.splitlines()[-1] == (f"checkpoint: {run_dir}  |  evaluate it: python -m explorer.evaluate "
                                              f"{run_dir}")
    status = (run_dir / "status.json").read_text()
    assert re.search(r'"finished 1 epoch in [\d.]+ s"', status)  # not "1 epochs"
