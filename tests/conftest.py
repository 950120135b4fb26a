"""Fixtures several test files share: the offline datasets, the demo checkpoints' models, the app's context."""

from __future__ import annotations

import pytest

from explorer.checkpoints import load_checkpoint
from explorer.data import Dataset, load_dataset
from tests.helpers import CE_DEMO, DEMO, IPS_DEMO, local_slurm, run_startup_seconds


@pytest.fixture(scope="session")
def mnist() -> Dataset:
    return load_dataset("mnist5k")


@pytest.fixture(scope="session")
def digits() -> Dataset:
    return load_dataset("digits")


@pytest.fixture(scope="session")
def demo_models() -> dict:
    """The CE and IPS demo checkpoints' models, as the app's models A and B."""
    return {"A": load_checkpoint(CE_DEMO).model, "B": load_checkpoint(IPS_DEMO).model}


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    """The app's context on the demo checkpoints and an empty runs folder, on the CPU (the tabs' handlers take it)."""
    import torch

    from explorer.ui.context import AppContext

    return AppContext(tmp_path_factory.mktemp("runs"), DEMO, torch.device("cpu"))


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """A running SLURM cluster (scripts/local-slurm on this machine unless SLURM_CONF names another); skips the
    test with the reason where none can run."""
    return local_slurm()


@pytest.fixture
def stall_s() -> float:
    """How long a test waiting for a training run may see no progress: scaled to this machine's speed now (measured
    by starting a run's imports), so a loaded machine makes the test slower but not fail."""
    return 30.0 + 6 * run_startup_seconds()
