"""The app's assembly: what ``build_app`` sets up around the tabs (Gradio's picture cache, lanes, limits)."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from gradio import processing_utils
from PIL import Image

from explorer.training.runs import RunManager
from explorer.ui.app import build_app
from explorer.ui.context import ANALYSIS_EVENTS, ANALYSIS_WORK, HEAVY_WORK, LIGHT_EVENTS, MODEL_WORK
from explorer.ui.heavy import HEAVY_CAPACITY
from tests.helpers import DEMO


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    runs = RunManager(tmp_path_factory.mktemp("runs"))
    yield build_app(runs, checkpoints_dir=DEMO, device="cpu")
    runs.close()


def test_a_picture_two_users_get_at_once_is_never_read_half_written(demo, tmp_path):
    """Gradio rewrote a picture's content-hashed cache file in place: a concurrent download got 0 bytes."""
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (112, 112, 3), dtype=np.uint8))
    path = Path(processing_utils.save_pil_to_cache(picture, str(tmp_path), format="png"))
    size, short, reads = path.stat().st_size, [], 0
    stop = time.monotonic() + 0.5

    def another_user() -> None:
        while time.monotonic() < stop:
            assert processing_utils.save_pil_to_cache(picture, str(tmp_path), format="png") == str(path)

    writer = threading.Thread(target=another_user)
    writer.start()
    while time.monotonic() < stop:
        reads += 1
        if len(path.read_bytes()) != size:
            short.append(reads)
    writer.join()
    assert reads > 100 and short == [] and size > 1000
    assert [p.name for p in path.parent.iterdir()] == ["image.png"]  # no temporary file left behind


def test_light_work_and_analyses_are_queued_in_lanes_of_their_own(demo):
    lanes = {fn.api_name: (fn.concurrency_id, fn.concurrency_limit) for fn in demo.fns.values()}
    for light in ("swap_pair", "random_pair", "swap_class", "gradcam", "patch_evidence", "guide_example"):
        assert lanes[light] == (MODEL_WORK, LIGHT_EVENTS["concurrency_limit"]), light
    for analysis in ("confidence_gaps", "compare"):
        assert lanes[analysis] == (ANALYSIS_WORK, ANALYSIS_EVENTS["concurrency_limit"]), analysis
    for heavy in ("cam_faithfulness", "evidence_agreement"):
        assert lanes[heavy] == (HEAVY_WORK, HEAVY_CAPACITY), heavy  # admitted and serialised by ctx.heavy
    assert len({MODEL_WORK, ANALYSIS_WORK, HEAVY_WORK}) == 3


def test_the_api_describes_patch_sizes_as_integers(demo):
    endpoints = demo.get_api_info()["named_endpoints"]
    for endpoint in ("/swap_pair", "/confidence_gaps", "/random_pair"):
        (size,) = [p for p in endpoints[endpoint]["parameters"] if p["parameter_name"] == "patch_size"]
        assert size["type"] == {"type": "integer"} and size["python_type"]["type"] == "int", endpoint


def test_gradio_refusals_of_bad_input_log_one_line_and_bugs_their_traceback(demo, capfd):
    """Gradio printed the whole traceback of every input it refused (a patch size not offered, a slider out of range,
    text for a number): a client sending bad values filled a shared server's log."""
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    from tests.helpers import free_port

    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, show_error=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
        capfd.readouterr()
        for bad, message in ((dict(patch_size=99), "not in the list of choices"),
                             (dict(swap_ratio=5), "greater than maximum value 1"),
                             (dict(seed="abc"), "Could not preprocess")):
            with pytest.raises(AppError, match=message):
                client.predict(upload_a=None, upload_b=None, api_name="/swap_pair", **bad)
        # a file path no upload made, sent as the raw FileData the client would upload first
        raw_path = {"path": "/etc/upload.png", "meta": {"_type": "gradio.FileData"}}
        parameters = demo.get_api_info()["named_endpoints"]["/swap_pair"]["parameters"]
        data = [raw_path if p["parameter_name"] == "upload_a" else p.get("parameter_default") for p in parameters]
        call = urllib.request.Request(f"http://127.0.0.1:{port}/gradio_api/call/swap_pair", method="POST",
                                      data=json.dumps({"data": data}).encode(),
                                      headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(call, timeout=30) as answer:
            event = json.loads(answer.read())["event_id"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/gradio_api/call/swap_pair/{event}", timeout=60) as answer:
            assert "event: error" in answer.read().decode()
        err = capfd.readouterr().err
    finally:
        demo.close()
    refusals = [line for line in err.splitlines() if line.startswith("IPS Explorer: refused a request: ")]
    assert len(refusals) == 4 and "Traceback" not in err, err
    assert "it was not uploaded by a user" in refusals[3]  # Gradio's InvalidPathError: one line, not 25
    assert "99 is not in the list of choices" in refusals[0] and '(named "show_pair")' in refusals[2]
    assert all(len(line) <= len("IPS Explorer: refused a request: ") + 300 for line in refusals)

    from gradio import queueing
    try:
        raise ZeroDivisionError("a bug")
    except ZeroDivisionError:
        queueing.traceback.print_exc()  # what Gradio calls for an exception of the app's code
    assert "Traceback (most recent call last)" in capfd.readouterr().err


def test_a_session_starts_without_a_config_of_every_block(demo):
    """Gradio built the config of all ~260 blocks for every new session on the event loop (60 ms each): a class
    whose first requests arrived together stalled every request for seconds. Only an answer's blocks get one."""
    from gradio.state_holder import SessionState

    session = SessionState(demo)
    assert session.config_values == {} and len(demo.blocks) > 200
    summary = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "swap-summary")
    session._update_value_in_config(summary._id, "a swapped pair")  # what Gradio does with an answer
    assert list(session.config_values) == [summary._id]
    assert session.config_values[summary._id]["props"]["value"] == "a swapped pair"
    assert session[summary._id] is demo.blocks[summary._id]  # the session's blocks are the app's, as before


def test_the_static_file_check_answers_as_gradios_with_one_path_resolution(demo, tmp_path, monkeypatch):
    """Gradio resolved a file's path twice per static path for every file of every answer (70 % of a repeated
    Compare's server time); the app's check resolves it once and must answer exactly as Gradio's does."""
    import asyncio

    from gradio import utils
    from gradio.data_classes import FileData, _StaticFiles

    from explorer.ui.gradio_patches import is_static_file

    static = tmp_path / "static"
    static.mkdir()
    (static / "picture.png").write_bytes(b"png")
    (tmp_path / "outside.png").write_bytes(b"png")
    (static / "link.png").symlink_to(tmp_path / "outside.png")  # inside by name, outside in fact
    monkeypatch.setattr(_StaticFiles, "all_paths", [*_StaticFiles.all_paths, static.resolve()])
    cases = [str(static / "picture.png"), static / "picture.png", FileData(path=str(static / "picture.png")),
             str(static), str(static / ".." / "outside.png"), str(tmp_path / "outside.png"), str(static / "link.png"),
             str(static / "missing.png"), static / "missing.png", 42, None]
    expected = [True, True, True, True, False, False, False, False, True, False, False]
    assert [utils._is_static_file(case, _StaticFiles.all_paths) for case in cases] == expected  # Gradio's own
    assert [is_static_file(case) for case in cases] == expected

    resolved = []
    real_resolve = Path.resolve
    monkeypatch.setattr(Path, "resolve", lambda path, *a, **k: resolved.append(path) or real_resolve(path, *a, **k))
    block = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "swap-image-0")
    answer = {"path": str(static / "picture.png"), "meta": {"_type": "gradio.FileData"}}
    sent = asyncio.run(processing_utils.async_move_files_to_cache(answer, block, postprocess=True))
    assert sent["path"] == str(static / "picture.png")  # served from where it is, not copied into the cache
    assert len(resolved) == 1  # build_app put the app's check where Gradio looks for it


def test_the_gradio_workarounds_are_installed_once_and_only_on_the_release_they_were_written_for(demo):
    """A patch of Gradio internals may not fit another release: there Gradio is left as it is, and the log says so."""
    import subprocess
    import sys

    from gradio import processing_utils as gradio_processing
    from gradio import utils

    from explorer.ui import gradio_patches

    assert gradio_patches.installed() and gradio_patches.install() is True  # build_app installed them; again: no-op
    assert utils.is_static_file is gradio_patches.is_static_file
    assert gradio_processing.save_pil_to_cache is gradio_patches.save_pil_to_cache_atomically
    from gradio import networking

    assert networking.url_ok is gradio_patches.patient_url_ok
    probe = ("from gradio import processing_utils, state_holder, utils; from explorer.ui import gradio_patches as g; "
             "before = (utils.is_static_file, processing_utils.save_pil_to_cache, state_holder.SessionState.__init__, "
             "utils.traceback); print(g.install('6.30.1'), before == (utils.is_static_file, "
             "processing_utils.save_pil_to_cache, state_holder.SessionState.__init__, utils.traceback))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.split() == ["False", "True"]
    assert "Gradio 6.30.1 is not 6.31" in out.stderr


def test_launch_waits_for_its_server_on_a_loaded_machine(monkeypatch):
    """Gradio's check gave up at the first HEAD slower than 3 s, and launch then refused to serve at all."""
    import httpx

    from explorer.ui import gradio_patches

    answers = iter([httpx.TimeoutException("slow"), httpx.ConnectError("not yet"), httpx.TimeoutException("slow"),
                    httpx.Response(200)])

    def head(url, **kwargs):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(httpx, "head", head)
    monkeypatch.setattr(gradio_patches.time, "sleep", lambda s: None)
    assert gradio_patches.patient_url_ok("http://127.0.0.1:1/") is True
    answers = iter([httpx.TimeoutException("slow")] * 3)
    monkeypatch.setattr(gradio_patches.time, "monotonic", iter([0.0, 1.0, 100.0, 200.0]).__next__)
    assert gradio_patches.patient_url_ok("http://127.0.0.1:1/", patience_s=50) is False
