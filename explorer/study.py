"""``python -m explorer.study``: the multi-seed study: an entry point; the code is ``explorer.training.study``."""

from explorer.training.study import main

if __name__ == "__main__":
    raise SystemExit(main())
