"""TensorBoard event files in the run folder: the scalars of metrics.jsonl, for ``tensorboard --logdir RUNS``.

metrics.jsonl stays the record the app reads; the event files are a copy in the format the tools users already
run can read. Every numeric field of a ``"kind": "step"`` or ``"kind": "epoch"`` record becomes the scalar
``KIND/FIELD`` (``step/loss``, ``step/lr``, ``epoch/test_accuracy``, ``epoch/test_ece``, ...) at the record's
optimiser step. The writer is tensorboardX, an optional dependency: without it a run trains as before and says
once that it writes no event files.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

__all__ = ["EVENT_KINDS", "EventLog", "scalars"]

EVENT_KINDS = ("step", "epoch")
_NOT_SCALARS = ("kind", "epoch", "step")  # the record's position, not a measurement


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The TensorBoard scalars of one metrics record, {tag: value}; {} for records of other kinds (resume)."""
    kind = record.get("kind")
    if kind not in EVENT_KINDS:
        return {}
    return {f"{kind}/{key}": float(value) for key, value in record.items()
            if key not in _NOT_SCALARS and isinstance(value, (int, float)) and not isinstance(value, bool)}


class EventLog:
    """A TensorBoard writer on a run folder, or nothing when tensorboardX is not installed.

    ``resume_step``: the step a resumed run continues from; TensorBoard then drops the events an earlier attempt
    wrote after it (the unfinished epoch that is trained again), as metrics.jsonl is cut back. Each attempt writes
    a file of its own, named after its first step so that a quick resume cannot reuse the name.
    """

    def __init__(self, run_dir: Path, resume_step: int | None = None) -> None:
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            print("TensorBoard logging is off: tensorboardX is not installed (pip install tensorboardX); "
                  "metrics.jsonl has every number", file=sys.stderr, flush=True)
            self._writer = None
            return
        self._writer = SummaryWriter(logdir=str(run_dir), purge_step=None if resume_step is None else resume_step + 1,
                                     flush_secs=30, filename_suffix=f".from-step-{resume_step or 0}")

    @property
    def enabled(self) -> bool:
        return self._writer is not None

    def append(self, record: dict[str, Any]) -> None:
        if self._writer is None:
            return
        for tag, value in scalars(record).items():
            self._writer.add_scalar(tag, value, global_step=record["step"])

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
