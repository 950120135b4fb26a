"""Fixtures several test files share: the offline datasets and the demo checkpoints' models, loaded once."""

from __future__ import annotations

import pytest

from explorer.checkpoints import load_checkpoint
from explorer.data import Dataset, load_dataset
from tests.helpers import CE_DEMO, IPS_DEMO


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
