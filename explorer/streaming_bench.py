"""``python -m explorer.streaming_bench``, streamed against in-memory data; the code is in
``explorer.benchmarks.streaming``."""

from explorer.benchmarks.streaming import main

if __name__ == "__main__":
    raise SystemExit(main())
