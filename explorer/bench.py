"""``python -m explorer.bench``, the core benchmark; the code is in ``explorer.benchmarks.training``."""

from explorer.benchmarks.training import main

if __name__ == "__main__":
    raise SystemExit(main())
