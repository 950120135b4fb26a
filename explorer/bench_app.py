"""``python -m explorer.bench_app``, the app latency benchmark; the code is in ``explorer.ui.bench_app``."""

from explorer.ui.bench_app import main

if __name__ == "__main__":
    raise SystemExit(main())
