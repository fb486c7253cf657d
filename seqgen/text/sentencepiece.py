"""Subword tokenizer wrapping sentencepiece (BPE or unigram), trained in memory.

Sentencepiece normalises whitespace and never sees a newline, so this wrapper encodes
each line separately and joins the lines with the id of the control piece ``<nl>``;
``decode`` turns that id back into ``"\\n"``. Hence ``decode(encode(text)) == text`` for
text whose lines are already normalised (single spaces, none at a line's start or end)
and whose characters are all in the model.

A requested ``vocab_size`` larger than the corpus supports is not an error: training is
retried with sentencepiece's soft limit and the smaller size is logged as a warning, so
the same recipe runs on a tiny fixture corpus and on a full one. The real size is
``vocab_size``, which is what a model must be built with.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import sentencepiece

from seqgen.cores import available_cores
from seqgen.errors import CheckpointError, ConfigError, DataError
from seqgen.text.serialisation import read_lowercase
from seqgen.text.vocabulary import BOS_ID, EOS_ID, NON_TEXT_IDS, PAD_ID, SPECIAL_TOKENS, UNK_ID

logger = logging.getLogger(__name__)

NEWLINE_PIECE = "<nl>"
NEWLINE_ID = len(SPECIAL_TOKENS)  # the first piece after the specials

# Sentencepiece samples this many lines (seeded) from a larger corpus, so training on a
# huge corpus takes seconds; subword statistics barely change past this size.
MAX_TRAINING_SENTENCES = 200_000
# Lines longer than this many bytes are skipped by the trainer (its default is 4192).
MAX_SENTENCE_BYTES = 16_384
TRAINING_SEED = 1234

# From this many texts on, encode_many and decode_many use sentencepiece's thread pool
# (its start-up, ~100 us, is then small against the per-line work of ~10 us).
MIN_THREADED_LINES = 64
# At most this many of its threads: past that, start-up outweighs the split of the work.
MAX_THREADS = 8

# Sentencepiece's words when vocab_size exceeds what the corpus supports.
TOO_LARGE_MESSAGE = "Vocabulary size too high"


class SentencePieceTokenizer:
    """Subword ids from a sentencepiece model; ids 0..3 are the specials, 4 is ``<nl>``."""

    kind = "sentencepiece"
    pad_id = PAD_ID
    unk_id = UNK_ID
    bos_id = BOS_ID
    eos_id = EOS_ID
    newline_id = NEWLINE_ID

    def __init__(self, model_proto: bytes, *, lowercase: bool = False) -> None:
        """Load a serialised sentencepiece model; raises CheckpointError when unusable."""
        self.model_proto = model_proto
        self.lowercase = lowercase
        self._processor = sentencepiece.SentencePieceProcessor()
        try:
            self._processor.LoadFromSerializedProto(model_proto)
        except (RuntimeError, OSError) as error:
            raise CheckpointError(f"corrupt sentencepiece model: {error}") from error
        expected = [*SPECIAL_TOKENS, NEWLINE_PIECE]
        found = [self._processor.id_to_piece(index) for index in range(len(expected))]
        if found != expected:
            raise CheckpointError(
                f"sentencepiece model must start with pieces {expected}, found {found}; "
                "train it with seqgen"
            )

    @classmethod
    def train(
        cls,
        texts: Iterable[str] | str,
        *,
        vocab_size: int = 8000,
        model_type: str = "bpe",
        character_coverage: float = 1.0,
        lowercase: bool = False,
    ) -> SentencePieceTokenizer:
        """Train on the lines of one corpus string or of an iterable of sentences."""
        lines = list(training_lines(texts, lowercase=lowercase))
        if not lines:
            raise DataError("the training text for sentencepiece is empty")
        options: dict[str, Any] = {
            "model_type": model_type,
            "vocab_size": vocab_size,
            "character_coverage": character_coverage,
            "pad_id": PAD_ID,
            "unk_id": UNK_ID,
            "bos_id": BOS_ID,
            "eos_id": EOS_ID,
            # A control piece (not user-defined) so a literal "<nl>" in text stays text.
            "control_symbols": [NEWLINE_PIECE],
            "input_sentence_size": MAX_TRAINING_SENTENCES,
            "shuffle_input_sentence": True,
            "max_sentence_length": MAX_SENTENCE_BYTES,
            "num_threads": 1,  # one thread: deterministic and light on shared machines
            "minloglevel": 2,  # sentencepiece logs to stderr itself; keep it quiet
        }
        try:
            model_proto = train_model_proto(lines, options)
        except RuntimeError as error:
            message = sentencepiece_message(error)
            if TOO_LARGE_MESSAGE not in message:
                raise ConfigError(f"sentencepiece training failed: {message}") from error
            model_proto = train_model_proto(lines, {**options, "hard_vocab_limit": False})
        tokenizer = cls(model_proto, lowercase=lowercase)
        if tokenizer.vocab_size != vocab_size:
            logger.warning(
                "tokenizer.vocab_size=%d is too large for this corpus; "
                "sentencepiece trained %d pieces instead",
                vocab_size,
                tokenizer.vocab_size,
            )
        return tokenizer

    @property
    def vocab_size(self) -> int:
        """Number of ids, specials and ``<nl>`` included."""
        return self._processor.get_piece_size()

    def encode(self, text: str) -> list[int]:
        """Subword ids, lines joined by ``newline_id``; no BOS/EOS added."""
        # One call per line with a plain string: a list argument goes through
        # sentencepiece's thread pool, about 100 us per call against 10 us for one line.
        lines_ids = [self._processor.encode(line) for line in self._lines(text)]
        token_ids = list(lines_ids[0])
        for line_ids in lines_ids[1:]:
            token_ids.append(NEWLINE_ID)
            token_ids.extend(line_ids)
        return token_ids

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        """:meth:`encode` of each text; many lines go through sentencepiece's thread pool in
        one call (1,000 sentences: 14 -> 7 ms on 2 cores, and less with more)."""
        if len(texts) < MIN_THREADED_LINES:
            return [self.encode(text) for text in texts]
        lines = [line for text in texts for line in self._lines(text)]
        lines_ids = iter(self._processor.encode(lines, num_threads=_threads()))
        found = []
        for text in texts:
            token_ids = list(next(lines_ids))
            for _ in range(text.count("\n")):
                token_ids.append(NEWLINE_ID)
                token_ids.extend(next(lines_ids))
            found.append(token_ids)
        return found

    def decode_many(self, token_ids: Sequence[Sequence[int]]) -> list[str]:
        """:meth:`decode` of each id sequence, in one threaded sentencepiece call."""
        if len(token_ids) < MIN_THREADED_LINES:
            return [self.decode(ids) for ids in token_ids]
        texts_lines = [self._text_lines(ids) for ids in token_ids]
        flat = [line for lines in texts_lines for line in lines]
        decoded = iter(self._processor.decode(flat, num_threads=_threads()))
        return ["\n".join(next(decoded) for _ in lines) for lines in texts_lines]

    def _lines(self, text: str) -> list[str]:
        return (text.lower() if self.lowercase else text).split("\n")

    @staticmethod
    def _text_lines(token_ids: Sequence[int]) -> list[list[int]]:
        """Ids split at ``newline_id``, without pad/bos/eos (numpy ints made plain ints)."""
        lines_ids: list[list[int]] = [[]]
        for token_id in token_ids:
            token_id = int(token_id)  # numpy integers are not accepted by sentencepiece
            if token_id == NEWLINE_ID:
                lines_ids.append([])
            elif token_id not in NON_TEXT_IDS:
                lines_ids[-1].append(token_id)
        return lines_ids

    def decode(self, token_ids: Sequence[int]) -> str:
        """Text with ``newline_id`` as ``"\\n"``, dropping pad/bos/eos; unk is `` ⁇ ``."""
        # Per line, as in encode: a list argument costs ~150 us in thread start-up, one 3 us.
        return "\n".join(self._processor.decode(ids) for ids in self._text_lines(token_ids))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form: the model proto as base64 text."""
        return {
            "kind": self.kind,
            "model_proto": base64.b64encode(self.model_proto).decode("ascii"),
            "lowercase": self.lowercase,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SentencePieceTokenizer:
        """Load :meth:`to_dict` output; raises CheckpointError when it is malformed."""
        encoded = data.get("model_proto")
        if not isinstance(encoded, str):
            raise CheckpointError("sentencepiece tokenizer entry has no base64 'model_proto'")
        try:
            model_proto = base64.b64decode(encoded, validate=True)
        except binascii.Error as error:
            raise CheckpointError(f"sentencepiece 'model_proto' is not base64: {error}") from error
        return cls(model_proto, lowercase=read_lowercase(data))


def training_lines(texts: Iterable[str] | str, *, lowercase: bool) -> Iterator[str]:
    """Non-blank lines of a corpus string or of each sentence, lower-cased if asked."""
    for text in [texts] if isinstance(texts, str) else texts:
        for line in text.split("\n"):
            if line.strip():
                yield line.lower() if lowercase else line


def train_model_proto(lines: list[str], options: dict[str, Any]) -> bytes:
    """Run the sentencepiece trainer in memory and return the serialised model."""
    # The trainer's sampling and unigram seeding use a process-wide generator: seed it
    # each time so training the same corpus twice gives the same model.
    sentencepiece.set_random_generator_seed(TRAINING_SEED)
    model_writer = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model_writer, **options
    )
    return model_writer.getvalue()


def sentencepiece_message(error: RuntimeError) -> str:
    """Sentencepiece's own explanation, without its C++ file, line and check expression."""
    message = str(error)
    _, separator, explanation = message.partition("] ")
    return explanation.strip() if separator and explanation.strip() else message


def _threads() -> int:
    """Threads for sentencepiece's pool: this process's cores, up to ``MAX_THREADS``."""
    return min(available_cores(), MAX_THREADS)
