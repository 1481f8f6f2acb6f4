"""Shared test helpers: the raw-data mirror and a one-thread torch fixture."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Test runs and reports never land in the committed reports/: `make test` points HYBRIDNB_REPORTS at
# cache/test-reports, and a bare `pytest` does the same (the notebook kernels inherit it).
os.environ.setdefault("HYBRIDNB_REPORTS", str(ROOT / "cache" / "test-reports"))

# Under pytest-xdist (`make test` runs one worker per core, TEST_WORKERS=2) every worker gets its own reports
# and cache folders, so two workers never train the same run (the run lock would stop the second), convert
# the model or build a data cache at the same moment; tests that read each other's runs are kept on one worker
# by the scheduler below (pytest_xdist_make_scheduler). One torch thread per worker: two workers on two cores already
# use both, and oversubscribed cores stall OpenMP badly. Set before anything imports torch; the notebook
# kernels and the pipeline's subprocesses inherit all three.
WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if WORKER:
    os.environ["HYBRIDNB_REPORTS"] = str(Path(os.environ["HYBRIDNB_REPORTS"]) / WORKER)
    os.environ["HYBRIDNB_CACHE"] = str(Path(os.environ.get("HYBRIDNB_CACHE") or ROOT / "cache") / f"xdist-{WORKER}")
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# Items that share the runs in HYBRIDNB_REPORTS: the pipeline test writes the ci profile's runs (the grid of
# notebook 04) and zero-shot results, and the notebooks (nbval; 09 evaluates the finished ci runs on the MIRACL
# stand-in, so it runs after 03 and 04 have made them) reuse them all; on one worker, in this order (elsewhere
# each would train them again). Every other test
# file is a scope of its own, so its module-scoped fixtures are built once.
SHARED_RUNS_GROUP = "ci-runs"
SHARED_RUNS_MODULES = ("tests/test_pipeline_e2e.py",)
# notebooks that read none of the pipeline's runs (08 trains its own sentence+32-token hybridnb run and its
# sentence-transformers twin): a scope of their own, so the other worker takes them while the shared group, the
# longest path of `make test` (the pipeline twice, then the notebooks), runs
OWN_RUNS_NOTEBOOKS = ("notebooks/08_sentence_transformers.ipynb",)


def xdist_scope(nodeid: str) -> str:
    """The scope (one worker, in collection order) of a test id: the shared-runs group or the test's file."""
    path = nodeid.split("::", 1)[0]
    shared = (path.startswith("notebooks/") and path not in OWN_RUNS_NOTEBOOKS) or path in SHARED_RUNS_MODULES
    return SHARED_RUNS_GROUP if shared else path


def pytest_xdist_make_scheduler(config, log):
    """xdist's loadscope scheduling with :func:`xdist_scope` as the scope. (``--dist loadgroup`` with
    ``xdist_group`` marks would say the same, but xdist 3.8 writes the group into ``item._nodeid``, which
    pytest 9.2 no longer reads, so the marks were silently ignored and modules split across workers.)"""
    from xdist.scheduler import LoadScopeScheduling

    class SharedRunsScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_scope(nodeid)

    return SharedRunsScheduling(config, log)


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


@pytest.fixture
def reports(tmp_path, monkeypatch):
    """Reports and caches of this test only (tmp_path), and no FRESH cut-off from the environment."""
    monkeypatch.setenv("HYBRIDNB_REPORTS", str(tmp_path / "reports"))
    monkeypatch.setenv("HYBRIDNB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HYBRIDNB_FRESH_SINCE", raising=False)
    return tmp_path / "reports"
