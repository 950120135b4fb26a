"""The web app's launcher: ``python app.py`` (or ``ips-explorer``) serves it on http://127.0.0.1:7860 (see --help)."""

from __future__ import annotations

import argparse
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="IPS Explorer: see intra-class patch swap self-distillation work")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only; "
                                                            "0.0.0.0 serves the network)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    parser.add_argument("--auth", metavar="USER:PASSWORD", help="ask for this user name and password")
    parser.add_argument("--runs-dir", default="runs", help="where the Train tab's runs go; every run folder in it is "
                                                           "offered as a checkpoint (default runs)")
    parser.add_argument("--max-runs", type=int, metavar="N", help="training processes at once; further runs "
                                                                  "wait in a queue (default: 1 per GPU, 1 on CPU)")
    parser.add_argument("--checkpoints-dir", default="checkpoints", help="demo checkpoints (default checkpoints)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N or mps")
    args = parser.parse_args(argv)
    if args.auth is not None and (":" not in args.auth or not all(args.auth.split(":", 1))):
        parser.error("--auth needs USER:PASSWORD, both non-empty")
    if args.max_runs is not None and args.max_runs < 1:
        parser.error(f"--max-runs must be at least 1; got {args.max_runs}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from explorer.analysis.cam import preload_cam  # after parsing, so --help is instant
    from explorer.training.runs import RunManager
    from explorer.ui import build_app

    runs = RunManager(args.runs_dir, max_concurrent=args.max_runs)  # reconciles runs an earlier app left behind
    try:
        demo = build_app(runs, checkpoints_dir=args.checkpoints_dir, device=args.device)
        try:
            demo.launch(server_name=args.host, server_port=args.port, share=args.share,
                        auth=tuple(args.auth.split(":", 1)) if args.auth else None, show_error=True,
                        prevent_thread_lock=True)
        except OSError as exc:  # Gradio's advice (GRADIO_SERVER_PORT) does not apply: --port sets the port
            if "empty port" not in str(exc):
                raise
            print(f"ips-explorer: error: cannot serve on {args.host}:{args.port}, the port is in use (or the address "
                  f"is not this machine's); choose another port, e.g. python app.py --port {args.port + 1}",
                  file=sys.stderr)
            return 1
        preload_cam()  # once serving: the first Grad-CAM then answers in milliseconds, not seconds
        demo.block_thread()
    finally:
        runs.close()  # running trainings go on; the next app adopts them
    return 0
