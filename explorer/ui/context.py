"""The app's context (folders, device, caches, model work) and the lanes model work runs in.

Model work runs in three lanes, each a Gradio ``concurrency_id`` of its own, so that light work never
waits behind heavy work:

- ``MODEL_WORK``, the light lane: one picture's worth (a swapped pair, one Grad-CAM, one pair's patch
  evidence), bound with ``model_handler(small=True)`` and ``LIGHT_EVENTS``: tens to hundreds of milliseconds.
- ``ANALYSIS_WORK``: a pass over many test images (confidence gaps, Compare), about a second, bound with
  ``analysis_handler`` and ``ANALYSIS_EVENTS``: its answers are cached by inputs and checkpoint identity, so
  a class clicking the same defaults computes them once, and a cached answer waits for nothing.
- ``HEAVY_WORK``: long analyses (CAM faithfulness, patch evidence over many pairs: seconds to minutes), which
  copy the models they need (``private_models``) and run on the copies, also cached; bound with
  ``heavy_handler``, which lets them in through ``AppContext.heavy`` (``explorer.ui.heavy``: one per session, a
  few at a time, one computing, stopped when their client has gone).

Thread safety, made explicit. A model is used by one thread at a time: each lane has a lock
(``AppContext.lane_work``) and its own instance of every model (``AppContext.checkpoint`` loads one per lane),
so a Grad-CAM's hooks or a model's train/eval mode are never seen by another lane's forward pass. The lock
also makes direct calls (tests, scripts, several apps in one process) safe; in the app, Gradio takes a few
events of a lane at once, so that their pre- and postprocessing (decoding inputs, encoding pictures) overlaps
with the model call that holds the lock. Torch's intra-op thread count: lane work on the CPU runs with one thread and
restores the calling thread's count after. With OpenMP (torch's CPU backend) the count is a per-thread setting
(``omp_set_num_threads`` sets the calling thread's value; a fresh thread copies the process default on its first
parallel region), so two lanes setting and restoring it at once do not disturb each other; on two cores the
lanes themselves are the parallelism. Events that run no model (dataset switches, the Train tab, the pickers)
neither take a lock nor touch the thread count.
"""

from __future__ import annotations

import copy
import functools
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from explorer.analysis.cache import BoundedCache
from explorer.analysis.catalog import (
    checkpoint_folder,
    checkpoint_roots,
    list_checkpoints,
    public_text,
    weights_version,
)
from explorer.analysis.comparison import split_logits
from explorer.checkpoints import Checkpoint, CheckpointError, load_checkpoint
from explorer.data import Dataset, load_dataset
from explorer.evaluate import check_compatible
from explorer.ui.heavy import HEAVY_WORK, HeavyLane

__all__ = ["ANALYSIS_EVENTS", "ANALYSIS_WORK", "HEAVY_WORK", "LANES", "LIGHT_EVENTS", "MODEL_WORK", "AppContext"]

MODEL_WORK = "model"  # the light lane: one picture's worth of model work (see the module docstring)
ANALYSIS_WORK = "analysis"  # a pass over many test images (gaps, Compare), answers cached
LANES = (MODEL_WORK, ANALYSIS_WORK, HEAVY_WORK)
# How a light event is queued: Gradio takes up to 4 at once, so that one answer's pictures are encoded and sent
# while the next runs its model; the model calls themselves take the lane's lock in turn (``model_handler``).
LIGHT_EVENTS: dict[str, Any] = dict(concurrency_id=MODEL_WORK, concurrency_limit=4)
# How an analysis event is queued: cached answers need no lane, so up to 8 requests are taken at once; the ones
# that compute wait for the lane's lock in turn (``analysis_handler``).
ANALYSIS_EVENTS: dict[str, Any] = dict(concurrency_id=ANALYSIS_WORK, concurrency_limit=8)


@dataclass
class AppContext:
    """Where checkpoints come from and where models run, and what the app keeps in memory; built once per app.

    Four bounded caches of one kind (``BoundedCache``): datasets by name; loaded models by lane, checkpoint
    folder, device and weights-file version; a split's logits by checkpoint folder, weights-file version, dataset and
    split; the answers of long analyses (CAM faithfulness, evidence over many pairs) by their inputs and the
    checkpoints' folders and weights-file versions. A checkpoint replaced on disk gets a new version, so it is
    reloaded and its logits and analyses recomputed.

    The model pickers' values are public checkpoint names (``explorer.analysis.catalog``), never server paths; two
    checkpoint folders with the same folder name are refused when the context is built.
    """

    runs_dir: Path
    checkpoints_dir: Path
    device: torch.device
    datasets: BoundedCache[Dataset] = field(default_factory=lambda: BoundedCache(8))
    loaded: BoundedCache[Checkpoint] = field(default_factory=lambda: BoundedCache(8 * len(LANES)))
    logits: BoundedCache[Tensor] = field(default_factory=lambda: BoundedCache(16))
    analyses: BoundedCache[Any] = field(default_factory=lambda: BoundedCache(32))
    heavy: HeavyLane = field(init=False)
    pictures: tempfile.TemporaryDirectory = field(
        default_factory=lambda: tempfile.TemporaryDirectory(prefix="ips-explorer-pictures-"), repr=False)
    _lane_locks: dict[str, threading.RLock] = field(
        default_factory=lambda: {lane: threading.RLock() for lane in LANES}, repr=False)
    _current: threading.local = field(default_factory=threading.local, repr=False)

    def __post_init__(self) -> None:
        checkpoint_roots(self.checkpoint_dirs)  # two folders with one name are refused now, not at the first pick
        self.heavy = HeavyLane(work=lambda: self.lane_work(HEAVY_WORK))

    @property
    def checkpoint_dirs(self) -> list[Path]:
        return [self.checkpoints_dir, self.runs_dir]

    def checkpoint_choices(self) -> list[tuple[str, str]]:
        return list_checkpoints(self.checkpoint_dirs)

    def dataset(self, name: str) -> Dataset:
        if not name:
            raise ValueError("no dataset chosen; pick one from the list")
        return self.datasets.get(name, functools.partial(load_dataset, name))

    @property
    def lane(self) -> str:
        """The lane the calling thread works in: ``MODEL_WORK`` outside any ``lane_work``."""
        return getattr(self._current, "lane", MODEL_WORK)

    def checkpoint(self, path: str, dataset: Dataset) -> Checkpoint:
        """A listed checkpoint, loaded (cached) on the app's device, the calling lane's own instance; refused when
        it does not fit ``dataset``."""
        folder = checkpoint_folder(path, self.checkpoint_dirs)
        key = (self.lane, str(folder), str(self.device), *weights_version(folder))
        try:
            checkpoint = self.loaded.get(key, functools.partial(load_checkpoint, folder, self.device))
        except CheckpointError as exc:  # its message names the weights file: say it without the server's path
            raise CheckpointError(public_text(str(exc), self.checkpoint_dirs)) from None
        check_compatible(checkpoint.card, dataset)
        return checkpoint

    def models(self, dataset: Dataset, path_a: str | None, path_b: str | None) -> dict[str, Checkpoint]:
        """The chosen checkpoints by display name ("A · ce", "B · ips"); an empty choice is left out."""
        chosen = {}
        for slot, path in (("A", path_a), ("B", path_b)):
            if path:
                try:
                    checkpoint = self.checkpoint(path, dataset)
                except ValueError as exc:
                    raise ValueError(f"Model {slot}: {exc}") from None
                chosen[f"{slot} · {checkpoint.card.get('method', '?')}"] = checkpoint
        return chosen

    def split_logits(self, checkpoint: Checkpoint, dataset: Dataset, split: str = "test") -> Tensor:
        """``comparison.split_logits``, computed once per checkpoint file version, dataset and split."""
        key = (str(checkpoint.path), *weights_version(checkpoint.path), dataset.name, split)
        return self.logits.get(key, functools.partial(split_logits, checkpoint, dataset, split))

    def checkpoint_identity(self, path: str | None) -> tuple:
        """(folder, weights-file version) of a listed checkpoint; the value itself when it names none."""
        try:
            folder = checkpoint_folder(path, self.checkpoint_dirs) if path else None
        except ValueError:
            return (path,)
        return (str(folder), *weights_version(folder)) if folder else (None,)

    def analysis(self, kind: str, checkpoints: Mapping[str, Checkpoint], inputs: tuple,
                 make: Callable[[], Any]) -> Any:
        """The answer of a long analysis, computed once per ``kind``, ``inputs`` and checkpoint weights version."""
        identity = tuple((name, str(c.path), *weights_version(c.path)) for name, c in checkpoints.items())
        return self.analyses.get((kind, inputs, identity), make)

    def private_models(self, checkpoints: Mapping[str, Checkpoint]) -> dict[str, nn.Module]:
        """Copies of the checkpoints' models for ``HEAVY_WORK``, taken while no other model work runs."""
        with self.model_work():
            return {name: copy.deepcopy(checkpoint.model) for name, checkpoint in checkpoints.items()}

    def model_work(self, small: bool = False) -> AbstractContextManager[None]:
        """Light-lane work (``lane_work(MODEL_WORK, small)``)."""
        return self.lane_work(MODEL_WORK, small)

    @contextmanager
    def lane_work(self, lane: str, small: bool = False) -> Iterator[None]:
        """Run a model call alone in ``lane``; ``small`` work on the CPU runs single-threaded (module docstring).

        A forward pass over a handful of small images is much slower on two threads than on one when the other core
        is busy (the threads wait for each other), so lane work skips intra-op parallelism.
        """
        with self._lane_locks[lane]:
            outer = getattr(self._current, "lane", None)
            self._current.lane = lane
            previous = torch.get_num_threads()
            single = small and self.device.type == "cpu"
            if single:
                torch.set_num_threads(1)
            try:
                yield
            finally:
                if single:
                    torch.set_num_threads(previous)
                if outer is None:
                    del self._current.lane
                else:
                    self._current.lane = outer


