"""Named public corpora and users' own text files, verified by SHA-256.

A named corpus file (for example ``tinyshakespeare/input.txt``) is looked up in this order:

1. The mirror folder: the ``data_dir`` argument (the CLI's ``--data-dir``), else the environment
   variable ``SEQGEN_DATA_DIR``. When a mirror is given, ``<mirror>/<relative_path>`` must exist
   and match its checksum; seqgen never falls back to the network behind a mirror's back.
2. The cache folder: the ``cache_dir`` argument, else ``SEQGEN_CACHE_DIR``, else
   ``~/.cache/seqgen``. A cached copy is used when its checksum matches.
3. The public URL: downloaded into a temporary file beside its final place in the cache,
   verified, then renamed into place, so the cache never holds a half-written or wrong file.

Every registered file has its SHA-256 embedded below. A file's check is remembered per process
(keyed by path, size and modification time), so loading the same corpus twice hashes it once.

User files are plain UTF-8 text: one string for language modelling, or aligned lines (two
files, or one two-column TSV file) for translation.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.client
import itertools
import logging
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from seqgen.errors import DataError

logger = logging.getLogger(__name__)

DATA_DIR_VARIABLE = "SEQGEN_DATA_DIR"
CACHE_DIR_VARIABLE = "SEQGEN_CACHE_DIR"
DOWNLOAD_TIMEOUT_SECONDS = 30.0
_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """One file of a corpus: where it lives under a mirror or cache, its URL and checksum.

    With ``member``, the URL is a zip archive and the file is that member of it, checked by its
    own SHA-256 (the archive's is not published): the mirror and the cache hold the member.
    """

    relative_path: str
    url: str
    sha256: str
    member: str = ""


@dataclass(frozen=True)
class TextCorpus:
    """A single plain-text file for language modelling."""

    name: str
    file: RemoteFile

    @property
    def files(self) -> tuple[RemoteFile, ...]:
        return (self.file,)


@dataclass(frozen=True)
class ParallelCorpus:
    """Sentence-aligned gzip files, one per split and language, one sentence per line."""

    name: str
    languages: tuple[str, ...]
    splits: tuple[str, ...]
    path_template: str  # formatted with split= and language= to give a relative path
    files: tuple[RemoteFile, ...]

    def file(self, split: str, language: str) -> RemoteFile:
        relative_path = self.path_template.format(split=split, language=language)
        for remote in self.files:
            if remote.relative_path == relative_path:
                return remote
        raise DataError(f"{self.name} has no file {relative_path}")

    def language_pairs(self) -> list[str]:
        return [
            f"{source}-{target}" for source, target in itertools.permutations(self.languages, 2)
        ]


_TINYSHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
_MULTI30K_URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/"

# Copied from the published files (data/SHA256SUMS of the development mirror).
_MULTI30K_SHA256 = {
    "test_2016_flickr.cs.gz": "200a4a74cc9560f051924abb9803be008d1908d77f747e9141aeb86dfd2797f1",
    "test_2016_flickr.de.gz": "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
    "test_2016_flickr.en.gz": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
    "test_2016_flickr.fr.gz": "6d326e188d259fb1d04ac19eae3af956559b3a0b93d7635e56c90987c40c8b90",
    "train.cs.gz": "a65adb8b32e3bc664f21ecba7a6e7f6950fd1f405e135f7c312faabdb6255077",
    "train.de.gz": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
    "train.en.gz": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    "train.fr.gz": "622e75069e9f4c577425c4f277116ce66e63a2401c0a2312d90073cb12379a3c",
    "val.cs.gz": "b63226e05c4bd5dd6a42897d74b86a1b9d2c31498252c572b1ea7f7996927fcc",
    "val.de.gz": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
    "val.en.gz": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
    "val.fr.gz": "ca3106f1a72390591d25f6c45cb4cd39dec4cd3f123e099748a3ce5256c160e9",
}
_TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"

_MULTI30K = ParallelCorpus(
    name="multi30k",
    languages=("en", "de", "fr", "cs"),
    splits=("train", "val", "test_2016_flickr"),
    path_template="multi30k/{split}.{language}.gz",
    files=tuple(
        RemoteFile(f"multi30k/{name}", _MULTI30K_URL + name, sha256)
        for name, sha256 in _MULTI30K_SHA256.items()
    ),
)

# The registry: tests and plugins may add entries (e.g. ``monkeypatch.setitem``).
CORPORA: dict[str, TextCorpus | ParallelCorpus] = {
    "tinyshakespeare": TextCorpus(
        name="tinyshakespeare",
        file=RemoteFile("tinyshakespeare/input.txt", _TINYSHAKESPEARE_URL, _TINYSHAKESPEARE_SHA256),
    ),
    "multi30k": _MULTI30K,
}


# --- fetching: mirror, cache, download -------------------------------------------------------


def fetch(
    relative_path: str,
    *,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """Return a local, checksum-verified copy of a registered corpus file (see module doc)."""
    return fetch_file(_find_remote_file(relative_path), data_dir=data_dir, cache_dir=cache_dir)


def fetch_file(
    remote: RemoteFile,
    *,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """A local, checksum-verified copy of ``remote``: from the mirror, the cache, or its URL."""
    mirror = _folder_from(data_dir, DATA_DIR_VARIABLE)
    if mirror is not None:
        return _from_mirror(mirror, remote)
    cache = _folder_from(cache_dir, CACHE_DIR_VARIABLE) or Path.home() / ".cache" / "seqgen"
    target = cache / remote.relative_path
    if target.is_file():
        if _sha256_of(target) == remote.sha256:
            return target
        logger.warning("cached %s fails its checksum; downloading it again", target)
    _download(remote, target)
    return target


def _find_remote_file(relative_path: str) -> RemoteFile:
    for corpus in CORPORA.values():
        for remote in corpus.files:
            if remote.relative_path == relative_path:
                return remote
    known = ", ".join(sorted(corpus.name for corpus in CORPORA.values()))
    raise DataError(f"unknown corpus file '{relative_path}'; known corpora: {known}")


def _folder_from(argument: str | Path | None, variable: str) -> Path | None:
    value = argument if argument is not None else os.environ.get(variable)
    if value is None or str(value) == "":
        return None
    return Path(value).expanduser()


def _from_mirror(mirror: Path, remote: RemoteFile) -> Path:
    path = mirror / remote.relative_path
    if not path.is_file():
        raise DataError(
            f"no such file: {path}; the mirror folder {mirror} (--data-dir or {DATA_DIR_VARIABLE})"
            f" lacks {remote.relative_path}; copy it there from {remote.url}"
        )
    actual = _sha256_of(path)
    if actual != remote.sha256:
        raise DataError(
            f"checksum mismatch for {path}: expected sha256 {remote.sha256}, got {actual};"
            f" replace it with a fresh copy of {remote.url}"
        )
    return path


def _sha256_of(path: Path) -> str:
    status = path.stat()
    return _cached_sha256(str(path.resolve()), status.st_size, status.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    """Hash a file in 1 MiB chunks; size and mtime are in the key so an edited file is re-read."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _download(remote: RemoteFile, target: Path) -> None:
    """Download to a temporary file beside ``target``, verify, then rename into place."""
    logger.info("downloading %s to %s", remote.url, target)
    temporary: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        prefix = f".{target.name}."
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=prefix, delete=False) as handle:
            temporary = Path(handle.name)
            actual = _copy_from_url(remote, handle)
        if remote.member:
            actual = _keep_member(temporary, remote)
        if actual != remote.sha256:
            raise DataError(
                f"checksum mismatch for {remote.url}: expected sha256 {remote.sha256},"
                f" got {actual}; the download was discarded"
            )
        os.replace(temporary, target)
    except BaseException as error:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):  # network errors arrive as DataError; this is the disk
            raise DataError(
                f"cannot write {target} ({error.strerror or error});"
                f" point {CACHE_DIR_VARIABLE} at a writable folder"
            ) from error
        raise


def _keep_member(archive: Path, remote: RemoteFile) -> str:
    """Replace the zip ``archive`` by its member ``remote.member``; the member's SHA-256."""
    try:
        with zipfile.ZipFile(archive) as opened:
            data = opened.read(remote.member)
    except (zipfile.BadZipFile, KeyError) as error:
        raise DataError(
            f"{remote.url} is not a zip archive holding {remote.member} ({error})"
        ) from None
    archive.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _copy_from_url(remote: RemoteFile, handle: BinaryIO) -> str:
    """Stream ``remote.url`` into ``handle``; return the SHA-256 of what was written."""
    digest = hashlib.sha256()
    try:
        response = urllib.request.urlopen(remote.url, timeout=DOWNLOAD_TIMEOUT_SECONDS)
    except (OSError, http.client.HTTPException, ValueError) as error:
        raise _offline_error(remote, error) from error
    with response:
        while True:
            try:
                chunk = response.read(_CHUNK_BYTES)
            except (OSError, http.client.HTTPException) as error:
                raise _offline_error(remote, error) from error
            if not chunk:
                return digest.hexdigest()
            digest.update(chunk)
            handle.write(chunk)


def _offline_error(remote: RemoteFile, error: BaseException) -> DataError:
    if isinstance(error, urllib.error.HTTPError):
        reason = f"HTTP {error.code} {error.reason}"
    elif isinstance(error, urllib.error.URLError):
        reason = str(error.reason)
    else:
        reason = str(error) or type(error).__name__
    return DataError(
        f"could not download {remote.url} ({reason}); if this machine is offline, point"
        f" {DATA_DIR_VARIABLE} (or --data-dir) at a folder holding {remote.relative_path}"
    )


# --- text for language modelling --------------------------------------------------------------


def read_text_file(path: str | Path) -> str:
    """Read a user's UTF-8 text file (a leading byte-order mark is dropped)."""
    path = Path(path)
    text = _decode_utf8(_read_bytes(path), path)
    if not text.strip():
        raise DataError(f"{path} is empty; a training file needs text")
    return text


def load_text(
    source: str,
    *,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> str:
    """Text of a named corpus (``tinyshakespeare``) or of a UTF-8 file at path ``source``."""
    if Path(source).is_file():
        return read_text_file(source)
    corpus = CORPORA.get(source)
    if isinstance(corpus, TextCorpus):
        path = fetch(corpus.file.relative_path, data_dir=data_dir, cache_dir=cache_dir)
        return read_text_file(path)
    if corpus is None and _looks_like_path(source):
        raise DataError(f"no such file: {source}")
    known = ", ".join(
        sorted(name for name, item in CORPORA.items() if isinstance(item, TextCorpus))
    )
    hint = f" ('{source}' is a parallel corpus, for translation)" if corpus is not None else ""
    raise DataError(
        f"unknown text corpus '{source}'{hint}; known text corpora: {known};"
        f" a path to a UTF-8 text file also works"
    )


def _looks_like_path(source: str) -> bool:
    """Whether ``source`` reads as a file path, so a typo gets 'no such file' not 'unknown'."""
    return os.sep in source or "/" in source or Path(source).suffix != ""


# --- parallel text for translation ------------------------------------------------------------


def load_parallel(
    spec: str,
    split: str,
    *,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> tuple[list[str], list[str]]:
    """Aligned (sources, targets) of a named parallel corpus, ``spec`` like ``multi30k:de-en``."""
    corpus, source_language, target_language = _parse_parallel_spec(spec)
    if split not in corpus.splits:
        raise DataError(
            f"unknown split '{split}' for {corpus.name}; valid: {', '.join(corpus.splits)}"
        )
    paths = [
        fetch(corpus.file(split, language).relative_path, data_dir=data_dir, cache_dir=cache_dir)
        for language in (source_language, target_language)
    ]
    return _aligned(_read_lines(paths[0]), _read_lines(paths[1]), paths[0], paths[1])


def parallel_paths(
    spec: str,
    split: str,
    *,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> tuple[Path, Path]:
    """The local (source, target) files of a named parallel corpus's split, for readers that
    stream them instead of loading them (seqgen.data.streaming)."""
    corpus, source_language, target_language = _parse_parallel_spec(spec)
    if split not in corpus.splits:
        raise DataError(
            f"unknown split '{split}' for {corpus.name}; valid: {', '.join(corpus.splits)}"
        )
    source, target = (
        fetch(corpus.file(split, language).relative_path, data_dir=data_dir, cache_dir=cache_dir)
        for language in (source_language, target_language)
    )
    return source, target


def _parse_parallel_spec(spec: str) -> tuple[ParallelCorpus, str, str]:
    name, _, pair = spec.partition(":")
    corpus = CORPORA.get(name)
    if not isinstance(corpus, ParallelCorpus):
        known = ", ".join(
            sorted(key for key, item in CORPORA.items() if isinstance(item, ParallelCorpus))
        )
        raise DataError(
            f"unknown parallel corpus '{name}' in '{spec}'; known: {known}"
            f" (written as NAME:SOURCE-TARGET, e.g. multi30k:de-en)"
        )
    valid_pairs = sorted(corpus.language_pairs())
    if pair not in valid_pairs:
        raise DataError(
            f"unknown language pair '{pair}' for {corpus.name}; valid: {', '.join(valid_pairs)}"
        )
    source_language, target_language = pair.split("-")
    return corpus, source_language, target_language


def read_parallel_files(
    source_path: str | Path, target_path: str | Path
) -> tuple[list[str], list[str]]:
    """Aligned (sources, targets) from two UTF-8 files (or ``.gz``), one sentence per line."""
    source_path, target_path = Path(source_path), Path(target_path)
    return _aligned(_read_lines(source_path), _read_lines(target_path), source_path, target_path)


def read_tsv(path: str | Path) -> tuple[list[str], list[str]]:
    """Aligned (sources, targets) from a UTF-8 file of ``source<TAB>target`` lines."""
    path = Path(path)
    sources: list[str] = []
    targets: list[str] = []
    for line_number, line in enumerate(_read_lines(path), start=1):
        tabs = line.count("\t")
        if tabs != 1:
            raise DataError(
                f"{path}, line {line_number}: expected two columns separated by one tab,"
                f" found {tabs} tabs"
            )
        source, target = line.split("\t")
        sources.append(source)
        targets.append(target)
    return sources, targets


def _aligned(
    sources: list[str], targets: list[str], source_path: Path, target_path: Path
) -> tuple[list[str], list[str]]:
    if len(sources) != len(targets):
        raise DataError(
            f"parallel files differ in length: {len(sources)} lines in {source_path}"
            f" but {len(targets)} lines in {target_path}; each line must pair with one line"
        )
    return sources, targets


def _read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 (optionally gzip) file, each without its line ending, else unchanged."""
    data = _read_bytes(path)
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as error:
            raise DataError(f"{path} is not a valid gzip file ({error})") from error
    what = " of the decompressed text" if path.suffix == ".gz" else ""
    text = _decode_utf8(data, path, what=what)
    if not text.strip():
        raise DataError(f"{path} is empty; it needs one sentence per line")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def _read_bytes(path: Path) -> bytes:
    if path.is_dir():
        raise DataError(f"{path} is a folder; give the path of a text file")
    try:
        return path.read_bytes()
    except FileNotFoundError as error:
        raise DataError(f"no such file: {path}") from error
    except OSError as error:
        raise DataError(f"cannot read {path} ({error.strerror or error})") from error


def _decode_utf8(data: bytes, path: Path, *, what: str = "") -> str:
    """Decode UTF-8, dropping a leading byte-order mark; offsets count from the first byte."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path} is not UTF-8 (invalid byte at offset {error.start}{what}); convert it to"
            f" UTF-8, e.g. with: iconv -f LATIN1 -t UTF-8 {path} > converted.txt"
        ) from error
    return text.removeprefix("\ufeff")
