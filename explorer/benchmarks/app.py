"""Latency of the web app as a client sees it: ``python -m explorer.bench_app``.

Each repeat starts ``python app.py`` in a fresh process (timing until it serves), then drives it with
``gradio_client``: patch-swap updates, Grad-CAM of both models on one image, the first Compare over the
whole test split and the cached Compare after it. Prints the median of every measurement (and the load
average, since a busy CPU slows everything). Output files are not downloaded by the client: the time is
the server's answer, as the browser receives it before fetching the images. The first swap (loading the
models) and the first Grad-CAM of each process are reported apart.

``--while-training`` measures what a user of the other tabs feels while the Train tab trains: patch-swap
updates while the app is idle, while a run with the Train tab's defaults trains in the background
(launched through ``/launch_run``), and idle again once it has finished; and how long that default run
took, from the launch to its final state. Each app gets an empty runs folder of its own.

``--users N`` plays a class instead (``explorer.benchmarks.classroom``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from explorer.benchmarks.classroom import measure_class, print_class
from explorer.benchmarks.served import free_port, loopback_client, run_state, served_app, stop_run, timed
from explorer.training.runfolder import epoch_records

GOALS = {"startup_s": 20.0, "swap_pair_s": 0.3, "gradcam_both_models_s": 1.0, "compare_first_s": 5.0,
         "compare_cached_s": 0.5, "swap_pair_idle_s": 0.3, "swap_pair_while_training_s": 0.3,
         "swap_pair_idle_after_s": 0.3}

SPACING_S = 1.0  # between the swaps of --while-training, so they sample a whole run (epochs and evaluations)


def _swaps(client, calls: int, spacing: float = 0.0) -> list[float]:
    """Seconds per patch-swap update, each on another pair and seed (as a user moving the sliders)."""
    times = []
    for i in range(calls):
        times.append(timed(lambda i=i: client.predict(upload_a=None, upload_b=None, index_a=i, index_b=i + 1,
                                                       seed=i, api_name="/swap_pair")))
        time.sleep(spacing)
    return times


def measure_once(calls: int) -> dict[str, list[float]]:
    """One fresh app process: every measurement, unsummarised."""
    port = free_port()
    with served_app(port) as (_, startup):
        client = loopback_client(f"http://127.0.0.1:{port}/")
        first_swap = timed(lambda: client.predict(upload_a=None, upload_b=None, api_name="/swap_pair"))
        first_gradcam = timed(lambda: client.predict(upload=None, api_name="/gradcam"))
        swap = _swaps(client, calls)
        gradcam = [timed(lambda i=i: client.predict(upload=None, test_index=i, api_name="/gradcam"))
                   for i in range(calls)]
        compare_first = timed(lambda: client.predict(api_name="/compare"))
        compare_cached = [timed(lambda: client.predict(api_name="/compare")) for _ in range(calls)]
    return {"startup_s": [startup], "swap_pair_s": swap, "gradcam_both_models_s": gradcam,
            "compare_first_s": [compare_first], "compare_cached_s": compare_cached,
            "first_swap_after_start_s": [first_swap], "first_gradcam_after_start_s": [first_gradcam]}


def measure_while_training(calls: int, run_timeout: float = 900.0) -> dict[str, list[float]]:
    """One fresh app: swaps idle, while a default run trains, idle again; and the default run's duration."""
    port = free_port()
    with (tempfile.TemporaryDirectory(prefix="bench-runs-") as runs_dir,
          served_app(port, ["--runs-dir", runs_dir])):
        client = loopback_client(f"http://127.0.0.1:{port}/")
        run_id = None
        try:
            client.predict(upload_a=None, upload_b=None, api_name="/swap_pair")  # loads the models
            idle = _swaps(client, calls, SPACING_S)
            launched = time.perf_counter()
            run_id = client.predict(api_name="/launch_run")  # the Train tab's defaults
            while run_state(client, run_id)[1].startswith("0 %"):  # until its first logged steps
                time.sleep(0.2)
            training = _swaps(client, calls, SPACING_S)
            if run_state(client, run_id)[0] != "running":
                raise RuntimeError("the default run ended before the swaps were measured; measure fewer --calls")
            while (state := run_state(client, run_id)[0]) == "running":
                if time.perf_counter() - launched > run_timeout:
                    raise RuntimeError(f"the default run did not finish within {run_timeout:.0f} s")
                time.sleep(0.5)
            run_wall = time.perf_counter() - launched
            if state != "finished":
                raise RuntimeError(f"the default run ended {state}")
            final = epoch_records(Path(runs_dir) / run_id)[-1]
            idle_after = _swaps(client, calls, SPACING_S)
        finally:
            stop_run(client, run_id)
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
    parser.add_argument("--users", type=int, metavar="N", help="play a class of N users at once on one app")
    parser.add_argument("--rounds", type=int, default=2, help="--users: rounds of the five steps per user (default 2)")
    parser.add_argument("--think", type=float, default=3.0, help="--users: mean think time in s (default 3)")
    parser.add_argument("--distinct", type=int, default=3,
                        help="--users: distinct gaps settings the class asks for (default 3)")
    parser.add_argument("--round-robin", type=int, metavar="R",
                        help="--users: R requests per user, round-robin over four endpoints, no think time")
    parser.add_argument("--client-processes", type=int, default=4, metavar="P",
                        help="--users: processes the users are spread over (default 4; see _play_class)")
    parser.add_argument("--duration", type=float, default=300.0,
                        help="--users: stop sending requests after this many seconds (default 300)")
    args = parser.parse_args(argv)
    if args.users is not None:
        if (not 1 <= args.users <= 200 or args.rounds < 1 or args.think < 0 or args.distinct < 1
                or not 1 <= args.client_processes <= 32):
            parser.error("--users must be 1..200, --rounds and --distinct at least 1, --think at least 0, "
                         "--client-processes 1..32")
        result = measure_class(args)
        print(json.dumps(result)) if args.json else print_class(result)
        return 0
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
