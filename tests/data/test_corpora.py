"""Tests for seqgen.data.corpora: lookup order, verification, and readable errors.

Tests marked by ``needs_mirror`` read the real corpora from the folder in the environment
variable SEQGEN_DATA_DIR and are skipped when it is unset. No test touches the network: an
autouse fixture replaces ``urllib.request.urlopen`` with one that fails.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from seqgen.data import corpora
from seqgen.data.corpora import (
    CACHE_DIR_VARIABLE,
    DATA_DIR_VARIABLE,
    ParallelCorpus,
    RemoteFile,
    TextCorpus,
    fetch,
    load_parallel,
    load_text,
    read_parallel_files,
    read_text_file,
    read_tsv,
)
from seqgen.data.splits import text_splits
from seqgen.errors import DataError
from seqgen.tasks.generation.config import TextDataConfig

MIRROR = os.environ.get(DATA_DIR_VARIABLE)
needs_mirror = pytest.mark.skipif(not MIRROR, reason=f"{DATA_DIR_VARIABLE} is not set")

FAKE_TEXT = b"To be, or not to be: that is the question.\n"
FAKE_FILE = RemoteFile(
    relative_path="fakecorpus/input.txt",
    url="https://example.invalid/fakecorpus/input.txt",
    sha256=hashlib.sha256(FAKE_TEXT).hexdigest(),
)


def _refuse_network(url, *args, **kwargs):
    raise urllib.error.URLError("network disabled in tests")


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No mirror or cache from the environment, a private home, no network, a fake corpus."""
    monkeypatch.delenv(DATA_DIR_VARIABLE, raising=False)
    monkeypatch.delenv(CACHE_DIR_VARIABLE, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(urllib.request, "urlopen", _refuse_network)
    monkeypatch.setitem(corpora.CORPORA, "fakecorpus", TextCorpus("fakecorpus", FAKE_FILE))


def _files_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


class FakeUrlopen:
    """Stands in for urllib.request.urlopen: serves fixed bytes and records its calls."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.calls: list[tuple[str, float | None]] = []

    def __call__(self, url: str, timeout: float | None = None) -> io.BytesIO:
        self.calls.append((url, timeout))
        return io.BytesIO(self.data)


# --- the real corpora, from the mirror -------------------------------------------------------


@needs_mirror
def test_every_registered_file_matches_its_checksum_in_the_mirror():
    for corpus in (corpora.CORPORA["tinyshakespeare"], corpora.CORPORA["multi30k"]):
        for remote in corpus.files:
            assert fetch(remote.relative_path, data_dir=MIRROR).is_file()
    assert len(corpora.CORPORA["multi30k"].files) == 12


@needs_mirror
def test_tinyshakespeare_length_and_nanogpt_split(monkeypatch):
    monkeypatch.setenv(DATA_DIR_VARIABLE, MIRROR)  # the environment route, not the argument
    text = load_text("tinyshakespeare")
    assert len(text) == 1_115_394
    assert text.startswith("First Citizen:\n")
    splits = text_splits(text, TextDataConfig())
    train, validation = splits["train"], splits["val"]
    assert len(train) == 1_003_854
    assert len(validation) == 111_540
    assert train + validation == text


@needs_mirror
def test_multi30k_splits_are_aligned_with_published_sizes():
    sources, targets = load_parallel("multi30k:de-en", "test_2016_flickr", data_dir=MIRROR)
    assert len(sources) == len(targets) == 1000
    assert sources[0] == "Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt."
    assert targets[0] == "A man in an orange hat starring at something."
    assert not any(line.endswith("\n") for line in sources + targets)
    train_sources, train_targets = load_parallel("multi30k:de-en", "train", data_dir=MIRROR)
    assert len(train_sources) == len(train_targets) == 29000
    val_sources, _ = load_parallel("multi30k:fr-cs", "val", data_dir=MIRROR)
    assert len(val_sources) == 1014


@needs_mirror
def test_multi30k_reversed_pair_swaps_sides():
    de_en = load_parallel("multi30k:de-en", "test_2016_flickr", data_dir=MIRROR)
    en_de = load_parallel("multi30k:en-de", "test_2016_flickr", data_dir=MIRROR)
    assert en_de == (de_en[1], de_en[0])


# --- mirror folder ---------------------------------------------------------------------------


def test_mirror_file_is_used_in_place(tmp_path):
    mirror_file = _write(tmp_path / "mirror" / FAKE_FILE.relative_path, FAKE_TEXT)
    assert fetch(FAKE_FILE.relative_path, data_dir=tmp_path / "mirror") == mirror_file
    assert not (tmp_path / "home").exists()  # nothing cached, nothing downloaded


def test_mirror_checksum_mismatch_raises_and_leaves_nothing_behind(tmp_path):
    mirror = tmp_path / "mirror"
    _write(mirror / FAKE_FILE.relative_path, b"a different text\n")
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as caught:
        fetch(FAKE_FILE.relative_path, data_dir=mirror, cache_dir=cache)
    message = str(caught.value)
    assert "checksum mismatch" in message
    assert FAKE_FILE.sha256 in message
    assert hashlib.sha256(b"a different text\n").hexdigest() in message
    assert _files_under(mirror) == [FAKE_FILE.relative_path]  # the user's mirror is untouched
    assert not cache.exists()


def test_mirror_without_the_file_names_the_full_path(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    monkeypatch.setenv(DATA_DIR_VARIABLE, str(mirror))
    with pytest.raises(DataError, match="mirror folder .* lacks fakecorpus/input.txt") as caught:
        load_text("fakecorpus")
    assert str(mirror / FAKE_FILE.relative_path) in str(caught.value)


def test_an_edited_mirror_file_is_checked_again(tmp_path):
    mirror_file = _write(tmp_path / FAKE_FILE.relative_path, FAKE_TEXT)
    corpora._cached_sha256.cache_clear()
    fetch(FAKE_FILE.relative_path, data_dir=tmp_path)
    fetch(FAKE_FILE.relative_path, data_dir=tmp_path)
    assert corpora._cached_sha256.cache_info().misses == 1  # hashed once, then remembered
    mirror_file.write_bytes(b"edited since the last check\n")
    with pytest.raises(DataError, match="checksum mismatch"):
        fetch(FAKE_FILE.relative_path, data_dir=tmp_path)


# --- cache folder and download ---------------------------------------------------------------


def test_cache_hit_does_not_download(tmp_path, monkeypatch):
    cached = _write(tmp_path / "cache" / FAKE_FILE.relative_path, FAKE_TEXT)
    monkeypatch.setenv(CACHE_DIR_VARIABLE, str(tmp_path / "cache"))
    assert fetch(FAKE_FILE.relative_path) == cached
    assert load_text("fakecorpus") == FAKE_TEXT.decode()


def test_download_writes_through_a_temporary_file_then_renames(tmp_path, monkeypatch):
    fake_urlopen = FakeUrlopen(FAKE_TEXT)
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    renames: list[tuple[str, str]] = []
    real_replace = os.replace

    def recording_replace(source, destination):
        renames.append((str(source), str(destination)))
        real_replace(source, destination)

    monkeypatch.setattr(corpora.os, "replace", recording_replace)
    path = fetch(FAKE_FILE.relative_path, cache_dir=tmp_path / "cache")
    assert path == tmp_path / "cache" / FAKE_FILE.relative_path
    assert path.read_bytes() == FAKE_TEXT
    assert fake_urlopen.calls == [(FAKE_FILE.url, corpora.DOWNLOAD_TIMEOUT_SECONDS)]
    [(temporary, destination)] = renames
    assert Path(temporary).parent == path.parent and destination == str(path)
    assert _files_under(tmp_path / "cache") == [FAKE_FILE.relative_path]


def test_default_cache_is_under_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", FakeUrlopen(FAKE_TEXT))
    path = fetch(FAKE_FILE.relative_path)
    assert path == tmp_path / "home" / ".cache" / "seqgen" / FAKE_FILE.relative_path


def test_download_with_wrong_checksum_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", FakeUrlopen(b"tampered\n"))
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as caught:
        fetch(FAKE_FILE.relative_path, cache_dir=cache)
    message = str(caught.value)
    assert FAKE_FILE.sha256 in message
    assert hashlib.sha256(b"tampered\n").hexdigest() in message
    assert _files_under(cache) == []


def test_corrupt_cache_file_is_downloaded_again(tmp_path, monkeypatch):
    cached = _write(tmp_path / "cache" / FAKE_FILE.relative_path, b"truncated")
    monkeypatch.setattr(urllib.request, "urlopen", FakeUrlopen(FAKE_TEXT))
    assert fetch(FAKE_FILE.relative_path, cache_dir=tmp_path / "cache") == cached
    assert cached.read_bytes() == FAKE_TEXT


def test_connection_lost_mid_download_leaves_no_file(tmp_path, monkeypatch):
    class Broken(io.BytesIO):
        def read(self, size=-1):
            raise TimeoutError("timed out")

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: Broken())
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"could not download .*\(timed out\)"):
        fetch(FAKE_FILE.relative_path, cache_dir=cache)
    assert _files_under(cache) == []


def test_offline_without_mirror_says_how_to_fix_it(tmp_path):
    with pytest.raises(DataError) as caught:
        load_text("fakecorpus", cache_dir=tmp_path / "cache")
    message = str(caught.value)
    assert message.startswith(f"could not download {FAKE_FILE.url} (network disabled in tests)")
    assert DATA_DIR_VARIABLE in message and "--data-dir" in message
    assert message.endswith(f"a folder holding {FAKE_FILE.relative_path}")
    assert "\n" not in message
    assert _files_under(tmp_path / "cache") == []


def test_unknown_relative_path_is_refused(tmp_path):
    with pytest.raises(DataError, match="unknown corpus file '../secret'"):
        fetch("../secret", data_dir=tmp_path)


# --- user text files -------------------------------------------------------------------------


def test_read_text_file_missing(tmp_path):
    with pytest.raises(DataError, match="no such file: .*absent.txt"):
        read_text_file(tmp_path / "absent.txt")


def test_read_text_file_not_utf8_names_offset_and_iconv(tmp_path):
    path = _write(tmp_path / "latin1.txt", "caf\u00e9 au lait".encode("latin-1"))
    with pytest.raises(DataError) as caught:
        read_text_file(path)
    message = str(caught.value)
    assert str(path) in message and "offset 3" in message and "iconv" in message


@pytest.mark.parametrize("content", [b"", b" \n\t\n"])
def test_read_text_file_empty(tmp_path, content):
    path = _write(tmp_path / "blank.txt", content)
    with pytest.raises(DataError, match="is empty; a training file needs text"):
        read_text_file(path)


def test_read_text_file_drops_byte_order_mark_only(tmp_path):
    path = _write(tmp_path / "bom.txt", b"\xef\xbb\xbfline one\r\nline two\n")
    assert read_text_file(path) == "line one\r\nline two\n"


def test_load_text_from_a_path(tmp_path):
    path = _write(tmp_path / "mine.txt", "h\u00e9llo\n".encode())
    assert load_text(str(path)) == "h\u00e9llo\n"


def test_load_text_unknown_name_lists_corpora():
    with pytest.raises(DataError) as caught:
        load_text("tinyshakespear")
    message = str(caught.value)
    assert "tinyshakespeare" in message and "file" in message
    assert "multi30k" not in message.split("known text corpora:")[1]


def test_load_text_parallel_corpus_name_is_explained():
    with pytest.raises(DataError, match="'multi30k' is a parallel corpus"):
        load_text("multi30k")


def test_load_text_missing_path_says_no_such_file():
    with pytest.raises(DataError, match="no such file: missing/story.txt"):
        load_text("missing/story.txt")


def test_text_too_short_to_split():
    with pytest.raises(DataError, match="too short"):
        text_splits("a", TextDataConfig(validation_fraction=0.1))


# --- parallel data ---------------------------------------------------------------------------


def test_load_parallel_bad_language_pair_lists_valid_ones():
    with pytest.raises(DataError) as caught:
        load_parallel("multi30k:de-xx", "train")
    message = str(caught.value)
    assert message.startswith("unknown language pair 'de-xx' for multi30k; valid: cs-de, cs-en,")
    assert message.count("-") == 12 + 1  # twelve ordered pairs plus the bad one


@pytest.mark.parametrize("spec", ["multi30k:de-de", "multi30k:de", "multi30k"])
def test_load_parallel_malformed_pair(spec):
    with pytest.raises(DataError, match="unknown language pair"):
        load_parallel(spec, "train")


def test_load_parallel_unknown_corpus_and_split():
    with pytest.raises(DataError, match="unknown parallel corpus 'europarl'.*known: multi30k"):
        load_parallel("europarl:de-en", "train")
    with pytest.raises(DataError, match="unknown split 'test'.*train, val, test_2016_flickr"):
        load_parallel("multi30k:de-en", "test")


def test_load_parallel_from_a_fake_gzip_corpus(tmp_path, monkeypatch):
    contents = {"en": b"  A dog runs. \nTwo cats\n", "de": b"Ein Hund rennt.\nZwei Katzen\n"}
    files = []
    for language, data in contents.items():
        packed = gzip.compress(data)
        relative_path = f"tinypairs/train.{language}.gz"
        _write(tmp_path / relative_path, packed)
        sha256 = hashlib.sha256(packed).hexdigest()
        files.append(RemoteFile(relative_path, f"https://example.invalid/{language}", sha256))
    corpus = ParallelCorpus(
        "tinypairs", ("en", "de"), ("train",), "tinypairs/{split}.{language}.gz", tuple(files)
    )
    monkeypatch.setitem(corpora.CORPORA, "tinypairs", corpus)
    sources, targets = load_parallel("tinypairs:en-de", "train", data_dir=tmp_path)
    assert sources == ["  A dog runs. ", "Two cats"]  # only the line ending is removed
    assert targets == ["Ein Hund rennt.", "Zwei Katzen"]


def test_read_parallel_files_aligned(tmp_path):
    source = _write(tmp_path / "train.src", b"eins\r\nzwei\r\n")
    target = _write(tmp_path / "train.tgt", b"one\ntwo")
    assert read_parallel_files(source, target) == (["eins", "zwei"], ["one", "two"])


def test_read_parallel_files_different_lengths(tmp_path):
    source = _write(tmp_path / "train.src", b"eins\nzwei\ndrei\n")
    target = _write(tmp_path / "train.tgt", b"one\ntwo\n")
    with pytest.raises(DataError) as caught:
        read_parallel_files(source, target)
    message = str(caught.value)
    assert f"3 lines in {source}" in message and f"2 lines in {target}" in message


def test_read_tsv(tmp_path):
    path = _write(tmp_path / "pairs.tsv", b"Hallo Welt\tHello world\nJa\tYes\n")
    assert read_tsv(path) == (["Hallo Welt", "Ja"], ["Hello world", "Yes"])


@pytest.mark.parametrize(
    ("content", "found"),
    [(b"a\tb\nno tab here\n", "found 0 tabs"), (b"a\tb\nc\td\te\n", "found 2 tabs")],
)
def test_read_tsv_names_the_bad_line(tmp_path, content, found):
    path = _write(tmp_path / "pairs.tsv", content)
    with pytest.raises(DataError, match=f"pairs.tsv, line 2: expected two columns.*{found}"):
        read_tsv(path)
