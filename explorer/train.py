"""``python -m explorer.train``: the training CLI: an entry point; the code is ``explorer.training.loop``."""

from explorer.training.loop import main

if __name__ == "__main__":
    raise SystemExit(main())
