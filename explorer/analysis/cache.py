"""One small cache for everything the app keeps: datasets, loaded models, a split's logits.

``BoundedCache`` keeps the ``size`` most recently used values. Its lock guards the bookkeeping only, never
the computation: a slow load (a model, a pass over a test split) does not hold up requests for other keys.
Two threads that miss the same key at once both compute it; the first to finish is stored and both get that
one object, so a value's identity is stable. Keys that depend on a file carry its ``file_version``, so a file
replaced on disk (a run that saved another epoch) is a new key, and the stale entry ages out.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Generic, TypeVar

__all__ = ["BoundedCache", "file_version"]

V = TypeVar("V")


def file_version(path: Path | str) -> tuple[int, int]:
    """(modification time in ns, size) of a file, (0, 0) when there is none: a cheap stamp of its content."""
    try:
        stat = Path(path).stat()
    except OSError:
        return 0, 0
    return stat.st_mtime_ns, stat.st_size


class BoundedCache(Generic[V]):
    """A thread-safe least-recently-used mapping of at most ``size`` values, filled on demand."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"a cache needs room for at least one value; got size {size}")
        self.size = size
        self._values: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, make: Callable[[], V]) -> V:
        """The value of ``key``; on a miss ``make()`` computes it (outside the lock) and it is stored."""
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
        value = make()
        with self._lock:
            if key in self._values:  # another thread stored it meanwhile: share that one
                self._values.move_to_end(key)
                return self._values[key]
            self._values[key] = value
            while len(self._values) > self.size:
                self._values.popitem(last=False)
        return value

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._values
