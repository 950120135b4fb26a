"""``python -m explorer.study``: the multi-seed study (kept at this name; the code lives in ``explorer.training.study``)."""

from explorer.training.study import main

if __name__ == "__main__":
    raise SystemExit(main())
