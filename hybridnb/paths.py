"""Where hybridnb keeps generated data, model caches and reports.

A source checkout keeps everything beside the code (gitignored `cache/`, committed `reports/`), so a
reader finds the artefacts next to the notebooks; an installed package falls back to ~/.cache/hybridnb.
`HYBRIDNB_CACHE` and `HYBRIDNB_REPORTS` override both.

`HYBRIDNB_FRESH_SINCE` (a Unix time; set by ``make reproduce FRESH=1``) makes results and checkpoints
written before that moment count as absent, so a run measures the whole work from scratch.
`HYBRIDNB_REUSE_LOG` (a file; set by the pipeline) collects every earlier result a kernel reused, so the
pipeline's time record says exactly which work it did not do.
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


def fresh_since() -> float | None:
    """The ``HYBRIDNB_FRESH_SINCE`` cutoff, or None when earlier results may be reused."""
    value = os.environ.get("HYBRIDNB_FRESH_SINCE", "").strip()
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"HYBRIDNB_FRESH_SINCE must be a Unix time in seconds, got {value!r}") from None


def reusable(path: str | os.PathLike) -> bool:
    """Whether an existing result or checkpoint at `path` may be reused (not older than the fresh cutoff)."""
    since = fresh_since()
    return since is None or Path(path).stat().st_mtime >= since


def note_reuse(results_path: str | os.PathLike) -> None:
    """Record that a finished result was reused instead of computed (appended to ``HYBRIDNB_REUSE_LOG``)."""
    log = os.environ.get("HYBRIDNB_REUSE_LOG", "").strip()
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(str(Path(results_path).resolve()) + "\n")


def resolve_shown(path: str | Path) -> Path:
    """The inverse of :func:`shown`: a project-relative path (as results.json records it) made absolute
    against the checkout, then the reports folder's parent; an absolute path as it is."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    bases = [b for b in (repo_root(), reports_root().parent) if b is not None]
    return next((b / p for b in bases if (b / p).exists()), (bases[0] / p) if bases else p)


def shown(path: str | Path) -> str:
    """``path`` as a reader should see it in a notebook or a log line: relative to the project's checkout (or
    to the reports folder's parent) when it lies inside, so executed notebooks carry no machine's absolute
    paths; elsewhere the absolute path."""
    p = Path(path).expanduser().resolve()
    for base in (repo_root(), reports_root().parent):
        if base is not None and p.is_relative_to(base):
            return p.relative_to(base).as_posix()
    return str(p)
