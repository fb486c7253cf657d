"""Greedy search and sampling (beam search is in ``beam.py``): the only search code of seqgen.

Everything here drives a :class:`~seqgen.decoding.contract.StepFunction` and depends on numpy
only (never torch), so the same code decodes with the PyTorch model and with the ONNX Runtime
sessions. The decoder state is opaque: search passes it to ``step`` and gathers rows with
``select``, which is also how finished rows leave the batch so that no step is spent on them.

Conventions shared by the three searches:

- ``first_tokens`` is ``(batch,)`` int64, the token fed at the first step (BOS for a
  translator, the last prompt token for a language model).
- ``max_new_tokens`` and ``min_new_tokens`` are an int or a ``(batch,)`` int array. A row
  stops at ``eos_id`` (when not None) or after ``max_new_tokens`` tokens; ``min_new_tokens``
  bans ``eos_id`` until that many tokens are generated.
- ``no_repeat_ngram_size`` n bans any token that would repeat an n-gram of the row's history;
  the history starts with the first token (so for a language model the n-gram may span the end
  of the prompt).
- ``banned_token_ids`` are never produced (a language model bans ``<pad>``, ``<s>`` and
  ``<unk>``).
- Scores are sums of the model's log-probabilities as returned by ``step``: temperature,
  top-k and top-p only change which token is drawn, never the score. Bans only remove
  candidates, so a chosen token's score is the same before and after them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from seqgen.decoding.contract import State, StepFunction, TopLogProbs, narrowed
from seqgen.decoding.processors import (
    apply_temperature,
    ban_tokens,
    ban_tokens_per_row,
    log_softmax,
    no_repeat_ngram_bans,
    top_p_filter,
)

OnStep = Callable[[np.ndarray, np.ndarray], None]
"""``on_step(row_indices, tokens)``: ``(active,)`` original batch indices and their tokens."""

_Chooser = Callable[[np.ndarray], np.ndarray]
"""Picks the next token of every row: ``(rows, vocab)`` scores -> ``(rows,)`` int64."""


@dataclass(frozen=True)
class Hypothesis:
    """One generated sequence.

    Attributes:
        tokens: generated tokens, without the first (start/prompt) token and without EOS.
        score: sum of ``token_log_probs``.
        token_log_probs: the model's log-prob of each generated token as returned by ``step``
            (EOS included when the hypothesis ended with EOS, so it may be one longer than
            ``tokens``).
        finished: True when the hypothesis ended with EOS.
        normalized_score: ``score`` divided by the length penalty (beam search); equal to
            ``score`` for greedy search and sampling.
    """

    tokens: tuple[int, ...]
    score: float
    token_log_probs: tuple[float, ...]
    finished: bool
    normalized_score: float


def greedy_search(
    step_fn: StepFunction,
    state: State,
    first_tokens: np.ndarray,
    *,
    max_new_tokens: int | np.ndarray,
    min_new_tokens: int | np.ndarray = 0,
    eos_id: int | None = None,
    no_repeat_ngram_size: int = 0,
    banned_token_ids: Sequence[int] = (),
    on_step: OnStep | None = None,
) -> list[Hypothesis]:
    """Take the most probable token at every step; one hypothesis per input row.

    ``state`` has ``batch`` rows matching ``first_tokens`` ``(batch,)``; see the module
    docstring for the length arguments. ``on_step`` gets, after each step, the original
    indices of the rows that produced a token and that token (EOS included, which is how a
    streaming caller learns that a row ended). A row whose every token is banned (n-gram bans
    can exhaust a small vocabulary) ends there, unfinished.
    """
    # The best token, past the banned ids and EOS (banned before min_new_tokens); n-gram bans
    # are unbounded, so with them every log-prob is read.
    candidates = None if no_repeat_ngram_size > 0 else len(banned_token_ids) + 2
    return _decode_paths(
        narrowed(step_fn, candidates),
        state,
        first_tokens,
        lambda scores: np.argmax(scores, axis=-1),
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens,
        eos_id=eos_id,
        no_repeat_ngram_size=no_repeat_ngram_size,
        banned_token_ids=banned_token_ids,
        on_step=on_step,
    )


def sample(
    step_fn: StepFunction,
    state: State,
    first_tokens: np.ndarray,
    *,
    max_new_tokens: int | np.ndarray,
    min_new_tokens: int | np.ndarray = 0,
    eos_id: int | None = None,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    rng: np.random.Generator,
    no_repeat_ngram_size: int = 0,
    banned_token_ids: Sequence[int] = (),
    on_step: OnStep | None = None,
) -> list[Hypothesis]:
    """Draw every token from the model's distribution; one hypothesis per input row.

    The scores are divided by ``temperature`` (> 0), cut to the ``top_k`` best tokens
    (0 = off) and to the nucleus of mass ``top_p`` (1 = off), then renormalised. Each step
    draws one uniform number per active row from ``rng``, so a fixed seed and the same batch
    give the same output. Other arguments as in :func:`greedy_search`.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}; use greedy_search for 0")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 = off), got {top_k!r}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (1 = off), got {top_p!r}")

    def choose(scores: np.ndarray) -> np.ndarray:
        # A row with every token banned turns NaN here; the search ends it, so don't warn.
        with np.errstate(invalid="ignore"):
            candidate_ids, scores = _top_k_candidates(scores, top_k)
            if temperature != 1.0:
                scores = apply_temperature(scores, temperature)
            if top_p < 1:
                scores = top_p_filter(scores, top_p)
            drawn = _draw(np.exp(log_softmax(scores.astype(np.float64))), rng)
        if candidate_ids is None:
            return drawn
        return np.take_along_axis(candidate_ids, drawn[:, None], axis=1)[:, 0]

    return _decode_paths(
        step_fn,
        state,
        first_tokens,
        choose,
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens,
        eos_id=eos_id,
        no_repeat_ngram_size=no_repeat_ngram_size,
        banned_token_ids=banned_token_ids,
        on_step=on_step,
    )


def _top_k_candidates(scores: np.ndarray, k: int) -> tuple[np.ndarray | None, np.ndarray]:
    """The ``k`` best token ids ``(rows, k)`` of ``(rows, vocab)`` scores and their scores.

    Returns ``(None, scores)`` when top-k is off (``k <= 0`` or ``k >= vocab``). Later filters
    then work on ``(rows, k)`` instead of the whole vocabulary, the same tokens as
    :func:`~seqgen.decoding.processors.top_k_filter` keeps.
    """
    vocab = scores.shape[-1]
    if k <= 0 or k >= vocab:
        return None, scores
    candidate_ids = np.argpartition(scores, vocab - k, axis=-1)[:, vocab - k :]
    # In token-id order: argpartition leaves the k in an order of its selection algorithm
    # (which differs between numpy builds and CPUs), and the draw walks them in order, so a
    # seed would give other text elsewhere (the JavaScript runtime draws them by id too).
    candidate_ids.sort(axis=-1)
    return candidate_ids, np.take_along_axis(scores, candidate_ids, axis=-1)


def _draw(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One token per row of ``(rows, vocab)`` probabilities, by inverting the cumulative sum."""
    cumulative = np.cumsum(probs, axis=-1)
    thresholds = rng.random((probs.shape[0], 1)) * cumulative[:, -1:]
    # The first index whose cumulative mass exceeds the threshold; a zero-probability token
    # never increases the mass, so it can't be that index.
    drawn = (cumulative <= thresholds).sum(axis=-1)
    return np.minimum(drawn, probs.shape[-1] - 1)


def _decode_paths(
    step_fn: StepFunction,
    state: State,
    first_tokens: np.ndarray,
    choose: _Chooser,
    *,
    max_new_tokens: int | np.ndarray,
    min_new_tokens: int | np.ndarray,
    eos_id: int | None,
    no_repeat_ngram_size: int,
    banned_token_ids: Sequence[int],
    on_step: OnStep | None,
) -> list[Hypothesis]:
    """One path per row (greedy or sampling); finished rows leave the batch at once."""
    first_tokens, max_new, min_new = check_lengths(
        first_tokens, max_new_tokens, min_new_tokens, no_repeat_ngram_size
    )
    paths = _Paths.start(first_tokens, max_new, track_history=no_repeat_ngram_size > 0)
    active = np.flatnonzero(max_new > 0)  # original indices of the rows in `state`
    state = _drop_rows(step_fn, state, active, first_tokens.shape[0])
    tokens = first_tokens[active]
    for position in range(paths.token_ids.shape[1]):
        if active.size == 0:
            break
        log_probs, state = step_fn.step(tokens, state)
        scores, raw, columns = apply_bans(
            log_probs,
            eos_id=eos_id,
            eos_banned=position < min_new[active],
            histories=paths.histories_of(active),
            no_repeat_ngram_size=no_repeat_ngram_size,
            banned_token_ids=banned_token_ids,
        )
        rows = np.arange(active.size)
        chosen = np.asarray(choose(scores), dtype=np.int64)  # a column of `scores`
        next_tokens = chosen if columns is None else columns[rows, chosen]
        # A row whose every token is banned (n-gram bans can exhaust a small vocabulary) gets
        # a -inf "choice": it ends there, without that token.
        produced = np.isfinite(scores[rows, chosen])
        at_eos = next_tokens == eos_id if eos_id is not None else np.zeros(active.size, bool)
        chosen_log_probs = raw[rows[produced], chosen[produced]]
        paths.record(position, active[produced], next_tokens[produced], chosen_log_probs)
        paths.ended_with_eos[active[produced & at_eos]] = True
        if on_step is not None:
            on_step(active[produced], next_tokens[produced])
        kept = np.flatnonzero(produced & ~at_eos & (position + 1 < max_new[active]))
        state = _drop_rows(step_fn, state, kept, active.size)
        active, tokens = active[kept], next_tokens[kept]
    return paths.hypotheses()


@dataclass(frozen=True)
class _Paths:
    """What greedy search and sampling generated, per original row.

    Attributes:
        token_ids: ``(batch, longest)`` int64; row ``r`` holds ``lengths[r]`` tokens.
        token_log_probs: ``(batch, longest)`` float64, their log-probs as returned by ``step``.
        lengths: ``(batch,)`` tokens generated per row (EOS included).
        ended_with_eos: ``(batch,)`` bool.
        histories: per row, the first token and the generated ones (for n-gram bans), or None
            when no n-gram ban needs them.
    """

    token_ids: np.ndarray
    token_log_probs: np.ndarray
    lengths: np.ndarray
    ended_with_eos: np.ndarray
    histories: list[list[int]] | None

    @classmethod
    def start(cls, first_tokens: np.ndarray, max_new: np.ndarray, *, track_history: bool) -> _Paths:
        batch, longest = first_tokens.shape[0], int(max_new.max(initial=0))
        return cls(
            np.zeros((batch, longest), dtype=np.int64),
            np.zeros((batch, longest), dtype=np.float64),
            np.zeros(batch, dtype=np.int64),
            np.zeros(batch, dtype=bool),
            [[token] for token in first_tokens.tolist()] if track_history else None,
        )

    def histories_of(self, rows: np.ndarray) -> list[list[int]] | None:
        """The histories of ``rows`` (original indices), or None when not tracked."""
        return None if self.histories is None else [self.histories[row] for row in rows]

    def record(
        self, position: int, rows: np.ndarray, tokens: np.ndarray, log_probs: np.ndarray
    ) -> None:
        """Store ``tokens`` ``(n,)`` of original ``rows`` ``(n,)`` and their log-probs
        ``(n,)``."""
        self.token_ids[rows, position] = tokens
        self.token_log_probs[rows, position] = log_probs
        self.lengths[rows] = position + 1
        if self.histories is not None:
            for row, token in zip(rows.tolist(), tokens.tolist(), strict=True):
                self.histories[row].append(token)

    def hypotheses(self) -> list[Hypothesis]:
        """One hypothesis per row; EOS is dropped from ``tokens`` but keeps its log-prob."""
        hypotheses = []
        for row, length in enumerate(self.lengths.tolist()):
            log_probs = self.token_log_probs[row, :length]
            score = float(log_probs.sum())
            finished = bool(self.ended_with_eos[row])
            hypotheses.append(
                Hypothesis(
                    tokens=tuple(self.token_ids[row, : length - int(finished)].tolist()),
                    score=score,
                    token_log_probs=tuple(log_probs.tolist()),
                    finished=finished,
                    normalized_score=score,
                )
            )
        return hypotheses


def _drop_rows(step_fn: StepFunction, state: State, kept: np.ndarray, rows: int) -> State:
    """``select`` the ``kept`` rows, skipping the call when every row is kept or none is."""
    if kept.size == rows or kept.size == 0:
        return state
    return step_fn.select(state, kept)


def apply_bans(
    log_probs: np.ndarray | TopLogProbs,
    *,
    eos_id: int | None,
    eos_banned: np.ndarray,
    histories: Sequence[Sequence[int]] | None,
    no_repeat_ngram_size: int,
    banned_token_ids: Sequence[int] = (),
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """A step's candidates with the bans applied: ``(scores, raw, columns)``.

    ``scores`` are the log-probs with ``banned_token_ids``, EOS where ``eos_banned``
    (``(rows,)`` bool) and repeated n-grams (given each row's ``histories``) set to ``-inf``;
    ``raw`` the log-probs as the step gave them; both ``(rows, vocab)``, or ``(rows, K)`` for
    :class:`TopLogProbs`, whose token ids ``columns`` ``(rows, K)`` say which token each
    column is (None: column = token id). Processors never mutate, so ``scores`` may be ``raw``
    itself when no ban applies.
    """
    if isinstance(log_probs, TopLogProbs):
        return _ban_top(log_probs, eos_id, eos_banned, histories, no_repeat_ngram_size,
                        banned_token_ids)  # fmt: skip
    scores = log_probs
    if banned_token_ids:
        scores = ban_tokens(scores, banned_token_ids)
    if eos_id is not None and eos_banned.any():
        scores = ban_tokens(scores, [eos_id], eos_banned)
    if histories is not None and no_repeat_ngram_size > 0:
        scores = ban_tokens_per_row(scores, no_repeat_ngram_bans(histories, no_repeat_ngram_size))
    return scores, log_probs, None


def _ban_top(
    top: TopLogProbs,
    eos_id: int | None,
    eos_banned: np.ndarray,
    histories: Sequence[Sequence[int]] | None,
    no_repeat_ngram_size: int,
    banned_token_ids: Sequence[int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`apply_bans` on each row's top candidates: the same bans, by token id."""
    ids = top.token_ids
    # One comparison per banned id (three for a translator): np.isin sorts, which cost more
    # than the rest of the bans at 320 rows a step.
    banned = np.zeros(ids.shape, dtype=bool)
    for token_id in banned_token_ids:
        banned |= ids == token_id
    if eos_id is not None and eos_banned.any():
        banned |= (ids == eos_id) & eos_banned[:, None]
    if histories is not None and no_repeat_ngram_size > 0:
        for row, row_bans in enumerate(no_repeat_ngram_bans(histories, no_repeat_ngram_size)):
            if len(row_bans):
                banned[row] |= np.isin(ids[row], np.asarray(row_bans, dtype=np.int64))
    scores = np.where(banned, np.float32(-np.inf), top.values) if banned.any() else top.values
    return scores, top.values, ids


def check_lengths(
    first_tokens: np.ndarray,
    max_new_tokens: int | np.ndarray,
    min_new_tokens: int | np.ndarray,
    no_repeat_ngram_size: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate the arguments every search shares; return ``first_tokens``, ``max_new`` and
    ``min_new``, each ``(batch,)`` int64."""
    first_tokens = np.asarray(first_tokens, dtype=np.int64)
    if first_tokens.ndim != 1:
        raise ValueError(f"first_tokens must be 1-D (batch,), got shape {first_tokens.shape}")
    if no_repeat_ngram_size < 0:
        raise ValueError(
            f"no_repeat_ngram_size must be >= 0 (0 = off), got {no_repeat_ngram_size!r}"
        )
    batch = first_tokens.shape[0]
    return (
        first_tokens,
        _per_row(max_new_tokens, batch, "max_new_tokens"),
        _per_row(min_new_tokens, batch, "min_new_tokens"),
    )


def _per_row(value: int | np.ndarray, batch: int, name: str) -> np.ndarray:
    """An int or ``(batch,)`` array of non-negative ints as a ``(batch,)`` int64 array."""
    array = np.asarray(value)
    if array.ndim not in (0, 1) or (array.ndim == 1 and array.shape[0] != batch):
        raise ValueError(f"{name} must be an int or a ({batch},) array, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must be integer, got {value!r}")
    if (array < 0).any():
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return np.broadcast_to(array.astype(np.int64), (batch,)).copy()
