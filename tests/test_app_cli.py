"""app.py: its options, and the real launcher serving on 127.0.0.1 behind --auth."""

import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from explorer.ui.cli import parse_args
from tests.helpers import ROOT, free_port


def test_defaults_bind_this_machine_only():
    args = parse_args([])
    assert args.host == "127.0.0.1" and args.port == 7860 and not args.share and args.auth is None
    assert args.runs_dir == "runs" and args.checkpoints_dir == "checkpoints"
    assert args.max_runs is None  # the run manager's default: 1 per GPU, 1 on CPU


def test_max_runs_must_be_positive(capsys):
    assert parse_args(["--max-runs", "3"]).max_runs == 3
    with pytest.raises(SystemExit) as info:
        parse_args(["--max-runs", "0"])
    assert info.value.code == 2 and "--max-runs must be at least 1; got 0" in capsys.readouterr().err


@pytest.mark.parametrize("auth", ["nocolon", ":secret", "user:"])
def test_auth_needs_user_and_password(auth, capsys):
    with pytest.raises(SystemExit) as info:
        parse_args(["--auth", auth])
    assert info.value.code == 2 and "USER:PASSWORD" in capsys.readouterr().err


def test_app_py_serves_on_localhost_and_asks_for_the_password(tmp_path):
    port = free_port()
    process = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--auth", "ada:lovelace",
                                "--runs-dir", str(tmp_path / "runs")], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stdout.read()
            try:
                urllib.request.urlopen(f"{base}/config", timeout=2)
                pytest.fail("/config answered without a login")
            except urllib.error.HTTPError as exc:
                assert exc.code == 401
                break
            except OSError:
                assert time.monotonic() < deadline, "app.py did not serve within 120 s"
                time.sleep(0.2)
        login = urllib.parse.urlencode({"username": "ada", "password": "wrong"}).encode()
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{base}/login", data=login, timeout=10)
        assert info.value.code == 400
        login = urllib.parse.urlencode({"username": "ada", "password": "lovelace"}).encode()
        with urllib.request.urlopen(f"{base}/login", data=login, timeout=10) as response:
            assert response.status == 200
    finally:
        process.terminate()
        process.wait(timeout=30)
