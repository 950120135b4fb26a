"""``python -m explorer.train``: the training CLI: an entry point; the code is ``explorer.training.loop`` (and
``explorer.training.executors`` for ``--executor slurm``)."""

from explorer.training.executors import train_main

if __name__ == "__main__":
    raise SystemExit(train_main())
