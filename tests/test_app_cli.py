"""app.py: its options, and the real launcher serving on 127.0.0.1 behind --auth."""

import asyncio
import http.client
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from explorer.ui.cli import (
    LOGIN_FREE_ATTEMPTS,
    LOGIN_PAGE_HEAD,
    NO_API_INFO,
    Gatekeeper,
    LoginThrottle,
    exposure_warning,
    parse_args,
)
from tests.helpers import CHROMIUM, CHROMIUM_ARGS, ROOT, free_port


def test_defaults_bind_this_machine_only():
    args = parse_args([])
    assert args.host == "127.0.0.1" and args.port == 7860 and not args.share and args.auth is None
    assert args.runs_dir == "runs" and args.checkpoints_dir == "checkpoints"
    assert args.max_runs is None  # the run manager's default: 1 per GPU, 1 on CPU
    assert args.max_queued == 8 and args.max_queued_studies == 1


@pytest.mark.parametrize("flag", ["--max-queued", "--max-queued-studies"])
def test_max_queued_must_not_be_negative(capsys, flag):
    assert getattr(parse_args([flag, "0"]), flag[2:].replace("-", "_")) == 0
    with pytest.raises(SystemExit) as info:
        parse_args([flag, "-1"])
    assert info.value.code == 2 and f"{flag} must be at least 0; got -1" in capsys.readouterr().err


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


def _upload_status(port: int, cookies: str, size: int) -> int:
    """The status of a ``size``-byte upload; the server may close the connection before the body is sent."""
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + b"x" * size + f"\r\n--{boundary}--\r\n".encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", "/gradio_api/upload", body=body, headers={
            "Cookie": cookies, "Content-Type": f"multipart/form-data; boundary={boundary}"})
    except OSError:
        pass  # refused while sending: the answer is still there to read
    try:
        return connection.getresponse().status
    finally:
        connection.close()


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
        for page in ("/", "/gradio_api/runs"):  # the login page: no API description, no server path
            with urllib.request.urlopen(f"{base}{page}", timeout=10) as response:
                html = response.read().decode()
            assert NO_API_INFO.decode() in html and "swap_pair" not in html
            assert "<title>IPS Explorer: sign in</title>" in html and "ips-login-wait" in html  # LOGIN_PAGE_HEAD
            assert '"auth_message":"\\u003cb\\u003eIPS Explorer\\u003c/b\\u003e: ' in html  # the login form names it
            assert str(ROOT) not in html and "swap_pair" not in html
        login = urllib.parse.urlencode({"username": "ada", "password": "lovelace"}).encode()
        with urllib.request.urlopen(f"{base}/login", data=login, timeout=10) as response:
            assert response.status == 200
            cookies = "; ".join(c.split(";")[0] for c in response.headers.get_all("set-cookie"))
        logged_in = urllib.request.Request(f"{base}/", headers={"Cookie": cookies})
        with urllib.request.urlopen(logged_in, timeout=10) as response:
            assert "swap_pair" in response.read().decode()  # after login the page describes the API
        assert _upload_status(port, cookies, 21 * 2**20) == 413  # max_file_size: refused before it is on disk
        if CHROMIUM is not None:
            _sign_in_with_a_browser(base)
        wrong = urllib.parse.urlencode({"username": "ada", "password": "wrong"}).encode()
        codes = []
        for i in range(LOGIN_FREE_ATTEMPTS + 2):  # each claiming another address: the header is not trusted
            forged = urllib.request.Request(f"{base}/login", data=wrong, headers={"X-Forwarded-For": f"10.0.0.{i}"})
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(forged, timeout=10)
            codes.append(info.value.code)
        assert codes == [400] * LOGIN_FREE_ATTEMPTS + [429, 429]  # wrong passwords are throttled
        process.terminate()  # SIGTERM, as a service manager stops it: the app closes its run manager and exits 0
        assert process.wait(timeout=60) == 0, process.stdout.read()
        banner = process.stdout.read()  # in our flags' words: Gradio's said "set `share=True` in `launch()`"
        assert f"running on local URL:  {base}" in banner and "start it with --share" in banner
        assert "share=True" not in banner
    finally:
        process.terminate()
        process.wait(timeout=30)


def _sign_in_with_a_browser(base: str) -> None:
    """The login page in Chromium: no error in the console before or after signing in (with a null API description
    the page asked for /info, logged a 404 and "Could not get API info"), and the first pair drawn after signing in."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("console", lambda message: message.type == "error" and errors.append(message.text))
            page.on("response", lambda answer: answer.status >= 400 and errors.append(f"{answer.status} {answer.url}"))
            page.goto(base)
            page.locator("input[type=password]").wait_for(timeout=60_000)
            page.wait_for_load_state("networkidle")
            assert errors == [], "before signing in"
            page.locator("input[type=text]").first.fill("ada")
            page.locator("input[type=password]").fill("lovelace")
            page.keyboard.press("Enter")
            page.locator("#swap-image-0 img").wait_for(timeout=90_000)  # the first pair drawn: the API answers
            assert errors == [], "after signing in"
        finally:
            browser.close()


@pytest.mark.parametrize(("options", "warned"), [
    ([], False), (["--host", "0.0.0.0"], True), (["--share"], True), (["--host", "0.0.0.0", "--auth", "a:b"], False),
    (["--host", "localhost"], False)])
def test_a_server_reachable_from_the_network_without_auth_is_warned_about(options, warned):
    warning = exposure_warning(parse_args(options))
    assert (warning is not None) == warned
    if warned:
        assert "without --auth" in warning and "delete training runs" in warning


class _FakeGradio:
    """What Gatekeeper reads of Gradio's app: auth, the login tokens and the cookie id."""

    def __init__(self, auth=None, tokens=None) -> None:
        self.auth, self.tokens, self.cookie_id = auth, tokens or {}, "x1"


def _get(gatekeeper, gradio, path, host=b"class:7860", cookie=None, query=b"") -> tuple[int, bytes]:
    """One GET through ``gatekeeper``: (status, body)."""
    return asyncio.run(_async_get(gatekeeper, gradio, path, host, cookie, query))


async def _async_get(gatekeeper, gradio, path, host=b"class:7860", cookie=None, query=b"") -> tuple[int, bytes]:
    headers = [(b"host", host)] + ([(b"cookie", cookie)] if cookie else [])
    scope = {"type": "http", "method": "GET", "path": path, "query_string": query, "headers": headers,
             "scheme": "http", "root_path": "", "app": gradio}
    sent = []

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        sent.append(message)

    await gatekeeper(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_the_apps_descriptions_are_encoded_once_per_address_and_user():
    """Gradio encoded /config and /gradio_api/info anew for every client, on the event loop (107 ms for the API
    description here): a class opening the app at once stalled every request."""
    answered = []

    async def gradio_routes(scope, receive, send):
        answered.append((scope["path"], dict(scope["headers"]).get(b"host")))
        user = scope["app"].tokens.get(next((v.split(b"=")[1].decode() for k, v in scope["headers"]
                                             if k == b"cookie"), None))
        status = 401 if scope["app"].auth and user is None else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": f"{scope['path']} {user} {len(answered)}".encode()})

    open_app, gatekeeper = _FakeGradio(), Gatekeeper(gradio_routes)
    first = _get(gatekeeper, open_app, "/config")
    assert _get(gatekeeper, open_app, "/config") == first == (200, b"/config None 1")  # from memory
    assert _get(gatekeeper, open_app, "/gradio_api/info") == (200, b"/gradio_api/info None 2")
    assert _get(gatekeeper, open_app, "/config", host=b"other:7860") == (200, b"/config None 3")  # its own root URL
    assert _get(gatekeeper, open_app, "/config", query=b"deep_link=abc") == (200, b"/config None 4")
    assert _get(gatekeeper, open_app, "/gradio_api/runs")[1] == b"/gradio_api/runs None 5"
    assert _get(gatekeeper, open_app, "/gradio_api/runs")[1] == b"/gradio_api/runs None 6"  # not a description
    assert len(answered) == 6

    answered.clear()
    class_app = _FakeGradio(auth=[("ada", "pw")], tokens={"t-ada": "ada", "t-bob": "bob"})
    gatekeeper = Gatekeeper(gradio_routes)
    assert _get(gatekeeper, class_app, "/config") == (401, b"/config None 1")  # before login: Gradio's 401
    assert _get(gatekeeper, class_app, "/config") == (401, b"/config None 2")  # a refusal is not kept
    assert _get(gatekeeper, class_app, "/config", cookie=b"access-token-x1=t-ada")[1] == b"/config ada 3"
    assert _get(gatekeeper, class_app, "/config", cookie=b"access-token-x1=t-ada")[1] == b"/config ada 3"
    assert _get(gatekeeper, class_app, "/config", cookie=b"access-token-x1=t-bob")[1] == b"/config bob 4"
    assert _get(gatekeeper, class_app, "/config", cookie=b"access-token-x1=stolen") == (401, b"/config None 5")
    assert len(answered) == 5


def test_a_class_asking_for_a_description_at_once_computes_it_once():
    """30 clients arriving within a second all missed the empty cache and computed the config 30 times."""
    answered = []

    async def slow_gradio(scope, receive, send):
        answered.append(scope["path"])
        await asyncio.sleep(0.2)  # Gradio building and encoding the config
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": f"config {len(answered)}".encode()})

    async def class_of(n: int) -> list:
        gatekeeper = Gatekeeper(slow_gradio)
        return await asyncio.gather(*(_async_get(gatekeeper, _FakeGradio(), "/config") for _ in range(n)))

    assert asyncio.run(class_of(30)) == [(200, b"config 1")] * 30 and answered == ["/config"]


def _login(gatekeeper, address, user, password, multipart=False) -> tuple[int, bytes]:
    """One login POST from ``address`` through ``gatekeeper`` to a Gradio whose only password is "right"."""
    if multipart:
        body = (f'--b\r\nContent-Disposition: form-data; name="username"\r\n\r\n{user}\r\n--b\r\n'
                f'Content-Disposition: form-data; name="password"\r\n\r\n{password}\r\n--b--\r\n').encode()
        content_type = b"multipart/form-data; boundary=b"
    else:
        body, content_type = urllib.parse.urlencode({"username": user, "password": password}).encode(), \
            b"application/x-www-form-urlencoded"
    scope = {"type": "http", "method": "POST", "path": "/login", "query_string": b"", "client": (address, 5000),
             "headers": [(b"content-type", content_type), (b"x-forwarded-for", b"10.9.9.9")],
             "app": _FakeGradio(auth=[(user, "right")])}
    parts = [body[:7], body[7:]]  # the body in two messages, as a server may deliver it
    sent = []

    async def receive():
        return {"type": "http.request", "body": parts.pop(0), "more_body": bool(parts)}

    async def send(message):
        sent.append(message)

    async def gradio_login(scope, receive, send):
        form, more = b"", True
        while more:
            message = await receive()
            form, more = form + message["body"], message.get("more_body", False)
        status = 200 if b"right" in form else 400
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok" if status == 200 else b"wrong"})

    asyncio.run(Gatekeeper(gradio_login, gatekeeper)(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_wrong_passwords_delay_only_their_address_and_user_and_the_delay_grows(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    throttle = LoginThrottle(free=3, first_delay_s=5.0, max_delay_s=30.0)
    for _ in range(3):
        assert _login(throttle, "1.2.3.4", "ada", "wrong") == (400, b"wrong")
    assert _login(throttle, "1.2.3.4", "ada", "right") == (429, b"Too many wrong passwords for this user; try again "
                                                                 b"in 5 s.")  # the right password waits too
    assert _login(throttle, "1.2.3.4", "bob", "right", multipart=True)[0] == 200  # another user at that address
    assert _login(throttle, "5.6.7.8", "ada", "wrong")[0] == 400  # ada at another address
    waits = []
    for _ in range(4):  # each failure after the free ones doubles the wait, up to the ceiling
        waits.append(throttle.wait_s(("1.2.3.4", "ada"), now[0]))
        now[0] += waits[-1]
        assert _login(throttle, "1.2.3.4", "ada", "wrong", multipart=True)[0] == 400
    assert waits == [5.0, 10.0, 20.0, 30.0]
    now[0] += 30.0
    assert _login(throttle, "1.2.3.4", "ada", "right")[0] == 200  # a success clears the pair
    assert _login(throttle, "1.2.3.4", "ada", "wrong")[0] == 400 and throttle.wait_s(("1.2.3.4", "ada"), now[0]) == 0


_LOGIN_PAGE_STAGE = """
const answers = [[429, "Too many wrong passwords for this user; try again in 5 s."], [400, "wrong"]];
const body = {children: [], prepend(element) { this.children.unshift(element); }};
global.location = {href: "http://class:7860/"};
global.Request = class {};
global.document = {body, getElementById: id => body.children.find(c => c.id === id) || null, createElement: () => ({
  style: {}, setAttribute(name, value) { this[name] = value; },
  remove() { body.children.splice(body.children.indexOf(this), 1); }})};
global.window = {fetch: async () => {
  const [status, text] = answers.shift();
  return {status, clone: () => ({text: async () => text})};
}};
SCRIPT
(async () => {
  const shown = [];
  for (const _ of [1, 2]) {
    await window.fetch("http://class:7860/login", {method: "POST"});
    shown.push(body.children.map(c => [c.id, c.role, c.textContent]));
  }
  console.log(JSON.stringify(shown));
})();
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node runs the login page's script")
def test_the_login_page_shows_the_throttles_wait_and_drops_it_at_the_next_answer():
    """Gradio's login form shows nothing for a 429, so a right password refused while the throttle made it wait
    failed silently. The page's script (LOGIN_PAGE_HEAD), run in node on a stand-in page: the wait is shown as an
    alert and leaves at the next answer (Gradio's own "Incorrect credentials" then speaks)."""
    script = LOGIN_PAGE_HEAD.decode().split("<script>")[1].split("</script>")[0]
    result = subprocess.run(["node", "-e", _LOGIN_PAGE_STAGE.replace("SCRIPT", script)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        [["ips-login-wait", "alert", "Too many wrong passwords for this user; try again in 5 s."]], []]
