"""A run's metrics.jsonl read as it grows, and the checks of what it holds: part of the run folder module
(``explorer.training.runfolder`` owns the format and re-exports what the others use).

Why incremental: the runs table asks for every run's epochs at each refresh and the Train tab redraws the watched
runs' curves every few seconds, while a long run's file is mostly step records (a 58 MB file took seconds to
parse). So a file is parsed once and later reads parse only the whole lines appended since; what is kept is the
epoch records and, of each step record, only its step and the metrics the curves draw. A file replaced, shortened,
or truncated and written again (``--resume`` cuts it back) is read again from its start: it is known by its device
and inode, and by its last bytes read.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["EPOCH_METRICS", "STEP_METRICS", "MetricsRead", "RunFolderError", "check_number", "check_record",
           "read_grown"]

STEP_METRICS = ("loss", "ce", "kd")  # in the step records
EPOCH_METRICS = ("train_accuracy", "test_accuracy", "test_ece")  # in the epoch records, drawn as curves


class RunFolderError(ValueError):
    """A run folder file that holds a value of the wrong kind (hand-edited, foreign, crafted): the message names the
    file and the field. The readers raise it; the runs table shows the run as "unreadable: <why>"."""


def check_number(value: Any, where: str, low: float = 0.0, high: float = float("inf"), whole: bool = False) -> float:
    """``value`` checked to be a (whole) number in [low, high]; RunFolderError naming ``where`` otherwise."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and low <= value <= high and (not whole or float(value).is_integer())
    if not ok:
        kind = "a whole number" if whole else "a number"
        raise RunFolderError(f"{where} must be {kind} from {low:g} to {high:g}; got {str(value)[:40]!r}")
    return int(value) if whole else float(value)


def check_record(record: dict[str, Any], where: str) -> dict[str, Any]:
    """A metrics record checked: every metric it holds is a number (a non-finite one too: a diverging run logs one),
    a step record has its whole step and an epoch record its whole epoch (where the curves place them)."""
    for key in (*STEP_METRICS, *EPOCH_METRICS, "images_per_s"):
        value = record.get(key)
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise RunFolderError(f"{where}: {key} must be a number; got {str(value)[:40]!r}")
    kind = record.get("kind")
    if kind in ("step", "epoch"):
        check_number(record.get(kind), f"{where}: the {kind} record's {kind}", whole=True)
    return record


@dataclass(frozen=True)
class MetricsRead:
    """What has been read of one metrics.jsonl."""

    file: tuple[int, int]  # (device, inode)
    offset: int  # bytes read: whole lines only
    tail: bytes  # the last bytes read (a file truncated and written again differs there)
    lines: int  # lines read, for the messages' line numbers
    epochs: tuple[dict[str, Any], ...]  # the epoch records, in order
    steps: tuple[tuple[Any, ...], ...]  # (step, *STEP_METRICS) of every step record, in order
    error: RunFolderError | None  # the first malformed record; nothing after it is read


_READ: dict[Path, MetricsRead] = {}


def _known(path: Path, file: Any) -> MetricsRead:
    """What was read of the open ``file`` before, or a fresh start when it is another file or was cut back."""
    stat = os.fstat(file.fileno())
    identity = (stat.st_dev, stat.st_ino)
    known = _READ.get(path)
    if known is not None and known.file == identity and known.offset <= stat.st_size:
        file.seek(known.offset - len(known.tail))
        if file.read(len(known.tail)) == known.tail:
            return known
    return MetricsRead(identity, 0, b"", 0, (), (), None)


def read_grown(path: Path) -> MetricsRead | None:
    """Everything read of the metrics.jsonl at ``path``, the lines appended since the last call parsed now; None
    when it cannot be opened. Lines that are not a JSON object (a torn last line while the run writes) are
    skipped; the first malformed record is kept in ``error`` (the caller raises it)."""
    try:
        with path.open("rb") as file:
            known = _known(path, file)
            file.seek(known.offset)
            appended = file.read()
    except OSError:
        _READ.pop(path, None)
        return None
    whole = appended[:appended.rfind(b"\n") + 1]  # a torn last line is read when it is whole
    epochs, steps, error = list(known.epochs), list(known.steps), known.error
    for number, line in enumerate(whole.splitlines(), known.lines + 1):
        if error is not None:
            break
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if not isinstance(record, dict):
            continue
        try:
            kind = check_record(record, f"metrics.jsonl line {number}").get("kind")
        except RunFolderError as exc:
            error = exc
            continue
        if kind == "epoch":
            epochs.append(record)
        elif kind == "step":
            steps.append((record["step"], *(record.get(metric) for metric in STEP_METRICS)))
    read = MetricsRead(known.file, known.offset + len(whole), (known.tail + whole)[-64:],
                       known.lines + len(whole.splitlines()), tuple(epochs), tuple(steps), error)
    _READ[path] = read
    return read
