"""The heavy lane's door: admission per session and overall, one computing at a time, work stopped when the
client has gone (read from Gradio's own queue), and the bound on one evidence request."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import gradio as gr
import pytest
import torch
from gradio import queueing
from gradio.context import LocalContext

from explorer.analysis.evidence import EVIDENCE_FORWARD_LIMIT, evidence_agreement, evidence_forwards
from explorer.ui.binding import heavy_handler
from explorer.ui.context import HEAVY_WORK, MODEL_WORK, AppContext
from explorer.ui.heavy import ClientGone, HeavyLane, StoppingProgress, client_gone
from tests.helpers import CE_DEMO, DEMO


def test_a_session_has_one_analysis_in_the_lane_and_the_lane_a_few():
    lane, gate, computing = HeavyLane(capacity=3), threading.Event(), []

    def request(session: str | None) -> None:
        with lane.admit(session):
            computing.append(session)
            gate.wait(5)

    with lane.admit("s1"):
        with pytest.raises(ValueError, match="busy: your earlier long analysis is still running or waiting"):
            with lane.admit("s1"):
                pass
        waiting = [threading.Thread(target=request, args=(None,)) for _ in range(2)]  # direct calls: not capped
        for thread in waiting:                                                        # per session, but counted
            thread.start()
        while lane.admitted() < 3:
            pass
        assert computing == []  # admitted, waiting for the lock the first request holds
        with pytest.raises(ValueError, match="busy: 3 long analyses are running or waiting for the shared heavy"):
            with lane.admit("s2"):
                pass
    while not computing:
        pass
    assert computing == [None] and lane.admitted() == 2  # one computes at a time
    gate.set()
    for thread in waiting:
        thread.join(5)
    assert computing == [None, None] and lane.admitted() == 0


def test_a_refused_request_leaves_no_count_behind():
    lane = HeavyLane(capacity=1)
    with pytest.raises(RuntimeError), lane.admit("s1"):
        raise RuntimeError("the analysis failed")
    with lane.admit("s1"):
        assert lane.admitted() == 1


def _serving(event_id: str, queue: queueing.Queue) -> tuple:
    return (LocalContext.blocks.set(SimpleNamespace(_queue=queue)), LocalContext.event_id.set(event_id))


def test_the_apps_heavy_lane_computes_in_its_heavy_lane_work(tmp_path):
    """One lock for the lane: an admitted request holds the app's ``lane_work(HEAVY_WORK)`` (the lane's own lock
    beside it was a second lock for one lane)."""
    app = AppContext(tmp_path, DEMO, torch.device("cpu"))
    assert app.lane == MODEL_WORK
    with app.heavy.admit("s1"):
        assert app.lane == HEAVY_WORK
        held = threading.Thread(target=lambda: app.lane_work(HEAVY_WORK).__enter__())
        held.start()
        held.join(0.3)
        assert held.is_alive()  # the lane's work waits for the admitted request
    held.join(5)
    assert not held.is_alive()


def test_client_gone_reads_what_gradios_queue_marks_when_a_session_disconnects():
    queue = object.__new__(queueing.Queue)  # Gradio's own clean_events, on a queue with one running job
    job = SimpleNamespace(_id="event-1", session_hash="session-1", alive=True)
    queue.active_jobs, queue.event_queue_per_concurrency_id, queue.pending_event_ids_session = [[job], None], {}, {}
    queue.delete_lock = asyncio.Lock()
    assert client_gone() is False  # outside an event
    tokens = _serving("event-1", queue)
    try:
        assert client_gone() is False
        progress = []
        StoppingProgress(lambda *a, **k: progress.append(a))(0.5)
        asyncio.run(queue.clean_events(session_hash="session-1"))  # what Gradio does when the stream closes
        assert client_gone() is True
        with pytest.raises(ClientGone):
            StoppingProgress(lambda *a, **k: progress.append(a))(0.75)
        assert progress == [(0.5,)]
    finally:
        LocalContext.blocks.reset(tokens[0])
        LocalContext.event_id.reset(tokens[1])


def _analysis(ctx: AppContext, n: float, progress=gr.Progress()) -> str:  # noqa: B008 (as the app's handlers)
    for step in range(3):
        progress((step + 1) / 3)
        _analysis.steps += 1
    return f"done {n}"


def test_the_heavy_handler_stops_at_the_next_progress_report_once_the_client_has_gone(monkeypatch):
    ctx = AppContext(DEMO, DEMO, torch.device("cpu"))
    run = heavy_handler(ctx, _analysis)
    reports = []
    _analysis.steps = 0
    assert run(3, progress=lambda f, **k: reports.append(f)) == "done 3" and reports == [1 / 3, 2 / 3, 1.0]
    monkeypatch.setattr("explorer.ui.heavy.client_gone", lambda: True)
    _analysis.steps = 0
    assert run(3, progress=lambda f, **k: None) == gr.skip() and _analysis.steps == 0
    assert ctx.heavy.admitted() == 0


def test_one_evidence_request_is_bounded_and_reports_its_progress(ctx):
    mnist = ctx.dataset("mnist5k")
    model = ctx.models(mnist, str(CE_DEMO), None)["A · ce"].model
    assert evidence_forwards(63, 784) <= EVIDENCE_FORWARD_LIMIT < evidence_forwards(64, 784)
    with pytest.raises(ValueError, match="64 pairs of 1-pixel patches need 100,480 forward passes per model; one "
                                         "request may ask for 100,000: use at most 63 pairs"):
        evidence_agreement(model, mnist, 64, 1, 0.5, 0)
    fractions = []
    result = evidence_agreement(model, mnist, 40, 4, 0.5, 0, progress=fractions.append)
    assert len(result.anchors) == 40 and fractions == [1.0]  # 40 pairs x 100 images fit one chunk
