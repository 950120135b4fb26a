"""``python -m explorer.train``: the training CLI (kept at this name; the code lives in ``explorer.training.loop``)."""

from explorer.training.loop import main

if __name__ == "__main__":
    raise SystemExit(main())
