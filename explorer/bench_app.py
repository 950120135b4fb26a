"""``python -m explorer.bench_app``: the web app's latency benchmark (kept at this name; the code lives in ``explorer.ui.bench_app``)."""

from explorer.ui.bench_app import main

if __name__ == "__main__":
    raise SystemExit(main())
