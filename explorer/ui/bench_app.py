"""Latency of the web app as a client sees it: ``python -m explorer.bench_app``.

Each repeat starts ``python app.py`` in a fresh process (timing until it serves), then drives it with
``gradio_client``: patch-swap updates, Grad-CAM of both models on one image, the first Compare over the
whole test split and the cached Compare after it. Prints the median of every measurement (and the load
average, since a busy CPU slows everything). Output files are not downloaded by the client: the time is
the server's answer, as the browser receives it before fetching the images. The first swap (loading the
models) and the first Grad-CAM (finishing the grad-cam import that app.py starts once it serves) of each
process are reported apart.

``--while-training`` measures what a user of the other tabs feels while the Train tab trains: patch-swap
updates while the app is idle, while a run with the Train tab's defaults trains in the background
(launched through ``/launch_run``), and idle again once it has finished; and how long that default run
took, from the launch to its final state. Each app gets an empty runs folder of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from explorer.training.runfolder import epoch_records

ROOT = Path(__file__).resolve().parents[1]
GOALS = {"startup_s": 20.0, "swap_pair_s": 0.3, "gradcam_both_models_s": 1.0, "compare_first_s": 5.0,
         "compare_cached_s": 0.5, "swap_pair_idle_s": 0.3, "swap_pair_while_training_s": 0.3,
         "swap_pair_idle_after_s": 0.3}
SPACING_S = 1.0  # between the swaps of --while-training, so they sample a whole run (epochs and evaluations)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_app(port: int, options: list[str] | None = None, timeout: float = 120.0) -> tuple[subprocess.Popen, float]:
    """``python app.py`` on ``port``; returns the process and the seconds until it answered HTTP."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "app.py", "--port", str(port), *(options or [])], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while time.perf_counter() - start < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited with code {process.returncode} before serving")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as response:
                if response.status == 200:
                    return process, time.perf_counter() - start
        except OSError:
            time.sleep(0.1)
    process.terminate()
    raise RuntimeError(f"app.py did not serve within {timeout:.0f} s")


def _timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _swaps(client, calls: int, spacing: float = 0.0) -> list[float]:
    """Seconds per patch-swap update, each on another pair and seed (as a user moving the sliders)."""
    times = []
    for i in range(calls):
        times.append(_timed(lambda i=i: client.predict(upload_a=None, upload_b=None, index_a=i, index_b=i + 1,
                                                       seed=i, api_name="/swap_pair")))
        time.sleep(spacing)
    return times


def measure_once(calls: int) -> dict[str, list[float]]:
    """One fresh app process: every measurement, unsummarised."""
    from gradio_client import Client

    port = _free_port()
    process, startup = _start_app(port)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
        first_swap = _timed(lambda: client.predict(upload_a=None, upload_b=None, api_name="/swap_pair"))
        first_gradcam = _timed(lambda: client.predict(upload=None, api_name="/gradcam"))
        swap = _swaps(client, calls)
        gradcam = [_timed(lambda i=i: client.predict(upload=None, test_index=i, api_name="/gradcam"))
                   for i in range(calls)]
        compare_first = _timed(lambda: client.predict(api_name="/compare"))
        compare_cached = [_timed(lambda: client.predict(api_name="/compare")) for _ in range(calls)]
    finally:
        process.terminate()
        process.wait(timeout=30)
    return {"startup_s": [startup], "swap_pair_s": swap, "gradcam_both_models_s": gradcam,
            "compare_first_s": [compare_first], "compare_cached_s": compare_cached,
            "first_swap_after_start_s": [first_swap], "first_gradcam_after_start_s": [first_gradcam]}


def _run_state(client, run_id: str) -> tuple[str, str]:
    """(status, progress) of a run in the app's /runs table."""
    table = client.predict(api_name="/runs")
    row = next(row for row in table["data"] if row[0] == run_id)
    return row[table["headers"].index("status")], row[table["headers"].index("progress")]


def measure_while_training(calls: int, run_timeout: float = 900.0) -> dict[str, list[float]]:
    """One fresh app: swaps idle, while a default run trains, idle again; and the default run's duration."""
    from gradio_client import Client

    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="bench-runs-") as runs_dir:
        process, _ = _start_app(port, ["--runs-dir", runs_dir])
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
        run_id = None
        try:
            client.predict(upload_a=None, upload_b=None, api_name="/swap_pair")  # loads the models
            idle = _swaps(client, calls, SPACING_S)
            launched = time.perf_counter()
            run_id = client.predict(api_name="/launch_run")  # the Train tab's defaults
            while _run_state(client, run_id)[1].startswith("0 %"):  # until its first logged steps
                time.sleep(0.2)
            training = _swaps(client, calls, SPACING_S)
            if _run_state(client, run_id)[0] != "running":
                raise RuntimeError("the default run ended before the swaps were measured; measure fewer --calls")
            while (state := _run_state(client, run_id)[0]) == "running":
                if time.perf_counter() - launched > run_timeout:
                    raise RuntimeError(f"the default run did not finish within {run_timeout:.0f} s")
                time.sleep(0.5)
            run_wall = time.perf_counter() - launched
            if state != "finished":
                raise RuntimeError(f"the default run ended {state}")
            final = epoch_records(Path(runs_dir) / run_id)[-1]
            idle_after = _swaps(client, calls, SPACING_S)
        finally:
            try:
                if run_id is not None and _run_state(client, run_id)[0] in ("queued", "running"):
                    client.predict(run_id, api_name="/cancel_run")  # app.py leaves runs training when it stops
                    while _run_state(client, run_id)[0] in ("queued", "running"):
                        time.sleep(0.2)
            finally:
                process.terminate()
                process.wait(timeout=30)
    return {"swap_pair_idle_s": idle, "swap_pair_while_training_s": training, "swap_pair_idle_after_s": idle_after,
            "default_run_launch_to_finished_s": [run_wall],
            "default_run_training_s": [final["elapsed"]]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m explorer.bench_app", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="fresh app processes (default 3)")
    parser.add_argument("--calls", type=int, default=10, help="calls per measurement per process (default 10)")
    parser.add_argument("--while-training", action="store_true",
                        help="patch-swap latency idle vs while a default Train-tab run trains, and that run's duration")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    measure = measure_while_training if args.while_training else measure_once
    load_before = os.getloadavg()[0]
    samples: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for key, values in measure(args.calls).items():
            samples.setdefault(key, []).extend(values)
    result = {"cpus": os.cpu_count(), "load_average_before": load_before, "load_average_after": os.getloadavg()[0],
              "repeats": args.repeats, "calls": args.calls,
              "median": {key: statistics.median(values) for key, values in samples.items()},
              "samples": samples}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['cpus']} CPUs, 1-minute load average {load_before:.2f} before, "
          f"{result['load_average_after']:.2f} after; {args.repeats} app processes x {args.calls} calls")
    for key, median in result["median"].items():
        goal = GOALS.get(key)
        verdict = f"goal <= {goal:g} s  {'ok' if median <= goal else 'OVER'}" if goal else "(for information)"
        print(f"  {key:34s} median {median:7.3f} s  (n = {len(samples[key]):3d})  {verdict}")
    return 0
