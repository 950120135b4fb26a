"""The heavy lane's door: long analyses are admitted one per session and a few at a time, run one after another,
and stop when the page or client that asked has gone.

Why: a long analysis (CAM faithfulness, patch evidence over many pairs) holds a core for up to minutes. Queued in
Gradio's own queue, five abandoned requests would run to the end one after another while everyone else's waited,
and one session could fill the queue. Here every heavy event reaches ``HeavyLane.admit`` at once (its Gradio
concurrency limit is the lane's capacity, ``HEAVY_EVENTS``): a session with an analysis already running or waiting
is told so, a full lane answers "busy, try again", and the admitted requests take the lane's lock in turn. The
analyses report progress after every batch; ``StoppingProgress`` checks there whether Gradio still has a client for
the event (it marks a job dead when its page closes or its client disconnects) and stops the work with
``ClientGone``, so the next request does not wait for an answer nobody will read.

The work a single request may ask for is bounded where its cost is known (the analyses' own limits, e.g.
``explorer.analysis.evidence.EVIDENCE_FORWARD_LIMIT``); this module bounds how many run and for whom.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from gradio.context import LocalContext

__all__ = ["HEAVY_CAPACITY", "HEAVY_EVENTS", "HEAVY_WORK", "ClientGone", "HeavyLane", "StoppingProgress",
           "client_gone", "current_session"]

HEAVY_WORK = "heavy"  # the lane's Gradio concurrency id
HEAVY_CAPACITY = 4  # analyses admitted at once: one computes, the others wait for the lane's lock
HEAVY_EVENTS = {"concurrency_id": HEAVY_WORK, "concurrency_limit": HEAVY_CAPACITY}


class ClientGone(Exception):
    """The page or client that asked for the analysis has gone; nobody will read its answer."""


def current_session() -> str | None:
    """The Gradio session of the event being served (None outside an event, e.g. a direct call in a test)."""
    request = LocalContext.request.get(None)
    return getattr(request, "session_hash", None) if request is not None else None


def client_gone() -> bool:
    """Whether Gradio has marked the event being served dead (its client disconnected); False outside an event.

    Reads Gradio's queue (written against Gradio 6.31, as ``gradio_patches``): the running jobs are in
    ``_queue.active_jobs`` and ``Queue.clean_events`` sets ``alive = False`` on a disconnected session's jobs.
    """
    blocks, event_id = LocalContext.blocks.get(None), LocalContext.event_id.get(None)
    queue = getattr(blocks, "_queue", None)
    if queue is None or event_id is None:
        return False
    for jobs in getattr(queue, "active_jobs", ()):
        for job in jobs or ():
            if getattr(job, "_id", None) == event_id:
                return not getattr(job, "alive", True)
    return False


class StoppingProgress:
    """A ``gr.Progress`` that raises ``ClientGone`` instead of reporting to a client that has gone."""

    def __init__(self, progress: Any) -> None:
        self._progress = progress

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if client_gone():
            raise ClientGone
        return self._progress(*args, **kwargs)


class HeavyLane:
    """Admission to the heavy lane: at most ``capacity`` requests in it, one per session, computing one at a time
    inside ``work()`` (the app's ``lane_work(HEAVY_WORK)``; a lock of its own when none is given)."""

    def __init__(self, capacity: int = HEAVY_CAPACITY,
                 work: Callable[[], AbstractContextManager[Any]] | None = None) -> None:
        self.capacity = capacity
        self._admitted: Counter[str | None] = Counter()
        self._door = threading.Lock()
        own_lock = threading.Lock()
        self._work = work or (lambda: own_lock)

    def admitted(self) -> int:
        """How many requests are in the lane (computing or waiting)."""
        with self._door:
            return sum(self._admitted.values())

    @contextmanager
    def admit(self, session: str | None) -> Iterator[None]:
        """Let the request of ``session`` in and hold the lane's lock while it computes; refuse it (``ValueError``,
        the app's refusal) when that session already has one in the lane or the lane is full. Direct calls without
        a session (tests, scripts) are not capped per session."""
        with self._door:
            if session is not None and self._admitted[session]:
                raise ValueError("busy: your earlier long analysis is still running or waiting; this one starts "
                                 "when you ask again after it has finished")
            if sum(self._admitted.values()) >= self.capacity:
                raise ValueError(f"busy: {self.capacity} long analyses are running or waiting for the shared heavy "
                                 "lane; try again in a minute")
            self._admitted[session] += 1
        try:
            with self._work():
                yield
        finally:
            with self._door:
                self._admitted[session] -= 1
                if not self._admitted[session]:
                    del self._admitted[session]
