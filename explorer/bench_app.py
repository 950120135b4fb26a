"""``python -m explorer.bench_app``, the app latency benchmark; the code is in ``explorer.benchmarks.app``."""

from explorer.benchmarks.app import main

if __name__ == "__main__":
    raise SystemExit(main())
