"""The command-line parser of the study, evaluation and app CLIs: a refused argument is one line and exit code 2.

argparse prints the whole usage before its error, which for a CLI with many flags buries the one line that says
what was wrong; ``--help`` still shows the usage.
"""

from __future__ import annotations

import argparse
import typing

__all__ = ["OneLineParser"]


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are ``PROG: error: MESSAGE (see --help)`` on stderr, exit code 2
    (argparse's own code for a refused argument)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")
