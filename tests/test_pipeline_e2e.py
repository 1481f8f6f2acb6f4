"""`make reproduce` end to end on the ci profile, interrupted mid-way and resumed (issue: the reproduction).

The first pipeline is killed (with its kernels) once the first training run has been written; the second
finishes the rest without retraining that run, and no half-written notebook, run or report is left behind.
The runs and zero-shot results it leaves in HYBRIDNB_REPORTS are reused by the notebook tests (nbval) after it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


from conftest import needs_mirror
from hybridnb import config
from hybridnb.studies import runs
from hybridnb.paths import reports_root

pytestmark = needs_mirror


def _pipeline(env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hybridnb", "pipeline", "--profile", "ci"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _partials(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".partial" in p.name or p.name.endswith((".tmp", ".old"))]


def test_pipeline_survives_an_interruption_and_reuses_finished_work():
    root = reports_root()
    env = dict(os.environ)    # every core: nothing else runs beside the pipeline, and its kernels run one at a time
    profile = config.load_profile("ci")
    mono = runs.run_dirs(runs.check_run({**profile, "strategy": "mono", "run_name": None}))[0]
    first_run_done = mono / "results.json"
    already = first_run_done.is_file()
    if not already:           # interrupt the first pipeline right after its first training run is written
        proc = _pipeline(env)
        deadline = time.time() + 1200
        while proc.poll() is None and not first_run_done.is_file() and time.time() < deadline:
            time.sleep(1)
        assert first_run_done.is_file(), proc.communicate()[0][-3000:] if proc.poll() is not None else "timeout"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    stamp = first_run_done.stat().st_mtime_ns
    proc = _pipeline(env)
    out, _ = proc.communicate(timeout=1800)
    assert proc.returncode == 0, out[-3000:]
    assert first_run_done.stat().st_mtime_ns == stamp            # the finished run was reused, not retrained
    notebooks = root / "ci" / "notebooks"
    for name in ("01_data", "02_zero_shot", "06_backbones", "07_multimodal", "04_compare"):
        nb = json.loads((notebooks / f"{name}.ipynb").read_text(encoding="utf-8"))
        errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, name
        # one parameter cell shown (the defaults folded), no absolute path of this machine's reports folder
        defaults = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
        assert len(defaults) == 1 and defaults[0]["metadata"]["jupyter"]["source_hidden"], name
        assert str(root) not in json.dumps(nb), name
        assert nb["metadata"]["papermill"]["input_path"].startswith("notebooks/"), name
    report = (root / "REPORT.md").read_text(encoding="utf-8")  # the one report: every strategy x direction
    assert "profile `ci`" in report and "## Summary" in report and "## xquad-r → mlqa-r" in report
    assert "## Seen vs unseen languages" in report  # ci trains on en, de, ar and evaluates xquad-r in en, de, zh
    assert (root / "ci" / "BACKBONES.md").is_file() and (root / "ci" / "MULTIMODAL.md").is_file()
    record = json.loads((root / "ci" / "budget.json").read_text(encoding="utf-8"))  # the resumed run's own record
    assert [r["notebook"] for r in record["notebooks"]][:3] == ["01_data.ipynb", "02_zero_shot.ipynb",
                                                               "06_backbones.ipynb"]
    assert record["peak_rss_mb_exact"] > 100 and record["total_s"] > 0
    # the resumed run reused the killed run's mono result, and its record says so (no budget verdict)
    assert str(mono.relative_to(root)) in record["reused_results"] and record["wall_time_met"] is None
    assert not _partials(root)
