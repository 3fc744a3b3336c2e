"""Trainer tests: one intra-op thread each (helpers live in _trainer_helpers.py)."""

from __future__ import annotations

from typing import Any

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    """Tests run on one intra-op thread (reproducible timings in CI, no oversubscription with 2 cores)."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
