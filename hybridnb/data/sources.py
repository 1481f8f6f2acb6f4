"""Fetch and verify the raw data files (LAReQA XQuAD-R / MLQA-R, XTD10 captions, Multi30k captions).

Every raw file the project uses is pinned below: its path in the mirror layout (the layout of
``/work/shared/data`` and of ``cache_root() / "raw"``), its canonical URL (a GitHub raw URL at a fixed
commit), its size in bytes and its sha256. :func:`fetch` puts a dataset's files into
``cache_root() / "raw"`` and verifies them:

* with ``HYBRIDNB_MIRROR`` set to a folder, files are copied from ``$HYBRIDNB_MIRROR/<mirror path>``
  (for machines without a network);
* otherwise they are downloaded from their canonical URL.

A file is always written to a temporary file next to its destination, checked (size and sha256) and only
then moved into place with :func:`os.replace`, so the cache never holds a partial or wrong file. Files
already in the cache are re-hashed on every call (they are small) and fetched again if they differ.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from hybridnb.data.languages import check_languages
from hybridnb.paths import cache_root

__all__ = [
    "ChecksumError",
    "DownloadError",
    "RawFile",
    "DATASETS",
    "RAW_FILES",
    "XQUAD_R_LANGUAGES",
    "MLQA_R_LANGUAGES",
    "MIRROR_ENV",
    "dataset_files",
    "dataset_languages",
    "fetch",
    "sha256_file",
]

MIRROR_ENV = "HYBRIDNB_MIRROR"
DOWNLOAD_TIMEOUT_S = 60.0

XQUAD_R_LANGUAGES = ("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh")
MLQA_R_LANGUAGES = ("ar", "de", "en", "es", "hi", "vi", "zh")


class ChecksumError(ValueError):
    """A fetched or cached raw file does not have the pinned size / sha256."""


class DownloadError(OSError):
    """A canonical URL could not be downloaded (network failure, HTTP error)."""


@dataclass(frozen=True)
class _Source:
    """Where a dataset's files come from: a GitHub repository at a fixed commit."""

    folder: str  # mirror folder, e.g. "lareqa/xquad-r"
    repo: str  # "OWNER/REPO"
    commit: str
    repo_prefix: str  # prepended to the path inside `folder` to get the path in the repository


# dataset name -> source. The mirror drops multi30k's leading "data/", except for the repository's
# top-level README.md (handled in _repo_path).
DATASETS: dict[str, _Source] = {
    "xquad-r": _Source("lareqa/xquad-r", "google-research-datasets/lareqa",
                       "9bc8c7fb6dd8d01d72a05a93c2cb96882b0d299c", "xquad-r/"),
    "mlqa-r": _Source("lareqa/mlqa-r", "google-research-datasets/lareqa",
                      "354d67d1cd066854cdfbf5ad0e6105528976141d", "mlqa-r/"),
    "xtd10": _Source("xtd10", "adobe-research/Cross-lingual-Test-Dataset-XTD10",
                     "d77ff16148468c84287f3efcbf602a015c5e4954", ""),
    "multi30k": _Source("multi30k", "multi30k/dataset",
                        "a3d2e0d26b56f3846f66a952536ffed4e401d05a", "data/"),
}

# (mirror-relative path, bytes, sha256), exactly as in the mirror's MANIFEST.md.
_PINNED: tuple[tuple[str, int, str], ...] = (
    ("lareqa/mlqa-r/LICENSE", 19333, "336255dc30193e8e15d689d9481bb05673d89055718f3a96923a7ffb99adbbaf"),
    ("lareqa/mlqa-r/ar.json", 3329081, "2132fbc03208535c0fe01f2e2c5121d06f9c2aa799af93b0a719dbc105bdf137"),
    ("lareqa/mlqa-r/de.json", 887185, "ce9454dc5aa6f2d85c23cd6e49cb367fbb7c4c6e62d7f71e355c6b5dae4d0886"),
    ("lareqa/mlqa-r/en.json", 2251129, "fedd9a5cc0848dda80caf84aa36f482adaae230526a3f6e9e86926a93ef3b1e4"),
    ("lareqa/mlqa-r/es.json", 819818, "70ecba276b8c96a692b120693a595d076ce94ad21d4b28311538a9fcbfe0f9d7"),
    ("lareqa/mlqa-r/hi.json", 3179023, "4dd0fb3c06f737a5481d705bc1dcac7876712a5815c9265908fbb3a0696cb654"),
    ("lareqa/mlqa-r/vi.json", 1807239, "9d3baff6ba03e6793b25594217265ea59a136b9733833dca8a9582a84a78ff85"),
    ("lareqa/mlqa-r/zh.json", 1360698, "57f01d2fff50cf3392805635b01445339f225ad5bf28ba8443b12f8dbd1e69dc"),
    ("lareqa/xquad-r/LICENSE", 15058, "25ddafc153e4cfdafd70729574ef1b44348e1814709e57680d55347038d3f92c"),
    ("lareqa/xquad-r/ar.json", 2234875, "c52922d3b8ac1ae03ed5ac38647ad59870dca3dda2beefe18ecdc30729acb69d"),
    ("lareqa/xquad-r/de.json", 732156, "16fb0f4bf4916154b585a20c24c66074591c9718a1affe764ff4697572328949"),
    ("lareqa/xquad-r/el.json", 2810127, "163fd43ee785a30eb534ae2061e9eaa766a7ee4e8ffce5e4b422480c150f64b6"),
    ("lareqa/xquad-r/en.json", 628651, "7b0954f39297c27a31fef610f0883337dd2907fa8699151dc922afdd0fa12ffe"),
    ("lareqa/xquad-r/es.json", 746335, "f8e836b2d91009c4363e04315f7ede363eedbbb49c67dda60de6c4aa782f58de"),
    ("lareqa/xquad-r/hi.json", 2408404, "ea45ba8ae4513d1533b222bebdc02a90bc319c055d3aeea68584a053d2e92872"),
    ("lareqa/xquad-r/ru.json", 2764904, "7f4dff853538b9a5fcc28c070b8bb983a5c5d190ac747b8e005a1ada9cab18f1"),
    ("lareqa/xquad-r/th.json", 2618544, "c3a041864c3a9fb0b4dd91cfdf99cf36b411b3e704c58a303c97bc6dc786cfe4"),
    ("lareqa/xquad-r/tr.json", 827827, "f3e8c13002bbce154a4578f535f7533cb70f3da08840e6b62735935baec7bd94"),
    ("lareqa/xquad-r/vi.json", 1132303, "e35926bf5cc6fc6ecbdfca49467aabeb454f08d152d7818143a906bd31dde995"),
    ("lareqa/xquad-r/zh.json", 959291, "80c2cde7b9c2fb134c303cbb52f2ba396ead9eb0014aec43993543d2ba9e93ed"),
    ("multi30k/README.md", 4509, "d85366a011c276342f99bcd1fe32ca126e0295914413f7bf45201972f241818c"),
    ("multi30k/task1/image_splits/test_2016_flickr.txt", 14756,
     "871e8ecafc66fb13e044ecccf669d04a865b4c58553227df86b933f0337a1563"),
    ("multi30k/task1/image_splits/train.txt", 427810,
     "97ee57e160a46c7d0e75298ebf57967e1245698a6f8806436ff07e61d1a41221"),
    ("multi30k/task1/image_splits/val.txt", 14966,
     "db26f03eaf833ec47bfaea129ed053b68cbcfc5d1f9a09c4cdf7c88fbfea7108"),
    ("multi30k/task1/raw/test_2016_flickr.cs.gz", 22572,
     "200a4a74cc9560f051924abb9803be008d1908d77f747e9141aeb86dfd2797f1"),
    ("multi30k/task1/raw/test_2016_flickr.de.gz", 22890,
     "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8"),
    ("multi30k/task1/raw/test_2016_flickr.en.gz", 21077,
     "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9"),
    ("multi30k/task1/raw/test_2016_flickr.fr.gz", 22310,
     "6d326e188d259fb1d04ac19eae3af956559b3a0b93d7635e56c90987c40c8b90"),
    ("multi30k/task1/raw/train.cs.gz", 593827, "a65adb8b32e3bc664f21ecba7a6e7f6950fd1f405e135f7c312faabdb6255077"),
    ("multi30k/task1/raw/train.de.gz", 637044, "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6"),
    ("multi30k/task1/raw/train.en.gz", 568929, "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f"),
    ("multi30k/task1/raw/train.fr.gz", 604242, "622e75069e9f4c577425c4f277116ce66e63a2401c0a2312d90073cb12379a3c"),
    ("multi30k/task1/raw/val.cs.gz", 22096, "b63226e05c4bd5dd6a42897d74b86a1b9d2c31498252c572b1ea7f7996927fcc"),
    ("multi30k/task1/raw/val.de.gz", 24681, "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a"),
    ("multi30k/task1/raw/val.en.gz", 21650, "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28"),
    ("multi30k/task1/raw/val.fr.gz", 23001, "ca3106f1a72390591d25f6c45cb4cd39dec4cd3f123e099748a3ce5256c160e9"),
    ("xtd10/LICENSE.md", 3632, "f9908a6ae7d75e49452013687f4db397b035d7bb69f3975961eb739e878a83bf"),
    ("xtd10/MIC/test_1kcaptions_de.txt", 75593, "51f1e9fe05d85b7cd33543676ed2fea51b05399cc403a5fca557ca7ecdb9a207"),
    ("xtd10/MIC/test_1kcaptions_fr.txt", 79287, "84aa16954706a0f654b59788ffb6a3bcb1b1d9d12dc9d7a3de26730bc04664b5"),
    ("xtd10/README.md", 1517, "7632ce5d99130a684ea65270edb62de2200eb5f6b043837f8d15115b1ee34fe2"),
    ("xtd10/STAIR/test_1kcaptions_jp.txt", 63028, "20908aa5763ee7b1bacc1f29aa507532d3dc6a7e6a8c43e6acd2ec72d1e80c10"),
    ("xtd10/XTD10/test_1kcaptions_en.txt", 65828, "ac5531b6842c1d469fba80aa6f44e2af054e84a41da8f9eaf01d831e943039b9"),
    ("xtd10/XTD10/test_1kcaptions_es.txt", 66315, "cacc43d4e7af56b02033865531ea70494049f1d0dd3ea89ff2a217e7e190c4f2"),
    ("xtd10/XTD10/test_1kcaptions_it.txt", 65178, "b4095d3550eb1accf8c9c78314b4bef45847a3929b5c5fe15a1264ea31dec7cc"),
    ("xtd10/XTD10/test_1kcaptions_ko.txt", 70124, "92d35e082cd081724560c9abdb2b45753ceb52aaabddb9a0f79dc04967a36800"),
    ("xtd10/XTD10/test_1kcaptions_pl.txt", 66605, "b6af6b7941f44e902b50736dcf9a7221af28e755a259511652c599cf6ae89c78"),
    ("xtd10/XTD10/test_1kcaptions_ru.txt", 95035, "7d93631ff85b53592091b3cbfd9ca963397e77038fb3d0fdd9374b1b02ae98a3"),
    ("xtd10/XTD10/test_1kcaptions_tr.txt", 71756, "147e9763dcb6e6ebba0b98fc799f0145c7d90005fa03ca8ec5a7cf29a04dd136"),
    ("xtd10/XTD10/test_1kcaptions_zh.txt", 58660, "17229ff02ac85dd2d165f8316515a24fbe5100dbf486c22aaa12105dfb3353bf"),
    ("xtd10/XTD10/test_image_names.txt", 31600, "504a472dfd40e44f2d0facd6320b9dc1c7d64c58aac9840f0b1da4807cb3a30a"),
)


@dataclass(frozen=True)
class RawFile:
    """One pinned raw file."""

    dataset: str
    path: str  # mirror-relative, e.g. "lareqa/xquad-r/en.json"
    url: str  # canonical URL at a fixed commit
    size: int
    sha256: str
    lang: str | None  # language of a per-language file; None for files every fetch includes (LICENSE, ...)


CANDIDATE_MODES = ("sentence+context", "sentence")  # LAReQA's candidate: the sentence with its paragraph, or alone


def check_candidate_mode(mode: str) -> str:
    """`mode` if it is one of :data:`CANDIDATE_MODES` (the one check: profiles, training data, overlap)."""
    if mode not in CANDIDATE_MODES:
        raise ValueError(f"unknown candidate_mode {mode!r}; choose one of {list(CANDIDATE_MODES)}")
    return mode


def _dataset_of(path: str) -> str:
    for name, src in DATASETS.items():
        if path.startswith(src.folder + "/"):
            return name
    raise AssertionError(f"pinned file {path} is in no dataset folder")


def _repo_path(dataset: str, path: str) -> str:
    src = DATASETS[dataset]
    rel = path[len(src.folder) + 1:]
    if dataset == "multi30k" and rel == "README.md":
        return rel  # the repository's top-level README; only the data files live under data/
    return src.repo_prefix + rel


_LANG_PATTERNS = (
    re.compile(r"^lareqa/[^/]+/([a-z]{2})\.json$"),  # lareqa/xquad-r/en.json
    re.compile(r"^xtd10/[^/]+/test_1kcaptions_([a-z]{2})\.txt$"),  # xtd10/XTD10/test_1kcaptions_en.txt
    re.compile(r"^multi30k/task1/raw/[^/]+\.([a-z]{2})\.gz$"),  # multi30k/task1/raw/val.en.gz
)


def _lang_of(path: str) -> str | None:
    for pattern in _LANG_PATTERNS:
        m = pattern.match(path)
        if m:
            return m.group(1)
    return None


def _make_raw_file(path: str, size: int, sha256: str) -> RawFile:
    dataset = _dataset_of(path)
    src = DATASETS[dataset]
    url = f"https://raw.githubusercontent.com/{src.repo}/{src.commit}/{_repo_path(dataset, path)}"
    return RawFile(dataset, path, url, size, sha256, _lang_of(path))


#: Every pinned raw file, keyed by mirror-relative path.
RAW_FILES: dict[str, RawFile] = {p: _make_raw_file(p, n, h) for p, n, h in _PINNED}


def dataset_files(dataset: str) -> list[RawFile]:
    """All pinned files of `dataset` (ValueError for an unknown name)."""
    _check_dataset(dataset)
    return [f for f in RAW_FILES.values() if f.dataset == dataset]


def dataset_languages(dataset: str) -> tuple[str, ...]:
    """The languages `fetch(dataset, languages=...)` accepts, sorted."""
    return tuple(sorted({f.lang for f in dataset_files(dataset) if f.lang}))


def _check_dataset(dataset: str) -> None:
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid datasets: {', '.join(DATASETS)}")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _matches(path: Path, rf: RawFile) -> bool:
    return path.is_file() and path.stat().st_size == rf.size and sha256_file(path) == rf.sha256


def _mirror_root() -> Path | None:
    value = os.environ.get(MIRROR_ENV)
    if not value:
        return None
    root = Path(value).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{MIRROR_ENV}={value!r} is not a folder (unset it to download instead)")
    return root


def _select(dataset: str, languages: list[str] | None) -> list[RawFile]:
    """The files of `dataset` needed for `languages` (all languages when None), validated."""
    files = dataset_files(dataset)
    if languages is None:
        return files
    languages = check_languages(languages, dataset_languages(dataset), f"dataset {dataset!r}")
    wanted = set(languages)
    return [f for f in files if f.lang is None or f.lang in wanted]


def _write_verified(rf: RawFile, dest: Path, blocks) -> None:
    """Write the byte blocks of `blocks()` to a temp file beside `dest`, verify it, move it into place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as out:
            for block in blocks():
                out.write(block)
                h.update(block)
                size += len(block)
        actual = h.hexdigest()
        if size != rf.size or actual != rf.sha256:
            raise ChecksumError(
                f"checksum mismatch for {rf.path}: expected sha256 {rf.sha256} ({rf.size} bytes), "
                f"got sha256 {actual} ({size} bytes); the file was not kept"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _blocks_from_file(src: Path, chunk: int = 1 << 20):
    def gen():
        with open(src, "rb") as f:
            while block := f.read(chunk):
                yield block

    return gen


def _blocks_from_url(rf: RawFile, chunk: int = 1 << 20):
    def gen():
        try:
            with urllib.request.urlopen(rf.url, timeout=DOWNLOAD_TIMEOUT_S) as resp:
                while block := resp.read(chunk):
                    yield block
        except (OSError, http.client.HTTPException) as e:  # URLError/HTTPError, timeouts, DNS, resets
            raise DownloadError(
                f"could not download {rf.path} from {rf.url}: {e}. On a machine without network access, set "
                f"{MIRROR_ENV} to a folder holding a copy of the raw files in the mirror layout "
                f"(e.g. {MIRROR_ENV}=/path/to/data with {rf.path} inside)."
            ) from e

    return gen


def fetch(dataset: str, languages: list[str] | None = None) -> Path:
    """Make sure `dataset`'s raw files are in the cache and verified; return the dataset's cache folder.

    Args:
        dataset: one of ``DATASETS`` ("xquad-r", "mlqa-r", "xtd10", "multi30k").
        languages: only fetch these languages' files (plus the dataset's shared files: LICENSE, README,
            image lists); None fetches everything. Valid codes: :func:`dataset_languages`.

    Returns:
        ``cache_root() / "raw" / <dataset folder>``, e.g. ``.../raw/lareqa/xquad-r``.

    Raises:
        ValueError: unknown dataset or language (before anything is copied).
        FileNotFoundError: ``HYBRIDNB_MIRROR`` is set but lacks a needed file (before anything is copied).
        ChecksumError: a copied/downloaded file has the wrong size or sha256 (the file is not kept).
        DownloadError: a download failed (the message explains ``HYBRIDNB_MIRROR``).
    """
    files = _select(dataset, languages)  # validates dataset and languages
    mirror = _mirror_root()
    raw = cache_root() / "raw"

    todo: list[RawFile] = []
    for rf in files:
        dest = raw / rf.path
        if dest.exists() and not _matches(dest, rf):
            dest.unlink()  # stale or corrupt cache entry: never keep a bad file
        if not dest.exists():
            todo.append(rf)

    if mirror is not None:
        missing = [rf.path for rf in todo if not (mirror / rf.path).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{MIRROR_ENV}={str(mirror)!r} lacks {len(missing)} file(s) of {dataset!r}: "
                + ", ".join(str(mirror / p) for p in missing)
            )

    for rf in todo:
        dest = raw / rf.path
        if mirror is not None:
            _write_verified(rf, dest, _blocks_from_file(mirror / rf.path))
        else:
            _write_verified(rf, dest, _blocks_from_url(rf))
    return raw / DATASETS[dataset].folder
