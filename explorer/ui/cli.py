"""The web app's launcher: ``python app.py`` (or ``ips-explorer``) serves it on http://127.0.0.1:7860 (see --help).

Serving a class (``--host 0.0.0.0 --auth USER:PASSWORD``) adds what a shared server needs, around Gradio:

- ``Gatekeeper`` (an ASGI middleware given to Gradio's FastAPI app): before login, the HTML page carries no API
  description (Gradio 6 embeds ``window.gradio_api_info`` in the login page although ``/gradio_api/info``
  answers 401); and wrong passwords are throttled per client address (``LOGIN_ATTEMPTS`` per
  ``LOGIN_WINDOW_S``, then 429 until the window has passed).
- a warning at start when the app is reachable from the network (``--share`` or a host other than loopback)
  without ``--auth``: any visitor can then start, cancel and delete training runs.
- ``max_file_size`` (``MAX_UPLOAD``: Gradio refuses larger uploads before writing them to disk) and cache
  cleanup (``delete_cache``: generated files older than a day are deleted every hour).
- the app's descriptions (``/config``, ``/gradio_api/info``) answered from memory after their first answer
  (``Gatekeeper``), and the grad-cam package imported before serving: both held up a class opening the app.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
import warnings
from collections import OrderedDict, deque

from explorer.training import slurm  # the executor options (submitit is imported only to submit)

__all__ = ["CACHE_CLEANUP", "LOGIN_ATTEMPTS", "LOGIN_WINDOW_S", "MAX_UPLOAD", "Gatekeeper", "exposure_warning",
           "main", "parse_args"]

LOGIN_ATTEMPTS, LOGIN_WINDOW_S = 10, 60.0  # wrong passwords per client address and window
MAX_UPLOAD = "20mb"  # the uploads' own check (explorer.analysis.uploads) refuses more than 20 MB as well
CACHE_CLEANUP = (3600, 86400)  # every hour, delete generated files older than a day
LOOPBACK = ("127.0.0.1", "localhost", "::1")
DESCRIPTIONS_KEPT = 64  # answers of /config and /gradio_api/info kept (by address and user; Gatekeeper)
API_INFO = re.compile(rb"window\.gradio_api_info = .*?;</script>", re.DOTALL)


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
    parser.add_argument("--max-queued", type=int, default=8, metavar="N",
                        help="runs that may wait for a free slot at once; further launches are refused (default 8; "
                             "a study's runs are counted by --max-queued-studies)")
    parser.add_argument("--max-queued-studies", type=int, default=1, metavar="N",
                        help="studies that may have runs waiting for a slot at once; a further study is refused "
                             "(default 1)")
    parser.add_argument("--checkpoints-dir", default="checkpoints", help="demo checkpoints (default checkpoints)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N or mps")
    slurm.add_arguments(parser)  # --executor slurm: the Train and Study tabs may send runs to SLURM too
    args = parser.parse_args(argv)
    try:
        args.slurm_options = slurm.options_from_args(args) if args.executor == "slurm" else None
    except slurm.SlurmError as exc:
        parser.error(str(exc))
    if args.auth is not None and (":" not in args.auth or not all(args.auth.split(":", 1))):
        parser.error("--auth needs USER:PASSWORD, both non-empty")
    if args.max_runs is not None and args.max_runs < 1:
        parser.error(f"--max-runs must be at least 1; got {args.max_runs}")
    for flag, value in (("--max-queued", args.max_queued), ("--max-queued-studies", args.max_queued_studies)):
        if value < 0:
            parser.error(f"{flag} must be at least 0; got {value}")
    return args


def exposure_warning(args: argparse.Namespace) -> str | None:
    """What to tell the teacher when the app is reachable from the network without a password, else None."""
    if args.auth or (args.host in LOOPBACK and not args.share):
        return None
    where = "a public gradio.live link" if args.share else f"{args.host}:{args.port}"
    return (f"IPS Explorer is served on {where} without --auth: anyone who can reach it can start, cancel and "
            "delete training runs. Add --auth USER:PASSWORD.")


class Gatekeeper:
    """ASGI middleware: no API description in pages served before login; wrong passwords throttled per address;
    the app's descriptions (``/config``, ``/gradio_api/info``) answered from memory after their first answer.

    ``scope["app"]`` is Gradio's FastAPI app, which holds the login tokens (``tokens``) and the cookie name
    (``cookie_id``); without ``auth`` only the descriptions' cache applies.

    Why the cache: Gradio builds these two answers anew for every request and FastAPI encodes them on the server's only
    event loop (``jsonable_encoder`` of a few hundred KB each), so a class opening the app at once would hold every
    other request up, swaps included. They do not change while the app runs; an answer depends only on the request's
    path and query, the address it was asked under (Gradio writes the app's URL into it) and the logged-in user, which
    make the key. Requests for a key whose first answer is being computed wait for it (else clients arriving together
    would each compute it: the same stall).
    Only answers of authorised requests are stored or served: a request before login gets Gradio's own 401.
    """

    DESCRIPTIONS = ("/config", "/gradio_api/info")
    ADDRESS_HEADERS = (b"host", b"x-forwarded-host", b"x-forwarded-proto", b"x-gradio-server")

    def __init__(self, app, attempts: int = LOGIN_ATTEMPTS, window_s: float = LOGIN_WINDOW_S) -> None:
        self.app, self.attempts, self.window_s = app, attempts, window_s
        self.failures: dict[str, deque[float]] = {}
        self.descriptions: OrderedDict[tuple, tuple[dict, bytes]] = OrderedDict()
        self.computing: dict[tuple, asyncio.Event] = {}  # keys whose first answer is being computed

    async def __call__(self, scope, receive, send) -> None:
        gradio = scope.get("app")
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        needs_login = bool(getattr(gradio, "auth", None))
        if needs_login and scope["path"].rstrip("/") == "/login" and scope["method"] == "POST":
            await self._login(scope, receive, send)
            return
        if scope["method"] != "GET":  # the queue's requests: nothing to do here, not even reading the cookie
            await self.app(scope, receive, send)
            return
        user = self._user(scope, gradio) if needs_login else None
        if needs_login and user is None:
            await self._without_api_info(scope, receive, send)
        elif scope["path"].rstrip("/") in self.DESCRIPTIONS:
            await self._description(scope, receive, send, user)
        else:
            await self.app(scope, receive, send)

    @staticmethod
    def _user(scope, gradio) -> str | None:
        """The logged-in user of the request's login cookie, None without one."""
        cookies = dict(part.strip().split("=", 1) for header, value in scope["headers"] if header == b"cookie"
                       for part in value.decode("latin-1").split(";") if "=" in part)
        for name in ("access-token", "access-token-unsecure"):
            if (user := gradio.tokens.get(cookies.get(f"{name}-{gradio.cookie_id}"))) is not None:
                return user
        return None

    async def _description(self, scope, receive, send, user: str | None) -> None:
        """``/config`` or ``/gradio_api/info``: the stored answer for this key, else Gradio's (stored if 200)."""
        headers = dict(scope["headers"])
        key = (scope["path"], scope["query_string"], scope.get("scheme"), scope.get("root_path"), user,
               *(headers.get(name) for name in self.ADDRESS_HEADERS))
        if key in self.computing:  # a class arriving at once: the first request computes, the others wait for it
            await self.computing[key].wait()
        if (stored := self.descriptions.get(key)) is not None:
            self.descriptions.move_to_end(key)
            await send(stored[0])
            await send({"type": "http.response.body", "body": stored[1]})
            return
        start, body, done = None, [], self.computing.setdefault(key, asyncio.Event())

        async def keep(message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif start is not None and start["status"] == 200:
                body.append(message.get("body", b""))
                if not message.get("more_body"):
                    self.descriptions[key] = (start, b"".join(body))
                    while len(self.descriptions) > DESCRIPTIONS_KEPT:
                        self.descriptions.popitem(last=False)
            await send(message)

        try:
            await self.app(scope, receive, keep)
        finally:
            if self.computing.get(key) is done:
                del self.computing[key]
            done.set()

    async def _login(self, scope, receive, send) -> None:
        client = (scope.get("client") or ("?",))[0]
        now = time.monotonic()
        recent = self.failures.setdefault(client, deque())
        while recent and now - recent[0] > self.window_s:
            recent.popleft()
        if len(recent) >= self.attempts:
            wait = int(self.window_s - (now - recent[0])) + 1
            await _plain(send, 429, f"Too many wrong passwords; try again in {wait} s.".encode())
            return

        async def record(message) -> None:
            if message["type"] == "http.response.start" and message["status"] in (400, 401):
                recent.append(time.monotonic())
            await send(message)

        await self.app(scope, receive, record)

    async def _without_api_info(self, scope, receive, send) -> None:
        """The answer with ``window.gradio_api_info`` emptied when it is an HTML page (the login page)."""
        start, body = None, []

        async def buffer(message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                if not any(k == b"content-type" and v.startswith(b"text/html") for k, v in message["headers"]):
                    await send(message)
                    start = None
                return
            if start is None:
                await send(message)
                return
            body.append(message.get("body", b""))
            if not message.get("more_body"):
                page = API_INFO.sub(b"window.gradio_api_info = null;</script>", b"".join(body))
                headers = [(k, v) for k, v in start["headers"] if k != b"content-length"]
                await send({**start, "headers": [*headers, (b"content-length", str(len(page)).encode())]})
                await send({"type": "http.response.body", "body": page})

        await self.app(scope, receive, buffer)


async def _plain(send, status: int, text: bytes) -> None:
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(text)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": text})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from starlette.middleware import Middleware

    from explorer.analysis.cam import preload_cam  # after parsing, so --help is instant
    from explorer.checkpoints import CheckpointError
    from explorer.training.runs import RunManager
    from explorer.ui.app import build_app

    if (warning := exposure_warning(args)) is not None:
        warnings.warn(warning, stacklevel=1)
    # the run manager reconciles the runs an earlier app left behind
    runs = RunManager(args.runs_dir, max_concurrent=args.max_runs, max_queued=args.max_queued,
                      max_queued_studies=args.max_queued_studies, slurm_options=args.slurm_options)
    try:
        # Before serving, not after: the grad-cam package's import takes seconds and holds the interpreter for most
        # of them, so a class opening the app meanwhile would have every request stalled until it ended; the first
        # Grad-CAM then needs no import.
        preload_cam()
        try:
            demo = build_app(runs, checkpoints_dir=args.checkpoints_dir, device=args.device)
        except CheckpointError as exc:  # e.g. --checkpoints-dir and --runs-dir are two folders with one name
            print(f"ips-explorer: error: {exc}", file=sys.stderr)
            return 2
        demo.delete_cache = CACHE_CLEANUP
        try:
            demo.launch(server_name=args.host, server_port=args.port, share=args.share,
                        auth=tuple(args.auth.split(":", 1)) if args.auth else None, show_error=True,
                        prevent_thread_lock=True, max_file_size=MAX_UPLOAD,
                        app_kwargs={"middleware": [Middleware(Gatekeeper)]})
        except OSError as exc:  # Gradio's advice (GRADIO_SERVER_PORT) does not apply: --port sets the port
            if "empty port" not in str(exc):
                raise
            print(f"ips-explorer: error: cannot serve on {args.host}:{args.port}, the port is in use (or the address "
                  f"is not this machine's); choose another port, e.g. python app.py --port {args.port + 1}",
                  file=sys.stderr)
            return 1
        demo.block_thread()
    finally:
        runs.close()  # running trainings go on; the next app adopts them
    return 0
