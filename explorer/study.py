"""``python -m explorer.study``: the multi-seed study: an entry point; the code is ``explorer.training.study_cli``."""

from explorer.training.study_cli import main

if __name__ == "__main__":
    raise SystemExit(main())
