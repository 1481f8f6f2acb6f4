"""hybridnb.budget: the pipeline's time and memory record, against the profile's targets."""

import json
import subprocess
import sys

from hybridnb import budget


def test_measure_samples_the_rss_of_child_processes(tmp_path):
    records = []
    with budget.measure("child", records):  # a child holding ~200 MB for a second
        subprocess.run([sys.executable, "-c", "import time; b = bytearray(200 * 2**20); time.sleep(1.5)"], check=True)
    (rec,) = records
    assert rec.notebook == "child" and rec.seconds >= 1.5
    assert rec.peak_rss_mb >= 200
    assert budget.children_peak_rss_mb() >= 200  # exact, from getrusage


def test_no_record_when_the_block_fails():
    records = []
    try:
        with budget.measure("broken", records):
            raise RuntimeError("kernel died")
    except RuntimeError:
        pass
    assert records == []


def test_write_budget_states_whether_targets_were_met(tmp_path):
    records = [budget.NotebookRecord("01_data.ipynb", 12.0, 900.0), budget.NotebookRecord("02.ipynb", 600.0, 3000.0)]
    md = budget.write_budget({"profile": "cpu", "budget_minutes": 10, "budget_peak_rss_gb": 64}, records,
                             612.0, tmp_path)
    doc = json.loads((tmp_path / "budget.json").read_text())
    assert doc["wall_time_met"] is False and doc["peak_memory_met"] is True
    assert [n["notebook"] for n in doc["notebooks"]] == ["01_data.ipynb", "02.ipynb"]
    assert doc["peak_rss_mb_sampled"] == 3000.0
    text = md.read_text()
    assert "10.2 min" in text and "NOT met" in text and "profile `cpu`" in text

    budget.write_budget({"profile": "ci"}, records, 612.0, tmp_path)
    doc = json.loads((tmp_path / "budget.json").read_text())
    assert doc["wall_time_met"] is None and "no target" in (tmp_path / "BUDGET.md").read_text()
