"""hybridnb.paths: the HYBRIDNB_FRESH_SINCE cutoff that `make reproduce FRESH=1` sets."""

import json
import time

import pytest

from hybridnb import paths
from hybridnb.studies import runs


def test_fresh_cutoff(tmp_path, monkeypatch):
    f = tmp_path / "results.json"
    f.write_text("{}")
    monkeypatch.delenv("HYBRIDNB_FRESH_SINCE", raising=False)
    assert paths.fresh_since() is None and paths.reusable(f)
    monkeypatch.setenv("HYBRIDNB_FRESH_SINCE", repr(time.time() + 60))
    assert not paths.reusable(f)
    monkeypatch.setenv("HYBRIDNB_FRESH_SINCE", "0")
    assert paths.reusable(f)
    monkeypatch.setenv("HYBRIDNB_FRESH_SINCE", "yesterday")
    with pytest.raises(ValueError, match="Unix time"):
        paths.fresh_since()


def test_find_finished_honours_the_cutoff(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRIDNB_REPORTS", str(tmp_path))
    monkeypatch.delenv("HYBRIDNB_FRESH_SINCE", raising=False)
    cfg = {"run_name": "cpu-mono-x", "hash": "abc"}
    report_dir, _ = runs.run_dirs(cfg)
    report_dir.mkdir(parents=True)
    (report_dir / "config.json").write_text(json.dumps({"hash": "abc"}))
    (report_dir / "results.json").write_text(json.dumps({"kind": "trained"}))
    assert runs.find_finished(cfg) == {"kind": "trained"}
    assert runs.find_finished({**cfg, "hash": "other"}) is None
    monkeypatch.setenv("HYBRIDNB_FRESH_SINCE", repr(time.time() + 60))
    assert runs.find_finished(cfg) is None
