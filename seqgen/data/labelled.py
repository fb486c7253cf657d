"""Labelled texts for classification: three named corpora and the user's TSV or CSV files.

Named corpora (downloaded from their public homes and checked by SHA-256, or read from the
mirror folder, as ``seqgen.data.corpora`` does):

- ``sst2``: the Stanford Sentiment Treebank, binary (SentEval's files of SST-2 with test
  labels): train 67,349 phrases, dev 872 and test 1,821 sentences, lower-cased and tokenized;
  labels ``negative`` and ``positive``.
- ``sms_spam``: the SMS Spam Collection, 5,574 messages labelled ``ham`` or ``spam``. It has
  no official split: :data:`SPLIT_SEED` fixes a stratified 80/10/10 split, declared here once.
- ``imdb``: the Large Movie Review Dataset, 25,000 train and 25,000 test reviews, labels
  ``negative`` and ``positive``; validation is a fixed stratified tenth of train.

Splits are ``train``, ``val`` and ``test``. A user's file is one example per line, text and
label in two columns (which is which is configurable), tab-separated (``.tsv``) or
comma-separated with CSV quoting (``.csv``).
"""

from __future__ import annotations

import csv
import io
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seqgen.data.corpora import RemoteFile, fetch_file
from seqgen.errors import DataError

SPLITS = ("train", "val", "test")
SPLIT_SEED = 20261206  # the seed of the declared splits of sms_spam and imdb's validation
LabelledTexts = tuple[list[str], list[str]]  # (texts, labels), aligned


@dataclass(frozen=True)
class LabelledCorpus:
    """A named corpus: its files and how each of its splits is read."""

    name: str
    files: dict[str, RemoteFile]  # key -> file


_SST2_URL = "https://raw.githubusercontent.com/PrincetonML/SIF/84b5b4c1c1ca20b6af19fc78cae005a1818ec571/data/"
_IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
_SMS_URL = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"

LABELLED_CORPORA = {
    "sst2": LabelledCorpus(
        "sst2",
        {
            split: RemoteFile(f"sst2/sentiment-{file}", _SST2_URL + f"sentiment-{file}", sha256)
            for split, file, sha256 in (
                (
                    "train",
                    "train",
                    "10a92a297ec38e262386e5a2713b4bc70e5d18ced88b7f54bd171a26e5b34ab5",
                ),
                ("val", "dev", "9a6c7403b71a9b762158387afe4431253ae10cdfb2319b5275289f3766f48291"),
                (
                    "test",
                    "test",
                    "4fefd1cd67526cf87ebc7fafc3afc21cc7cfa6ae53b45e74f77f9456e3c62752",
                ),
            )
        },
    ),
    "sms_spam": LabelledCorpus(
        "sms_spam",
        {
            "all": RemoteFile(
                "sms_spam/SMSSpamCollection",
                _SMS_URL,
                "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d",
                member="SMSSpamCollection",
            )
        },
    ),
    "imdb": LabelledCorpus(
        "imdb",
        {
            "all": RemoteFile(
                "imdb/aclImdb_v1.tar.gz",
                _IMDB_URL,
                "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe",
            )
        },
    ),
}
SST2_LABELS = {"0": "negative", "1": "positive"}


def load_labelled(name: str, split: str, *, data_dir: str | Path | None = None) -> LabelledTexts:
    """The texts and labels of ``split`` (train, val or test) of a named corpus."""
    corpus = LABELLED_CORPORA.get(name)
    if corpus is None:
        known = ", ".join(LABELLED_CORPORA)
        raise DataError(f"unknown labelled corpus {name!r}; known: {known}, or name your files")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    if name == "sst2":
        path = fetch_file(corpus.files[split], data_dir=data_dir)
        texts, labels = read_labelled_file(path, text_column=0, label_column=1, delimiter="\t")
        return [text.strip() for text in texts], [SST2_LABELS.get(x, x) for x in labels]
    path = fetch_file(corpus.files["all"], data_dir=data_dir)
    if name == "sms_spam":
        texts, labels = read_labelled_file(path, text_column=1, label_column=0, delimiter="\t")
        return _pick(texts, labels, stratified_split(labels, (0.8, 0.1, 0.1))[split])
    texts, labels = read_imdb_archive(path, "test" if split == "test" else "train")
    if split == "test":
        return texts, labels
    parts = stratified_split(labels, (0.9, 0.1, 0.0))
    return _pick(texts, labels, parts[split])


def stratified_split(labels: list[str], fractions: tuple[float, float, float]) -> dict:
    """Indices of train, val and test: each label's examples, in an order fixed by
    :data:`SPLIT_SEED`, cut by ``fractions``; each split's indices sorted."""
    rng = np.random.default_rng(SPLIT_SEED)
    parts: dict[str, list[int]] = {split: [] for split in SPLITS}
    by_label = np.asarray(labels)
    for label in sorted(set(labels)):
        members = rng.permutation(np.flatnonzero(by_label == label))
        train_end = round(len(members) * fractions[0])
        val_end = train_end + round(len(members) * fractions[1])
        parts["train"] += members[:train_end].tolist()
        parts["val"] += members[train_end:val_end].tolist()
        parts["test"] += members[val_end:].tolist()
    return {split: sorted(indices) for split, indices in parts.items()}


def _pick(texts: list[str], labels: list[str], indices: list[int]) -> LabelledTexts:
    return [texts[i] for i in indices], [labels[i] for i in indices]


def read_labelled_file(
    path: str | Path,
    *,
    text_column: int = 0,
    label_column: int = 1,
    delimiter: str | None = None,
    header: bool = False,
) -> LabelledTexts:
    """Texts and labels of a UTF-8 file of two or more columns (``delimiter``: ``\\t`` for a
    ``.tsv`` file, ``,`` otherwise, unless given). A row with too few columns, an empty text
    or an empty label is refused, naming its line."""
    path = Path(path)
    try:
        data = path.read_bytes().decode("utf-8").removeprefix("\ufeff")
    except FileNotFoundError:
        raise DataError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a folder; give a TSV or CSV file") from None
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not UTF-8 (byte {error.start}); convert it to UTF-8") from None
    delimiter = delimiter or ("\t" if path.suffix.lower() == ".tsv" else ",")
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    rows = csv.reader(io.StringIO(data, newline=""), delimiter=delimiter, quoting=quoting)
    texts, labels = [], []
    needed = max(text_column, label_column) + 1
    for number, row in enumerate(rows, start=1):
        if (header and number == 1) or not row:
            continue
        if len(row) < needed:
            raise DataError(
                f"{path}, line {number}: {len(row)} column(s), but the label is column "
                f"{label_column + 1} and the text column {text_column + 1}; fix the line"
            )
        text, label = row[text_column].strip(), row[label_column].strip()
        if not text or not label:
            what = "text" if not text else "label"
            raise DataError(f"{path}, line {number}: the {what} is empty; fix or remove the line")
        texts.append(text)
        labels.append(label)
    if not texts:
        raise DataError(f"{path} holds no labelled rows")
    return texts, labels


_IMDB_MEMBER = re.compile(r"^aclImdb/(train|test)/(pos|neg)/[^/]+\.txt$")


def read_imdb_archive(path: str | Path, split: str) -> LabelledTexts:
    """The reviews of ``split`` (train or test) from the Large Movie Review Dataset's archive
    (``aclImdb/<split>/{pos,neg}/*.txt``), in name order; ``<br />`` becomes a space."""
    texts, labels = [], []
    try:
        with tarfile.open(path, "r:gz") as archive:
            members = sorted(
                (m for m in archive.getmembers() if m.isfile() and _IMDB_MEMBER.match(m.name)),
                key=lambda member: member.name,
            )
            for member in members:
                if member.name.split("/")[1] != split:
                    continue
                handle = archive.extractfile(member)
                text = handle.read().decode("utf-8") if handle else ""
                texts.append(text.replace("<br />", " ").strip())
                labels.append("positive" if "/pos/" in member.name else "negative")
    except (tarfile.TarError, OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path} is not a readable IMDB archive ({error})") from None
    if not texts:
        raise DataError(f"{path} holds no aclImdb/{split}/pos or neg reviews")
    return texts, labels
