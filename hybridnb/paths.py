"""Where hybridnb keeps generated data, model caches and reports.

A source checkout keeps everything beside the code (gitignored `cache/`, committed `reports/`), so a
reader finds the artefacts next to the notebooks; an installed package falls back to ~/.cache/hybridnb.
`HYBRIDNB_CACHE` and `HYBRIDNB_REPORTS` override both.
"""

from __future__ import annotations

import os
from pathlib import Path


def repo_root() -> Path | None:
    """The source checkout this package lives in, or None for an installed package."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").exists() else None


def cache_root() -> Path:
    """Root of the processed-data and model caches (never committed)."""
    if os.environ.get("HYBRIDNB_CACHE"):
        return Path(os.environ["HYBRIDNB_CACHE"]).expanduser().resolve()
    root = repo_root()
    return root / "cache" if root else Path.home() / ".cache" / "hybridnb"


def reports_root() -> Path:
    """Root of generated reports (tables, figures, executed notebooks)."""
    if os.environ.get("HYBRIDNB_REPORTS"):
        return Path(os.environ["HYBRIDNB_REPORTS"]).expanduser().resolve()
    root = repo_root()
    return root / "reports" if root else Path.cwd() / "reports"
