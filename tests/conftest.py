"""Shared test helpers: the raw-data mirror and a one-thread torch fixture."""

import os
from pathlib import Path

import pytest

# Test runs and reports never land in the committed reports/: `make test` points HYBRIDNB_REPORTS at
# cache/test-reports, and a bare `pytest` does the same (the notebook kernels inherit it).
os.environ.setdefault("HYBRIDNB_REPORTS", str(Path(__file__).resolve().parents[1] / "cache" / "test-reports"))


def _real_mirror() -> Path | None:
    for candidate in (os.environ.get("HYBRIDNB_MIRROR"), "/work/shared/data"):
        if candidate and (Path(candidate) / "MANIFEST.md").is_file():
            return Path(candidate)
    return None


REAL_MIRROR = _real_mirror()
needs_mirror = pytest.mark.skipif(REAL_MIRROR is None, reason="no raw-data mirror (HYBRIDNB_MIRROR)")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: threads only add overhead, and oversubscribed cores stall OpenMP badly."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
