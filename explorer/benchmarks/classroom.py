"""``--users N`` plays a class on one app (a fresh process, loopback ``gradio_client`` users, spread over
``--client-processes`` processes): each user opens the app (its own client) and does swap -> random pair -> Grad-CAM ->
confidence gaps -> Compare, with a random think time between steps, for ``--rounds`` rounds. Gaps and Compare are asked
with one of ``--distinct`` settings (a class mostly clicks the same defaults). ``--round-robin R`` instead plays the
issue's load test: N clients without think times, R requests each, round-robin swap_pair / confidence_gaps / gradcam /
compare (gaps with N = 500, seed 0; Compare on the default models). Both report per endpoint p50 / p95 and errors (and,
from Gradio's own traces, the server's share: queue wait and processing), the throughput and the CPU time of the app and
of the clients; then, alone, a repeated identical gaps and Compare request (the cache). Every request has a time limit
and the whole benchmark a deadline (``--duration``), so it stops by itself. ``--while-training`` runs it while a
Train-tab run with the defaults but ``CLASS_TRAINING_EPOCHS`` epochs trains (launched first, cancelled at the end), and
reports the run's cost too: its training steps per second during the class and then alone.

A class's browsers run on the students' machines, but these clients share the server's cores, so their own work must
stay small (``explorer.benchmarks.served.loopback_client`` says how).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from explorer.benchmarks.served import free_port, loopback_client, run_state, served_app, stop_run
from explorer.training.runfolder import STATUS, read_json

CLASS_TRAINING_EPOCHS = 20  # --users --while-training: the Train tab's defaults, long enough to train through a class
TRAINING_ALONE_S = 10.0  # --users --while-training: how long the run's speed alone is measured after the class
CLASS_GOALS_P95 = {"swap_pair": 2.0, "random_pair": 2.0, "gradcam": 2.0, "confidence_gaps": 10.0, "compare": 10.0}
REQUEST_TIMEOUT_S = 120.0


class Recorder:
    """Latencies and errors per endpoint, from many user threads."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.latency: dict[str, list[float]] = {}
        self.errors: dict[str, list[str]] = {}
        self.client_cpu_s = 0.0  # CPU seconds of the client processes (``_play_class``)
        self._lock = threading.Lock()

    def call(self, client, endpoint: str, **inputs) -> None:
        """One request, timed; an exception (or no answer within ``REQUEST_TIMEOUT_S``) is an error."""
        if time.monotonic() > self.deadline:
            return
        start = time.perf_counter()
        try:
            client.submit(api_name=f"/{endpoint}", **inputs).result(timeout=REQUEST_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 (every failure a user would see counts)
            self.record(endpoint, error=f"{type(exc).__name__}: {exc}")
            return
        self.record(endpoint, seconds=time.perf_counter() - start)

    def merge(self, latency: dict[str, list[float]], errors: dict[str, list[str]], cpu_s: float) -> None:
        """Add another recorder's latencies and errors, and its process's CPU seconds (``_play_class``)."""
        with self._lock:
            for endpoint, seconds in latency.items():
                self.latency.setdefault(endpoint, []).extend(seconds)
            for endpoint, messages in errors.items():
                self.errors.setdefault(endpoint, []).extend(messages)
            self.client_cpu_s += cpu_s

    def record(self, endpoint: str, seconds: float | None = None, error: str | None = None) -> None:
        with self._lock:
            if error is not None:
                self.errors.setdefault(endpoint, []).append(error[:200])
            else:
                self.latency.setdefault(endpoint, []).append(seconds)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _open(url: str, recorder: Recorder):
    """A user's client (it reads the app's API description, as a browser reads the page), or None on failure,
    recorded as an error of ``open``. The time limit is a patient browser's, not httpx's default 5 s."""
    start = time.perf_counter()
    try:
        client = loopback_client(url, timeout=REQUEST_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 (every failure a user would see counts)
        recorder.record("open", error=f"{type(exc).__name__}: {exc}")
        return None
    recorder.record("open", seconds=time.perf_counter() - start)
    return client


def _student(url: str, recorder: Recorder, user: int, rounds: int, think_s: float, distinct: int) -> None:
    """One user: opens the app, then swap -> random pair -> Grad-CAM -> gaps -> Compare per round."""
    rng = random.Random(user)
    if (client := _open(url, recorder)) is None:
        return
    for _ in range(rounds):
        steps = [("swap_pair", dict(upload_a=None, upload_b=None, index_a=rng.randrange(80),
                                    index_b=rng.randrange(80), seed=rng.randrange(1000))),
                 ("random_pair", {}),
                 ("gradcam", dict(upload=None, test_index=rng.randrange(1000))),
                 ("confidence_gaps", dict(seed=rng.randrange(distinct))),
                 ("compare", {})]
        for endpoint, inputs in steps:
            recorder.call(client, endpoint, **inputs)
            time.sleep(rng.uniform(0.5, 1.5) * think_s)
    client.close()


def _round_robin_client(url: str, recorder: Recorder, client_index: int, requests: int) -> None:
    """The issue's load test: ``requests`` requests round-robin over four endpoints, no think time."""
    if (client := _open(url, recorder)) is None:
        return
    order = [("swap_pair", lambda i: dict(upload_a=None, upload_b=None, index_a=i % 80, index_b=(i + 1) % 80,
                                          seed=i)),
             ("confidence_gaps", lambda i: dict(n_pairs=500, seed=0)),
             ("gradcam", lambda i: dict(upload=None, test_index=i)),
             ("compare", lambda i: {})]
    for i in range(requests):
        endpoint, inputs = order[(i + client_index) % len(order)]
        recorder.call(client, endpoint, **inputs(i))
    client.close()


def _play_class(url: str, args: argparse.Namespace) -> Recorder:
    """The users, spread over ``args.client_processes`` processes (threads within each), started together.

    Browsers are separate programs; 30 clients as threads of one Python process share one interpreter lock, and
    a client waiting for it to read its answer counted as server latency. Each process imports the client first
    (the barrier), so the class starts when all are ready; user i then starts at its place in the stagger.
    """
    context = multiprocessing.get_context("spawn")  # no fork of a process that has threads
    count = max(1, min(args.client_processes, args.users))
    ready, results = context.Barrier(count + 1), context.Queue()
    processes = [context.Process(target=_client_process, args=(url, list(range(i, args.users, count)), vars(args),
                                                               ready, results), daemon=True) for i in range(count)]
    for process in processes:
        process.start()
    ready.wait(timeout=REQUEST_TIMEOUT_S)
    recorder = Recorder(time.monotonic() + args.duration)
    for _ in processes:
        recorder.merge(*results.get(timeout=args.duration + 2 * REQUEST_TIMEOUT_S))
    for process in processes:
        process.join(timeout=30)
    return recorder


def _client_process(url: str, users: list[int], settings: dict, ready, results) -> None:
    """One client process of ``_play_class``: its users as threads; puts (latencies, errors, CPU seconds since the
    start) on ``results``."""
    import gradio_client  # noqa: F401 (imported before the start, not during the class)

    args = argparse.Namespace(**settings)
    ready.wait(timeout=REQUEST_TIMEOUT_S)
    start, cpu_before = time.monotonic(), time.process_time()
    recorder = Recorder(start + args.duration)
    spacing = 0.05 if args.round_robin else _stagger(args)

    def user(i: int) -> None:
        time.sleep(max(0.0, start + i * spacing - time.monotonic()))
        if args.round_robin:
            _round_robin_client(url, recorder, i, args.round_robin)
        else:
            _student(url, recorder, i, args.rounds, args.think, args.distinct)

    threads = [threading.Thread(target=user, args=(i,)) for i in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=args.duration + REQUEST_TIMEOUT_S)
    results.put((recorder.latency, recorder.errors, time.process_time() - cpu_before))


def measure_class(args: argparse.Namespace) -> dict:
    """One fresh app, ``args.users`` users at once (a class or the round-robin), optionally while a run trains."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with (tempfile.TemporaryDirectory(prefix="bench-runs-") as runs_dir,
          served_app(port, ["--runs-dir", runs_dir], env={"GRADIO_PROFILING": "1"}) as (process, _)):
        admin = loopback_client(url)
        run_id = None
        try:
            admin.predict(upload_a=None, upload_b=None, api_name="/swap_pair")  # loads the models
            if args.while_training:
                run_id = admin.predict(epochs=CLASS_TRAINING_EPOCHS, api_name="/launch_run")
                while run_state(admin, run_id)[1].startswith("0 %"):
                    time.sleep(0.2)
            _clear_traces(url)  # the class's requests only
            start, cpu_before = time.perf_counter(), _cpu_seconds(process.pid)
            steps_before = _training_steps(runs_dir, run_id)
            recorder = _play_class(url, args)
            wall = time.perf_counter() - start
            cpu_after = _cpu_seconds(process.pid)
            steps_during = _training_steps(runs_dir, run_id)
            cpu = {side: cpu_after[side] - before for side, before in cpu_before.items()}
            cpu["clients"] += recorder.client_cpu_s
            server = _server_latency(url)
            training = None
            if run_id:
                time.sleep(TRAINING_ALONE_S)
                training = {"state": run_state(admin, run_id)[0],
                            "steps_per_s_during_class": _steps_per_s(steps_before, steps_during),
                            "steps_per_s_alone": _steps_per_s(steps_during, _training_steps(runs_dir, run_id))}
            repeat = _repeated_server_time(admin, url)
        finally:
            stop_run(admin, run_id)
    done = sum(len(v) for k, v in recorder.latency.items() if k != "open")
    return {"users": args.users, "mode": f"round-robin x {args.round_robin}" if args.round_robin else
            f"class, {args.rounds} rounds, think {args.think:g} s, {args.distinct} distinct gaps settings",
            "wall_s": wall, "requests": done, "throughput_per_s": done / wall,
            "errors": {k: len(v) for k, v in recorder.errors.items()},
            "error_samples": [e for v in recorder.errors.values() for e in v[:2]],
            "endpoints": {k: {"n": len(v), "p50_s": _percentile(v, 0.5), "p95_s": _percentile(v, 0.95),
                              **server.get(k, {})} for k, v in sorted(recorder.latency.items())},
            "cpu_s": cpu, "repeated_identical_server_median_s": repeat,
            "training_run": training, "load_average_after": os.getloadavg()[0]}


def _training_steps(runs_dir: str, run_id: str | None) -> tuple[int, float] | None:
    """(step, when it was written) from a run's status.json, or None without a run."""
    if run_id is None:
        return None
    status = read_json(Path(runs_dir) / run_id / STATUS)
    return int(status.get("step", 0)), float(status["updated"])


def _steps_per_s(before: tuple[int, float], after: tuple[int, float]) -> float:
    return (after[0] - before[0]) / max(after[1] - before[1], 1e-9)


def _cpu_seconds(server_pid: int) -> dict[str, float]:
    """CPU seconds used so far by the app's process (from /proc) and by this one: on one machine the app and the
    clients share its cores, so the clients' share says how much of the latency is the benchmark's own."""
    with open(f"/proc/{server_pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    server = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime, in clock ticks
    return {"server": server, "clients": time.process_time()}  # the client processes report their own


def _clear_traces(url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{url}gradio_api/profiling/clear", method="POST")).close()


def _traces(url: str) -> list[dict]:
    """Gradio's own trace of every request since ``_clear_traces`` (the app runs with ``GRADIO_PROFILING=1``)."""
    with urllib.request.urlopen(f"{url}gradio_api/profiling/traces") as response:
        return json.load(response)


def _server_latency(url: str) -> dict[str, dict[str, float]]:
    """Per endpoint, p50 and p95 of the server's share of a request (Gradio's own trace: the queue wait, then
    pre-processing, the call and post-processing): what the latency is without the way to and from the client."""
    seconds: dict[str, list[float]] = {}
    for trace in _traces(url):
        seconds.setdefault(trace["fn_name"], []).append((trace["queue_wait_ms"] + trace["total_ms"]) / 1000)
    return {name: {"server_p50_s": _percentile(v, 0.5), "server_p95_s": _percentile(v, 0.95)}
            for name, v in seconds.items()}


def _repeated_server_time(client, url: str) -> dict[str, float]:
    """Median server time (Gradio's own trace: preprocess + the call + postprocess, without the queue wait) of
    five identical Compare and gaps requests, asked one at a time after the class."""
    medians = {}
    for endpoint, inputs in (("compare", {}), ("confidence_gaps", dict(n_pairs=500, seed=0))):
        client.predict(api_name=f"/{endpoint}", **inputs)  # computed (or cached) once
        _clear_traces(url)
        for _ in range(5):
            client.predict(api_name=f"/{endpoint}", **inputs)
        traces = [t for t in _traces(url) if t["fn_name"] == endpoint]
        medians[endpoint] = statistics.median(
            (t["preprocess_ms"] + t["fn_call_ms"] + t["postprocess_ms"]) / 1000 for t in traces)
    return medians


def _stagger(args: argparse.Namespace) -> float:
    """Users open the app over the first think time, as a class does after the teacher's "go"."""
    return args.think / max(1, args.users)


def print_class(result: dict) -> None:
    training = result["training_run"]
    print(f"{result['users']} users ({result['mode']}){', while a run trains' if training else ''}: "
          f"{result['requests']} requests in {result['wall_s']:.1f} s = {result['throughput_per_s']:.2f}/s, "
          f"errors {result['errors'] or 0}")
    cpus = " and ".join(f"{side} {seconds:.0f} s ({seconds / result['wall_s']:.2f} cores)"
                        for side, seconds in result["cpu_s"].items())
    print(f"  CPU time over the {os.cpu_count()} cores: {cpus}")
    if training:
        print(f"  the run trained {training['steps_per_s_during_class']:.1f} steps/s during the class, "
              f"{training['steps_per_s_alone']:.1f} alone after it")
    for endpoint, e in result["endpoints"].items():
        goal = CLASS_GOALS_P95.get(endpoint)
        verdict = f"goal p95 <= {goal:g} s  {'ok' if e['p95_s'] <= goal else 'OVER'}" if goal else ""
        server = (f"(server {e['server_p50_s']:.2f} / {e['server_p95_s']:.2f} s)  " if "server_p95_s" in e
                  else "")
        print(f"  {endpoint:16s} n {e['n']:4d}  p50 {e['p50_s']:6.2f} s  p95 {e['p95_s']:6.2f} s  {server}{verdict}")
    for endpoint, seconds in result["repeated_identical_server_median_s"].items():
        print(f"  repeated identical {endpoint}: {1000 * seconds:.0f} ms server time (median of 5; goal <= 50 ms)")
    for sample in result["error_samples"]:
        print(f"  error: {sample}")
