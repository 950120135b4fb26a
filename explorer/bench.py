"""``python -m explorer.bench``: the core and training-step benchmark (kept at this name; the code lives in ``explorer.training.bench``)."""

from explorer.training.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
