"""The one cache of the app: least-recently-used eviction, one value per key across threads, file versions."""

import os
import threading

import pytest

from explorer.analysis.cache import BoundedCache, file_version


def test_a_hit_returns_the_stored_value_and_computes_nothing():
    cache = BoundedCache(2)
    calls = []
    first = cache.get("a", lambda: calls.append("a") or ["value of a"])
    again = cache.get("a", lambda: calls.append("again") or ["another"])
    assert again is first and first == ["value of a"] and calls == ["a"] and len(cache) == 1


def test_the_least_recently_used_key_is_evicted_first():
    cache = BoundedCache(2)
    cache.get("a", lambda: 1)
    cache.get("b", lambda: 2)
    cache.get("a", lambda: 0)  # a is now the most recently used
    cache.get("c", lambda: 3)
    assert "a" in cache and "c" in cache and "b" not in cache and len(cache) == 2
    assert cache.get("b", lambda: 20) == 20  # recomputed after its eviction


def test_a_failed_computation_stores_nothing():
    cache = BoundedCache(2)
    with pytest.raises(ValueError, match="no such dataset"):
        cache.get("x", lambda: (_ for _ in ()).throw(ValueError("no such dataset")))
    assert "x" not in cache and cache.get("x", lambda: 5) == 5


def test_threads_that_miss_one_key_at_once_all_get_the_first_stored_value():
    cache = BoundedCache(4)
    both_computing = threading.Barrier(2)
    results = [None, None]

    def worker(i: int) -> None:
        def make() -> list[int]:
            both_computing.wait(timeout=10)  # both threads are inside make(): a real race on one key
            return [i]
        results[i] = cache.get("key", make)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert results[0] is results[1] and results[0] in ([0], [1]) and len(cache) == 1


def test_a_size_below_one_is_refused():
    with pytest.raises(ValueError, match="at least one value; got size 0"):
        BoundedCache(0)


def test_file_version_changes_with_the_file_and_is_zero_without_one(tmp_path):
    path = tmp_path / "weights"
    assert file_version(path) == (0, 0)
    path.write_bytes(b"12345")
    mtime, size = file_version(path)
    assert size == 5 and mtime == path.stat().st_mtime_ns
    os.utime(path, ns=(mtime, mtime + 10**9))
    assert file_version(path) == (mtime + 10**9, 5)
