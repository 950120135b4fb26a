"""Latency of the web app as a client sees it: ``python -m explorer.bench_app``.

Each repeat starts ``python app.py`` in a fresh process (timing until it serves), then drives it with
``gradio_client``: patch-swap updates, Grad-CAM of both models on one image, the first Compare over the
whole test split and the cached Compare after it. Prints the median of every measurement (and the load
average, since a busy CPU slows everything). Output files are not downloaded by the client: the time is
the server's answer, as the browser receives it before fetching the images. The first swap (loading the
models) and the first Grad-CAM (finishing the grad-cam import that app.py starts once it serves) of each
process are reported apart.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOALS = {"startup_s": 20.0, "swap_pair_s": 0.3, "gradcam_both_models_s": 1.0, "compare_first_s": 5.0,
         "compare_cached_s": 0.5}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_app(port: int, timeout: float = 120.0) -> tuple[subprocess.Popen, float]:
    """``python app.py`` on ``port``; returns the process and the seconds until it answered HTTP."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT,
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


def measure_once(calls: int) -> dict[str, list[float]]:
    """One fresh app process: every measurement, unsummarised."""
    from gradio_client import Client

    port = _free_port()
    process, startup = _start_app(port)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
        first_swap = _timed(lambda: client.predict(upload_a=None, upload_b=None, api_name="/swap_pair"))
        first_gradcam = _timed(lambda: client.predict(upload=None, api_name="/gradcam"))
        swap = [_timed(lambda i=i: client.predict(upload_a=None, upload_b=None, index_a=i, index_b=i + 1,
                                                  seed=i, api_name="/swap_pair")) for i in range(calls)]
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m explorer.bench_app", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="fresh app processes (default 3)")
    parser.add_argument("--calls", type=int, default=10, help="calls per measurement per process (default 10)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    samples: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for key, values in measure_once(args.calls).items():
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
        print(f"  {key:28s} median {median:7.3f} s  (n = {len(samples[key]):3d})  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
