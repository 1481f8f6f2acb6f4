"""hybridnb.studies.budget: the pipeline's time and memory record, against the profile's targets."""

import json
import os
import subprocess
import sys

from hybridnb.studies import budget


def test_measure_samples_the_rss_of_child_processes(tmp_path):
    records = []
    with budget.measure("child", records):  # a child holding ~200 MB for a second
        subprocess.run([sys.executable, "-c", "import time; b = bytearray(200 * 2**20); time.sleep(1.5)"], check=True)
    (rec,) = records
    assert rec.notebook == "child" and rec.seconds >= 1.5
    assert rec.peak_rss_mb >= 200
    assert budget.children_peak_rss_mb() >= 200  # exact, from getrusage


def test_the_tree_footprint_counts_a_shared_mapping_once(tmp_path):
    """Two children reading the same 300 MB file through mmap: the sum of their RSS counts it twice, the sum of
    PSS (the budget's tree measure) about once."""
    import pytest

    data = tmp_path / "shared.bin"
    data.write_bytes(os.urandom(300 * 2**20))
    child = ("import mmap, sys, time\nf = open(sys.argv[1], 'rb'); m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)\n"
             "s = sum(m[i] for i in range(0, len(m), 4096)); time.sleep(2.5)")
    import psutil

    records = []
    # this process may already have children (a test worker's kernels or pools): measure on top of them
    base_rss, base_pss = budget._tree_memory_mb(psutil.Process())
    with budget.measure("two readers", records):
        procs = [subprocess.Popen([sys.executable, "-c", child, str(data)]) for _ in range(2)]
        assert [p.wait() for p in procs] == [0, 0]
    (rec,) = records
    if not rec.peak_pss_mb or rec.peak_pss_mb == rec.peak_rss_mb:
        pytest.skip("no PSS on this system (/proc/<pid>/smaps_rollup)")
    assert rec.peak_rss_mb - base_rss >= 590  # 2 x 300 MB
    assert 290 <= rec.peak_pss_mb - base_pss <= 450  # 300 MB once, plus the two interpreters' own pages


def test_a_child_in_its_parents_address_space_is_told_apart(tmp_path):
    """The check that leaves out a vfork child before its exec (it would count its parent's pages): a process
    shares its own address space, not a started child's; False, not an error, where kcmp is unavailable."""
    import platform

    import pytest

    if not sys.platform.startswith("linux") or platform.machine() not in budget._KCMP_SYSCALL:
        assert budget._shares_address_space(os.getpid(), os.getpid()) is False
        return
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1)"])
    try:
        if not budget._shares_address_space(os.getpid(), os.getpid()):
            pytest.skip("kcmp(2) is not permitted here")
        assert budget._shares_address_space(child.pid, os.getpid()) is False
    finally:
        child.wait()


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
    assert doc["peak_rss_mb_sampled"] == 3000.0 and doc["peak_pss_mb_sampled"] == 3000.0  # no PSS read: RSS
    text = md.read_text()
    assert "10.2 min" in text and "NOT met" in text and "profile `cpu`" in text

    budget.write_budget({"profile": "ci"}, records, 612.0, tmp_path)
    doc = json.loads((tmp_path / "budget.json").read_text())
    assert doc["wall_time_met"] is None and "no target" in (tmp_path / "BUDGET.md").read_text()


def test_reused_results_get_no_verdict(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRIDNB_REPORTS", str(tmp_path / "reports"))
    monkeypatch.setenv("HYBRIDNB_CACHE", str(tmp_path / "cache"))
    old = tmp_path / "reports" / "runs" / "cpu-mono-a-to-b-seed0" / "results.json"
    redone = tmp_path / "reports" / "cpu" / "zero_shot" / "e5" / "results.json"
    other = tmp_path / "reports" / "runs" / "ci-mono-a-to-b-seed0" / "results.json"  # another profile's
    for p in (old, redone, other):
        p.parent.mkdir(parents=True)
        p.write_text("{}")
    before = budget.results_snapshot("cpu")
    assert sorted(before) == sorted([str(old), str(redone)])
    assert budget.cache_is_empty()
    untouched = tmp_path / "reports" / "runs" / "cpu-hybrid0.25-a-to-b-seed0" / "results.json"  # e.g. a sweep's
    untouched.parent.mkdir(parents=True)
    untouched.write_text("{}")
    before = budget.results_snapshot("cpu")
    os.utime(redone, ns=(before[str(redone)] + 10**9, before[str(redone)] + 10**9))  # rewritten by the run
    # the kernels read `old` (reused) and `redone` (after writing it); nobody read `untouched`
    reused = budget.reused_results(before, [str(old), str(redone), str(old)])
    assert reused == ["runs/cpu-mono-a-to-b-seed0"]
    assert budget.reused_results(before, []) == []  # a run that read nothing earlier reused nothing
    records = [budget.NotebookRecord("01_data.ipynb", 5.0, 100.0)]
    md = budget.write_budget({"profile": "cpu", "budget_minutes": 45, "budget_peak_rss_gb": 6}, records, 5.0,
                             tmp_path, reused, True)
    doc = json.loads((tmp_path / "budget.json").read_text())
    assert doc["wall_time_met"] is None and doc["peak_memory_met"] is None
    assert doc["reused_results"] == reused and doc["cache_was_empty"] is True
    assert "Not a from-scratch run" in md.read_text() and "FRESH=1" in md.read_text()
    md = budget.write_budget({"profile": "cpu", "budget_minutes": 45, "budget_peak_rss_gb": 6}, records, 5.0,
                             tmp_path, [], True)
    assert "cache started empty" in md.read_text() and "**met**" in md.read_text()


def test_machine_speed_comes_from_the_results_this_run_computed(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRIDNB_REPORTS", str(tmp_path / "reports"))
    reused = tmp_path / "reports" / "runs" / "cpu-mono-a-to-b-seed0" / "results.json"
    computed = tmp_path / "reports" / "cpu" / "zero_shot" / "e5" / "results.json"
    fresh_run = tmp_path / "reports" / "runs" / "cpu-hybrid-a-to-b-seed0" / "results.json"

    def result(path, n, seconds):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"timings": {"xquad-r": {"encode_candidates_s": seconds}, "mlqa-r": {}},
                                    "datasets": {"xquad-r": {"n_candidates": n}, "mlqa-r": {"n_candidates": 7}}}))

    result(reused, 1000, 1.0)
    result(computed, 1000, 10.0)
    before = budget.results_snapshot("cpu")
    result(fresh_run, 1300, 20.0)  # written by this run (not in the snapshot)
    os.utime(computed, ns=(before[str(computed)] + 10**9,) * 2)  # rewritten by this run
    speeds = budget.encode_speeds("cpu", before)
    assert speeds == {"xquad-r, ?": [100.0, 65.0]}  # zero-shot, then the run; the reused one and untimed mlqa-r left out
    for path, steps in ((fresh_run, [7.0, 9.0, 8.0, "x"]), (reused, [1.0])):  # a training log for each run
        path.with_name("train_log.jsonl").write_text("".join(
            json.dumps({"step": i, "step_s": s} if s != "x" else {"step": i}) + "\n" for i, s in enumerate(steps)))
    step_s = budget.train_step_seconds("cpu", before)
    assert step_s == {"cpu-hybrid-a-to-b-seed0": 8.0}  # the median; the reused run left out
    records = [budget.NotebookRecord("02_zero_shot.ipynb", 5.0, 100.0)]
    md = budget.write_budget({"profile": "cpu"}, records, 5.0, tmp_path, [], True, speeds, step_s)
    assert "- Evaluation, xquad-r, ?: candidate passages embedded per second: 100, 65 (median 82)" in md.read_text()
    assert "- Training, cpu-hybrid-a-to-b-seed0: median 8.00 s per step" in md.read_text()
    doc = json.loads((tmp_path / "budget.json").read_text())
    assert doc["passages_per_s"] == speeds and doc["train_step_s"] == step_s
    md = budget.write_budget({"profile": "cpu"}, records, 5.0, tmp_path, [], True)
    assert "Machine speed" not in md.read_text()


def test_the_reuse_log_collects_what_kernels_reused(tmp_path, monkeypatch):
    from hybridnb import config, paths
    from hybridnb import file_hashes
    from hybridnb.studies import runs

    monkeypatch.setenv("HYBRIDNB_REPORTS", str(tmp_path / "reports"))
    log = tmp_path / "reuse.log"
    cfg = runs.check_run(config.load_profile("ci")).replace(run_name="cpu-mono-a-to-b-seed0", hash="abc")
    folder = tmp_path / "reports" / "runs" / cfg.run_name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"hash": "abc"}))
    (folder / "results.json").write_text(json.dumps({"datasets": {}}))
    file_hashes.write_manifest(folder)  # as write_run leaves it
    monkeypatch.delenv("HYBRIDNB_REUSE_LOG", raising=False)
    assert runs.find_finished(cfg) == {"datasets": {}} and not log.exists()  # no log asked for: none written
    monkeypatch.setenv("HYBRIDNB_REUSE_LOG", str(log))
    assert runs.find_finished(cfg.replace(hash="other")) is None  # not reused: not logged
    assert budget.read_reuse_log(log) == []
    runs.find_finished(cfg)
    paths.note_reuse(folder / "results.json")
    assert budget.read_reuse_log(log) == [str((folder / "results.json").resolve())] * 2
