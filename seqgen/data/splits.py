"""Fixed train / validation / test splits of one text, by character position."""

from __future__ import annotations

from typing import Protocol

from seqgen.errors import DataError

SPLIT_NAMES = ("train", "val", "test")


class SplitFractions(Protocol):
    """What a text split needs of a data section (a generation recipe's ``[data]``)."""

    validation_fraction: float
    test_fraction: float


def text_splits(text: str, config: SplitFractions) -> dict[str, str]:
    """Cut ``text`` into contiguous splits: train first, then validation, then test.

    With ``validation_fraction=0.1`` and no test this is nanoGPT's Tiny Shakespeare split:
    the first 90% of characters train and the last 10% validate.
    """
    length = len(text)
    train_end = int(length * (1.0 - config.validation_fraction - config.test_fraction))
    validation_end = int(length * (1.0 - config.test_fraction))
    if train_end == 0 or validation_end == train_end:
        raise DataError(
            f"a text of {length} characters is too short to split into training and validation; "
            "use more text"
        )
    return {
        "train": text[:train_end],
        "val": text[train_end:validation_end],
        "test": text[validation_end:],
    }


def pick_split(splits: dict[str, str], name: str) -> str:
    """One split by name, with an error that says how to get a test split."""
    if name not in SPLIT_NAMES:
        raise DataError(f"unknown split {name!r}; choose one of: {', '.join(SPLIT_NAMES)}")
    if not splits[name]:
        raise DataError(
            f"this model's data has no {name!r} split (data.test_fraction = 0); "
            "evaluate --split val or --file FILE instead"
        )
    return splits[name]
