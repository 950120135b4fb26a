"""``python -m explorer.bench``, the core benchmark; the code is in ``explorer.training.bench``."""

from explorer.training.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
