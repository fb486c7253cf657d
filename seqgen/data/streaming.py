"""Sentence pairs streamed from disk, for parallel corpora larger than memory.

Memory is bounded by settings, never by the corpus: the reader holds one line at a time,
a shuffle buffer of ``shuffle_buffer`` raw pairs, and one pool of ``bucket_pairs``
tokenized pairs that is sorted by length and cut into token-budgeted batches (the same
cutting as :class:`seqgen.data.parallel.ParallelBatches`, on the fly). No pass over the
data comes before the first batch.

- **Sharded reading.** Rank ``r`` of ``world_size`` keeps lines ``r, r + world_size, ...``:
  the ranks' shares of an epoch are disjoint and together are the whole corpus.
- **Shuffling.** A buffer of ``shuffle_buffer`` pairs: each new pair takes the place of a
  random one, which is emitted (the shuffle buffer of tf.data and webdataset). A pair moves
  at most about ``shuffle_buffer`` lines from its place, so a corpus sorted by topic wants
  a larger buffer (or a pre-shuffled file).
- **Reading beside training.** With ``workers = 1`` (``data.stream_workers``) the stream runs
  in a background process (torch's DataLoader) and hands over finished batches: one process
  here supplied 188,720 pieces/s, about what one GPU trains, so inside the training loop it
  would take about as long as the training step.
- **Determinism.** The order is a function of ``(seed, epoch, rank)`` alone. A run resumes
  by replaying its epoch up to the batch it stopped at (:class:`StreamPosition`, kept in
  ``last.safetensors``), reading and tokenizing, but building no tensors.
"""

from __future__ import annotations

import gzip
import io
import itertools
import math
import operator
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch.utils.data

from seqgen.data.parallel import ParallelBatch, ParallelBatches
from seqgen.errors import DataError

Pair = tuple[str, str]


@dataclass
class StreamPosition:
    """Where a rank's stream stands: ``batches`` already taken from ``epoch``."""

    epoch: int = 0
    batches: int = 0


class LineReader:
    """The lines of a UTF-8 (optionally gzip) file, read lazily; :attr:`fraction` is how
    far into the file's bytes the reader is (for the epoch column of metrics.csv)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.size = max(1, os.path.getsize(path))
            self.raw: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed by close()
        except FileNotFoundError:
            raise DataError(f"no such file: {path}") from None
        except OSError as error:
            raise DataError(f"cannot read {path} ({error.strerror or error})") from None
        binary = gzip.GzipFile(fileobj=self.raw) if path.suffix == ".gz" else self.raw
        self.text = io.TextIOWrapper(binary, encoding="utf-8-sig", newline="\n")

    @property
    def fraction(self) -> float:
        if self.raw.closed:  # read to its end
            return 1.0
        return min(1.0, self.raw.tell() / self.size)

    def __iter__(self) -> Iterator[str]:
        try:
            # C-level iteration and stripping: a 30x Multi30k pass is 1.7 million lines.
            yield from map(_without_line_end, self.text)
        except UnicodeDecodeError as error:
            raise DataError(
                f"{self.path} is not UTF-8 ({error.reason}); convert it to UTF-8, e.g. with: "
                f"iconv -f LATIN1 -t UTF-8 {self.path} > converted.txt"
            ) from None
        except (OSError, EOFError) as error:  # a damaged gzip file
            raise DataError(f"{self.path} cannot be read to its end ({error})") from None

    def close(self) -> None:
        self.raw.close()


@dataclass(frozen=True)
class PairFiles:
    """Where the pairs are: two aligned files, or one ``source<TAB>target`` file."""

    source: Path
    target: Path | None = None

    def open(self) -> tuple[Iterator[Pair], LineReader]:
        """Every pair in file order, and the reader whose progress measures the epoch."""
        readers = [LineReader(self.source)] + ([LineReader(self.target)] if self.target else [])
        return self._pairs(readers), readers[0]

    def _pairs(self, readers: list[LineReader]) -> Iterator[Pair]:
        try:
            if len(readers) == 1:
                yield from (_split_tsv(line, self.source, n) for n, line in _numbered(readers[0]))
                return
            try:
                yield from zip(readers[0], readers[1], strict=True)
            except ValueError:  # zip's own check: one file ended before the other
                raise DataError(
                    f"parallel files differ in length: {self.source} and {self.target} must "
                    "have one line each per sentence pair"
                ) from None
        finally:
            for reader in readers:
                reader.close()


_without_line_end = operator.methodcaller("rstrip", "\r\n")


def _numbered(reader: LineReader) -> Iterator[tuple[int, str]]:
    return enumerate(reader, start=1)


def _split_tsv(line: str, path: Path, number: int) -> Pair:
    if line.count("\t") != 1:
        raise DataError(
            f"{path}, line {number}: expected two columns separated by one tab, "
            f"found {line.count(chr(9))} tabs"
        )
    source, target = line.split("\t")
    return source, target


def shard(pairs: Iterator[Pair], *, rank: int, world_size: int) -> Iterator[Pair]:
    """Lines ``rank, rank + world_size, ...``: this rank's disjoint share."""
    for number, pair in enumerate(pairs):
        if number % world_size == rank:
            yield pair


def shuffled(items: Iterator[Pair], *, size: int, rng: random.Random) -> Iterator[Pair]:
    """``items`` through a shuffle buffer of ``size``: at most ``size`` held at once."""
    buffer: list[Pair] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        position = rng.randrange(size)
        yield buffer[position]
        buffer[position] = item
    rng.shuffle(buffer)
    yield from buffer


def sample_pairs(files: PairFiles, count: int, *, seed: int) -> list[Pair]:
    """``count`` pairs drawn uniformly from the whole corpus in one pass (reservoir
    sampling, Li's Algorithm L: geometric skips, so the pairs passed over cost no random
    draw): what a tokenizer trains on when the corpus is streamed."""
    rng = random.Random(f"tokenizer-sample-{seed}")
    pairs, _ = files.open()
    sample = list(itertools.islice(pairs, count))
    if len(sample) < count:
        return sample
    weight = math.exp(math.log(1.0 - rng.random()) / count)
    while weight < 1.0:
        skip = math.floor(math.log(1.0 - rng.random()) / math.log(1.0 - weight))
        pair = next(itertools.islice(pairs, skip, None), None)
        if pair is None:
            break
        sample[rng.randrange(count)] = pair
        weight *= math.exp(math.log(1.0 - rng.random()) / count)
    for _ in pairs:  # read to the end: the files' own errors (misalignment) still surface
        pass
    return sample


@dataclass
class BatchSettings:
    """How a pool of pairs is cut into batches (as ParallelBatches does)."""

    batch_tokens: int
    batch_sentences: int = 0
    max_source_length: int = 100
    max_target_length: int = 100


class PairStream:
    """Length-bucketed, token-budgeted batches of this rank's pairs, streamed from disk,
    epoch after epoch, in an order fixed by ``seed``.

    ``encode_source`` / ``encode_target`` turn a sentence into token ids (no BOS/EOS).
    """

    def __init__(
        self,
        files: PairFiles,
        *,
        encode_source: Callable[[str], list[int]],
        encode_target: Callable[[str], list[int]],
        settings: BatchSettings,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle_buffer: int = 50_000,
        bucket_pairs: int = 5_000,
    ) -> None:
        self.files, self.settings, self.seed = files, settings, seed
        self.encode_source, self.encode_target = encode_source, encode_target
        self.rank, self.world_size = rank, world_size
        self.shuffle_buffer, self.bucket_pairs = shuffle_buffer, bucket_pairs
        self.position = StreamPosition()
        self._reader: LineReader | None = None

    @property
    def epoch_progress(self) -> float:
        """Epochs this rank has read, with the current one's fraction (by file bytes)."""
        fraction = self._reader.fraction if self._reader is not None else 0.0
        return self.position.epoch + fraction

    def epoch_batches(self, epoch: int) -> Iterator[tuple[ParallelBatches, list[int]]]:
        """Every batch of ``epoch`` for this rank, as (its pool, pair indices into it);
        tensors are built only for the batches :meth:`stream` hands out."""
        pairs, self._reader = self.files.open()
        rng = random.Random(f"stream-{self.seed}-{epoch}-{self.rank}")
        mine = shard(pairs, rank=self.rank, world_size=self.world_size)
        pool: list[Pair] = []
        pool_number = 0
        for pair in shuffled(mine, size=self.shuffle_buffer, rng=rng):
            pool.append(pair)
            if len(pool) == self.bucket_pairs:
                yield from self._cut(pool, epoch, pool_number)
                pool, pool_number = [], pool_number + 1
        if pool:
            yield from self._cut(pool, epoch, pool_number)

    def _cut(
        self, pool: list[Pair], epoch: int, number: int
    ) -> Iterator[tuple[ParallelBatches, list[int]]]:
        batches = ParallelBatches(
            [self.encode_source(source) for source, _ in pool],
            [self.encode_target(target) for _, target in pool],
            batch_tokens=self.settings.batch_tokens,
            batch_sentences=self.settings.batch_sentences,
            max_source_length=self.settings.max_source_length,
            max_target_length=self.settings.max_target_length,
            # Fixed by (seed, epoch, rank, pool): ties broken and batch order shuffled.
            seed=((self.seed * 1_000_003 + self.rank) * 7_919 + number) % 2**31,
        )
        for indices in batches.batch_indices(epoch):
            yield batches, indices

    def stream(self, start: StreamPosition | None = None) -> Iterator[ParallelBatch]:
        """Batches without end, from ``start`` (the beginning): a resumed run skips the
        batches its epoch had already given. :attr:`position` follows what was handed out."""
        start = start or StreamPosition()
        self.position = StreamPosition(start.epoch, 0)
        epoch = start.epoch
        while True:
            empty = True
            for pool, indices in self.epoch_batches(epoch):
                empty = False
                if epoch == start.epoch and self.position.batches < start.batches:
                    self.position.batches += 1  # replayed, not trained
                    continue
                self.position.batches += 1
                yield pool.make_batch(indices)
            if empty:
                raise DataError(
                    f"{self.files.source}: rank {self.rank} of {self.world_size} found no "
                    "training pair within data.max_source_length / data.max_target_length"
                )
            epoch += 1
            self.position = StreamPosition(epoch, 0)


@dataclass
class StreamedBatch:
    """A batch, with where the stream stands after it (what a checkpoint keeps)."""

    batch: ParallelBatch
    position: StreamPosition
    epoch_progress: float


class _StreamDataset(torch.utils.data.IterableDataset):
    """A stream as torch's DataLoader reads it, in a worker process."""

    def __init__(self, stream: PairStream, start: StreamPosition) -> None:
        self.stream, self.start = stream, start

    def __iter__(self) -> Iterator[StreamedBatch]:
        for batch in self.stream.stream(self.start):
            position = StreamPosition(self.stream.position.epoch, self.stream.position.batches)
            yield StreamedBatch(batch, position, self.stream.epoch_progress)


def streamed_batches(
    stream: PairStream, start: StreamPosition, *, workers: int
) -> Iterator[StreamedBatch]:
    """``stream``'s batches from ``start``: read in this process (``workers = 0``) or in one
    background process that keeps up to 16 batches ready (``workers = 1``); the same batches
    in the same order either way."""
    dataset = _StreamDataset(stream, start)
    if workers == 0:
        return iter(dataset)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=1, prefetch_factor=16
    )
    return iter(loader)
