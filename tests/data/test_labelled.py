"""Labelled texts: the user's TSV/CSV files, the declared splits, and the named corpora."""

from __future__ import annotations

import hashlib
import io
import tarfile
import urllib.request
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from seqgen.data import labelled
from seqgen.data.corpora import RemoteFile, fetch_file
from seqgen.data.labelled import (
    load_labelled,
    read_imdb_archive,
    read_labelled_file,
    stratified_split,
)
from seqgen.errors import DataError


def test_a_tsv_and_a_csv_file(tmp_path: Path) -> None:
    tsv = tmp_path / "a.tsv"
    tsv.write_text("good film\tpos\nbad, sad film\tneg\n", encoding="utf-8")
    assert read_labelled_file(tsv) == (["good film", "bad, sad film"], ["pos", "neg"])
    csv = tmp_path / "a.csv"
    csv.write_text('label,text\nspam,"win, now"\nham,"see ""you"""\n', encoding="utf-8")
    found = read_labelled_file(csv, text_column=1, label_column=0, header=True)
    assert found == (["win, now", 'see "you"'], ["spam", "ham"])


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("good\tpos\nlonely\n", ("line 2", "1 column")),
        ("good\tpos\n \tneg\n", ("line 2", "text is empty")),
        ("good\t\n", ("line 1", "label is empty")),
        ("", ("no labelled rows",)),
    ],
)
def test_bad_rows_name_their_line(tmp_path: Path, content: str, words: tuple[str, ...]) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as error:
        read_labelled_file(path)
    for word in words:
        assert word in str(error.value)


def test_a_missing_or_non_utf8_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_labelled_file(tmp_path / "none.tsv")
    latin = tmp_path / "latin.tsv"
    latin.write_bytes("caf\xe9\tpos\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_labelled_file(latin)


def test_the_declared_split_is_fixed_stratified_and_whole() -> None:
    labels = ["ham"] * 90 + ["spam"] * 10
    parts = stratified_split(labels, (0.8, 0.1, 0.1))
    assert parts == stratified_split(labels, (0.8, 0.1, 0.1))
    assert sorted(sum(parts.values(), [])) == list(range(100))
    counts = {split: Counter(labels[i] for i in rows) for split, rows in parts.items()}
    assert counts["train"] == {"ham": 72, "spam": 8}
    assert counts["val"] == counts["test"] == {"ham": 9, "spam": 1}


def test_sst2_and_sms_spam_from_the_mirror(data_dir: str) -> None:
    sizes = {
        split: len(load_labelled("sst2", split, data_dir=data_dir)[0]) for split in labelled.SPLITS
    }
    assert sizes == {"train": 67349, "val": 872, "test": 1821}
    texts, labels = load_labelled("sst2", "test", data_dir=data_dir)
    assert set(labels) == {"negative", "positive"} and all(t == t.strip() for t in texts)
    spam = {
        split: load_labelled("sms_spam", split, data_dir=data_dir)[1] for split in labelled.SPLITS
    }
    assert sum(len(labels) for labels in spam.values()) == 5574
    assert Counter(spam["test"]) == {"ham": 482, "spam": 74}  # train 4,460, val 558, test 556


def _imdb_archive(path: Path) -> None:
    with tarfile.open(path, "w:gz") as archive:
        for split in ("train", "test"):
            for label in ("pos", "neg"):
                for index in range(3):
                    data = f"{split} {label} {index}<br />more".encode()
                    info = tarfile.TarInfo(f"aclImdb/{split}/{label}/{index}_7.txt")
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
        readme = tarfile.TarInfo("aclImdb/README")
        archive.addfile(readme, io.BytesIO(b""))


def test_imdb_from_an_archive_of_its_layout(tmp_path: Path, monkeypatch) -> None:
    archive = tmp_path / "mirror" / "imdb" / "aclImdb_v1.tar.gz"
    archive.parent.mkdir(parents=True)
    _imdb_archive(archive)
    texts, labels = read_imdb_archive(archive, "test")
    assert (
        len(texts) == 6
        and texts[0] == "test neg 0 more"
        and Counter(labels)
        == {
            "negative": 3,
            "positive": 3,
        }
    )
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    remote = RemoteFile("imdb/aclImdb_v1.tar.gz", "https://example.invalid/imdb.tgz", sha)
    monkeypatch.setitem(
        labelled.LABELLED_CORPORA, "imdb", labelled.LabelledCorpus("imdb", {"all": remote})
    )
    train, val = (load_labelled("imdb", s, data_dir=tmp_path / "mirror") for s in ("train", "val"))
    assert len(train[0]) + len(val[0]) == 6 and not set(train[0]) & set(val[0])
    with pytest.raises(DataError, match="not a readable IMDB archive"):
        read_imdb_archive(tmp_path / "mirror" / "imdb", "train")


def test_a_zip_member_is_downloaded_and_checked(tmp_path: Path, monkeypatch) -> None:
    member = b"ham\thello\nspam\twin\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("SMSSpamCollection", member)
        archive.writestr("readme", b"x")

    class Response(io.BytesIO):
        def __enter__(self) -> Response:
            return self

        def __exit__(self, *args: object) -> None:
            self.close()

    monkeypatch.setattr(
        urllib.request, "urlopen", lambda url, timeout=None: Response(buffer.getvalue())
    )
    monkeypatch.delenv("SEQGEN_DATA_DIR", raising=False)
    remote = RemoteFile(
        "sms/SMSSpamCollection",
        "https://example.invalid/sms.zip",
        hashlib.sha256(member).hexdigest(),
        member="SMSSpamCollection",
    )
    path = fetch_file(remote, cache_dir=tmp_path)
    assert path.read_bytes() == member
    wrong = RemoteFile("sms/other", remote.url, "0" * 64, member="SMSSpamCollection")
    with pytest.raises(DataError, match="checksum mismatch"):
        fetch_file(wrong, cache_dir=tmp_path)
    assert not (tmp_path / "sms" / "other").exists()
