"""The web app's launcher: ``python app.py`` (or ``ips-explorer``) serves it on http://127.0.0.1:7860 (see --help).

Serving a class (``--host 0.0.0.0 --auth USER:PASSWORD``) adds what a shared server needs, around Gradio:

- ``Gatekeeper`` (an ASGI middleware given to Gradio's FastAPI app): before login, the HTML page carries no API
  description (Gradio 6 embeds ``window.gradio_api_info`` in the login page although ``/gradio_api/info``
  answers 401); and wrong passwords are throttled per (client address, user name) (``LoginThrottle``: after
  ``LOGIN_FREE_ATTEMPTS`` failures each further try waits a delay that doubles per failure, up to
  ``LOGIN_MAX_DELAY_S``, answered 429 meanwhile; a success clears it). The address is the connection's: the app does
  not trust X-Forwarded-For (``FORWARDED_ALLOW_IPS`` empty unless the operator sets it), so no header lets a client
  choose its identity; behind ``--share`` or NAT, where a class shares one address, one person's typos delay only
  the tries of that user name, by seconds, not everybody's for a minute.
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
import os
import re
import signal
import sys
import time
import warnings
from collections import OrderedDict
from urllib.parse import parse_qs

from explorer.argparsing import OneLineParser
from explorer.training import slurm_options as slurm  # torch-free: --help and a refused flag import nothing heavy

__all__ = ["CACHE_CLEANUP", "LOGIN_FIRST_DELAY_S", "LOGIN_FREE_ATTEMPTS", "LOGIN_MAX_DELAY_S", "MAX_UPLOAD",
           "Gatekeeper", "LoginThrottle", "exposure_warning", "main", "parse_args", "serving_banner"]

LOGIN_FREE_ATTEMPTS, LOGIN_FIRST_DELAY_S, LOGIN_MAX_DELAY_S = 5, 5.0, 60.0  # per (address, user name)
LOGIN_KEYS_KEPT, LOGIN_BODY_MAX = 10_000, 64 * 1024  # throttled (address, user) pairs remembered; a login form's size
MAX_UPLOAD = "20mb"  # the uploads' own check (explorer.analysis.uploads) refuses more than 20 MB as well
CACHE_CLEANUP = (3600, 86400)  # every hour, delete generated files older than a day
LOOPBACK = ("127.0.0.1", "localhost", "::1")
DESCRIPTIONS_KEPT = 64  # answers of /config and /gradio_api/info kept (by address and user; Gatekeeper)
API_INFO = re.compile(rb"window\.gradio_api_info = .*?;</script>", re.DOTALL)
# An empty description, not null: given null, Gradio's page asks the server (an old path, /info) and logs a 404
# and "Could not get API info" in the console before login.
NO_API_INFO = b'window.gradio_api_info = {"named_endpoints": {}, "unnamed_endpoints": {}};</script>'
AUTH_MESSAGE = ("<b>IPS Explorer</b>: intra-class patch swap self-distillation, step by step. Sign in with the user "
                "name and password you were given.")  # shown on Gradio's login page, under its "Login"
# Added to a page served before login: its title, and the throttle's answer shown on the page. Gradio's login form
# shows "Incorrect credentials" for a 400 and nothing for any other answer, so a right password refused while
# its (address, user name) must wait failed without a word.
LOGIN_PAGE_HEAD = rb"""<title>IPS Explorer: sign in</title><script>(() => {
  const send = window.fetch.bind(window);
  window.fetch = async (request, options) => {
    const answer = await send(request, options);
    const url = new URL(request instanceof Request ? request.url : String(request), location.href);
    if (!url.pathname.replace(/\/$/, "").endsWith("/login")) return answer;
    let note = document.getElementById("ips-login-wait");
    if (answer.status !== 429) { if (note) note.remove(); return answer; }
    if (!note) {
      note = document.createElement("p");
      note.id = "ips-login-wait";
      note.setAttribute("role", "alert");
      note.style.cssText = "max-width:480px;margin:1em auto;padding:.75em 1em;border-radius:8px;" +
        "background:#fee2e2;color:#991b1b;text-align:center";
      document.body.prepend(note);
    }
    note.textContent = await answer.clone().text();
    return answer;
  };
})();</script>"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(description="IPS Explorer: see intra-class patch swap self-distillation work")
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


def serving_banner(local_url: str, share: bool) -> str:
    """Where the app is served, in our flags' words: Gradio's own banner, silenced, says "set `share=True` in
    `launch()`", which a user of ``python app.py`` cannot do (with ``--share`` Gradio still prints the public link
    or why it could not make one)."""
    hint = "" if share else "\n* For a public gradio.live link, start it with --share (and --auth USER:PASSWORD)"
    return f"* IPS Explorer is running on local URL:  {local_url}{hint}"


def exposure_warning(args: argparse.Namespace) -> str | None:
    """What to tell the teacher when the app is reachable from the network without a password, else None."""
    if args.auth or (args.host in LOOPBACK and not args.share):
        return None
    where = "a public gradio.live link" if args.share else f"{args.host}:{args.port}"
    return (f"IPS Explorer is served on {where} without --auth: anyone who can reach it can start, cancel and "
            "delete training runs. Add --auth USER:PASSWORD.")


class LoginThrottle:
    """Wrong passwords per (client address, user name): ``free`` failures pass; after them each try must wait
    ``first_delay_s`` x 2^(failures - free) seconds (at most ``max_delay_s``) after the last failure. A success
    clears its pair; the oldest pairs are forgotten beyond ``LOGIN_KEYS_KEPT`` (an attacker varying user names
    cannot fill the memory)."""

    def __init__(self, free: int = LOGIN_FREE_ATTEMPTS, first_delay_s: float = LOGIN_FIRST_DELAY_S,
                 max_delay_s: float = LOGIN_MAX_DELAY_S) -> None:
        self.free, self.first_delay_s, self.max_delay_s = free, first_delay_s, max_delay_s
        self.failures: OrderedDict[tuple[str, str], tuple[int, float]] = OrderedDict()  # key -> (count, last time)

    def wait_s(self, key: tuple[str, str], now: float) -> float:
        """Seconds the pair ``key`` must still wait before its next try (0: it may try now)."""
        count, last = self.failures.get(key, (0, now))
        if count < self.free:
            return 0.0
        delay = min(self.max_delay_s, self.first_delay_s * 2 ** (count - self.free))
        return max(0.0, last + delay - now)

    def failed(self, key: tuple[str, str], now: float) -> None:
        self.failures[key] = (self.failures.get(key, (0, now))[0] + 1, now)
        self.failures.move_to_end(key)
        while len(self.failures) > LOGIN_KEYS_KEPT:
            self.failures.popitem(last=False)

    def succeeded(self, key: tuple[str, str]) -> None:
        self.failures.pop(key, None)


def _login_user(body: bytes, content_type: bytes) -> str:
    """The user name a login form posts (urlencoded or multipart), "" when it names none."""
    if content_type.startswith(b"multipart/"):
        found = re.search(rb'name="username"\r\n(?:[^\r\n]+\r\n)*\r\n([^\r]*)\r\n', body)
        return found.group(1).decode("utf-8", "replace")[:200] if found else ""
    return (parse_qs(body.decode("latin-1")).get("username") or [""])[0][:200]


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

    def __init__(self, app, throttle: LoginThrottle | None = None) -> None:
        self.app, self.throttle = app, throttle or LoginThrottle()
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
        """A login: 429 while its (address, user name) must wait, else Gradio's answer, which is counted."""
        body, more = b"", True
        while more and len(body) <= LOGIN_BODY_MAX:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        content_type = dict(scope["headers"]).get(b"content-type", b"")
        key = ((scope.get("client") or ("?",))[0], _login_user(body, content_type))
        wait = self.throttle.wait_s(key, time.monotonic())
        if wait > 0:
            await _plain(send, 429, f"Too many wrong passwords for this user; try again in {wait:.0f} s.".encode())
            return
        replayed = False

        async def replay():  # Gradio reads the body this middleware has read
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def record(message) -> None:
            if message["type"] == "http.response.start":
                if message["status"] in (400, 401):
                    self.throttle.failed(key, time.monotonic())
                elif message["status"] < 400:
                    self.throttle.succeeded(key)
            await send(message)

        await self.app(scope, replay, record)

    async def _without_api_info(self, scope, receive, send) -> None:
        """The answer with ``window.gradio_api_info`` emptied when it is an HTML page (the login page), which gets the
    app's title and a script that shows the login throttle's answer (``LOGIN_PAGE_HEAD``)."""
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
                page = API_INFO.sub(NO_API_INFO, b"".join(body))
                page = page.replace(b"</head>", LOGIN_PAGE_HEAD + b"</head>", 1)
                headers = [(k, v) for k, v in start["headers"] if k != b"content-length"]
                await send({**start, "headers": [*headers, (b"content-length", str(len(page)).encode())]})
                await send({"type": "http.response.body", "body": page})

        await self.app(scope, receive, buffer)


def _stop_serving(_signum: int, _frame: object) -> None:
    """SIGTERM as Ctrl-C: Gradio's ``block_thread`` closes the server on KeyboardInterrupt, and ``main`` then closes
    the run manager, which the default SIGTERM (an immediate exit) skipped."""
    raise KeyboardInterrupt


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
    os.environ.setdefault("FORWARDED_ALLOW_IPS", "")  # uvicorn: trust no X-Forwarded-For (the login throttle's key)
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
                        auth_message=AUTH_MESSAGE if args.auth else None,
                        prevent_thread_lock=True, max_file_size=MAX_UPLOAD, quiet=True,
                        app_kwargs={"middleware": [Middleware(Gatekeeper)]})
        except OSError as exc:  # Gradio's advice (GRADIO_SERVER_PORT) does not apply: --port sets the port
            if "empty port" not in str(exc):
                raise
            print(f"ips-explorer: error: cannot serve on {args.host}:{args.port}, the port is in use (or the address "
                  f"is not this machine's); choose another port, e.g. python app.py --port {args.port + 1}",
                  file=sys.stderr)
            return 1
        print(serving_banner(demo.local_url, args.share), flush=True)
        signal.signal(signal.SIGTERM, _stop_serving)  # a service manager's stop, like Ctrl-C, ends in the finally
        demo.block_thread()
    finally:
        runs.close()  # running trainings go on; the next app adopts them; queued runs end "interrupted"
    return 0
