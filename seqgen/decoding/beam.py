"""Batched beam search over the decoding contract (numpy only, like ``search.py``).

The conventions of ``seqgen.decoding.search`` hold here too: lengths per row, EOS, bans, and
scores as sums of the model's log-probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from seqgen.decoding.contract import State, StepFunction, TopLogProbs, narrowed
from seqgen.decoding.hypotheses import Kept, Trail
from seqgen.decoding.search import Hypothesis, apply_bans, check_lengths


def beam_search(
    step_fn: StepFunction,
    state: State,
    first_tokens: np.ndarray,
    *,
    beam_size: int,
    max_new_tokens: int | np.ndarray,
    min_new_tokens: int | np.ndarray = 0,
    eos_id: int | None = None,
    length_penalty: float = 1.0,
    n_best: int = 1,
    no_repeat_ngram_size: int = 0,
    banned_token_ids: Sequence[int] = (),
) -> list[list[Hypothesis]]:
    """Beam search over all sentences at once; per input row, ``n_best`` hypotheses best-first.

    Rows are ``batch x beam_size``, sentence-major (sentence ``b`` owns rows
    ``b * beam_size .. b * beam_size + beam_size - 1``). Each step keeps, per sentence, the
    ``2 * beam_size`` best (beam, token) candidates by cumulative log-prob: those ending in EOS
    become finished hypotheses and the best ``beam_size`` others are the next beams, so the
    beam never runs dry (at most one EOS candidate per beam). Hypotheses are ranked by
    ``normalized_score = score / ((5 + length) / 6) ** length_penalty`` (GNMT, Wu et al. 2016,
    length counting EOS; 0 = raw sum). A sentence is done when it holds ``n_best`` finished
    hypotheses none of its beams can beat, so that the ones returned can no longer change (see
    :func:`_cannot_improve`), or at its ``max_new_tokens``, where its beams join as unfinished
    hypotheses. Done sentences leave the batch. Fewer than ``n_best`` come back only when fewer
    hypotheses of finite score exist (``max_new_tokens == 0`` gives one empty hypothesis).
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size!r}")
    if not 1 <= n_best <= beam_size:
        raise ValueError(f"n_best must be in [1, beam_size={beam_size}], got {n_best!r}")
    first_tokens, max_new, min_new = check_lengths(
        first_tokens, max_new_tokens, min_new_tokens, no_repeat_ngram_size
    )
    # Each row's 2 * beam best extensions, past the banned ids and EOS (see greedy_search).
    candidates = None if no_repeat_ngram_size > 0 else 2 * beam_size + len(banned_token_ids) + 1
    step_fn = narrowed(step_fn, candidates)
    kept = Kept(first_tokens.shape[0], beam_size)
    kept.keep_empty(np.flatnonzero(max_new == 0))
    beams = _Beams.start(np.flatnonzero(max_new > 0), first_tokens, beam_size)
    state, first = _first_state(step_fn, state, beams.sentences, beam_size)
    for position in range(int(max_new.max(initial=0))):
        if beams.sentences.size == 0:
            break
        log_probs, state = _step(step_fn, beams.last_tokens, state, first, position)
        scores, _, columns = apply_bans(
            log_probs,
            eos_id=eos_id,
            eos_banned=(position < min_new[beams.sentences]).repeat(beam_size),
            histories=beams.histories() if no_repeat_ngram_size > 0 else None,
            no_repeat_ngram_size=no_repeat_ngram_size,
            banned_token_ids=banned_token_ids,
        )
        candidates = _Candidates.top(beams.scores, scores, columns, beam_size, eos_id)
        # Where bans leave no extension at all, the beams end here, unfinished.
        _keep_beams(
            kept, beams, np.flatnonzero(np.isneginf(candidates.scores[:, 0])), length_penalty
        )
        _keep_eos_candidates(kept, beams, candidates, length_penalty)
        parent_rows, beams = beams.advance(candidates)
        at_max = position + 1 >= max_new[beams.sentences]
        _keep_beams(kept, beams, np.flatnonzero(at_max), length_penalty)
        done = at_max | _cannot_improve(kept, beams, max_new, length_penalty, n_best)
        if done.all():
            break
        if done.any():
            parent_rows, beams = beams.drop(done, parent_rows)
        # After the first step the state may have fewer rows per sentence (_first_rows).
        state = step_fn.select(state, parent_rows if position else _first_rows(parent_rows, first))
    return kept.hypotheses(beams.trail, n_best)


def _first_state(
    step_fn: StepFunction, state: State, sentences: np.ndarray, beam_size: int
) -> tuple[State, tuple[int, int]]:
    """The state for the first step of ``sentences`` ``(sentences,)`` (rows of ``state``) and
    ``(beam, rows)``, its rows per sentence (see :func:`_step`): 2, or every beam's row for a
    step function with ``uniform_rows`` (CUDA graphs, where another shape is another graph to
    capture and keep)."""
    rows = beam_size if getattr(step_fn, "uniform_rows", False) else min(2, beam_size)
    if sentences.size:
        state = step_fn.select(state, sentences.repeat(rows))
    return state, (beam_size, rows)


def _first_rows(beam_rows: np.ndarray, first: tuple[int, int]) -> np.ndarray:
    """The first step's row of each beam row ``(n,)``: with ``first`` = ``(beam, rows)``,
    beam ``b`` of sentence ``s`` is row ``s * rows + min(b, rows - 1)`` (beams past the first
    ``rows`` are copies of the last of them)."""
    beam_size, rows = first
    return beam_rows // beam_size * rows + np.minimum(beam_rows % beam_size, rows - 1)


def _step(
    step_fn: StepFunction,
    tokens: np.ndarray,
    state: State,
    first: tuple[int, int],
    position: int,
) -> tuple[np.ndarray | TopLogProbs, State]:
    """One step of the beams' ``tokens`` ``(sentences * beam,)``: the log-probs of every beam
    row and the new state. At ``position`` 0 only beam 0 is alive (``-inf`` scores for the
    others) and every beam is a copy of it, so stepping all of them computed each sentence's row
    ``beam`` times: the state then has ``first = (beam, rows)`` rows per sentence, the step runs
    those and each beam takes its copy's log-probs (:func:`_first_rows`); the new state keeps
    ``rows`` per sentence, which the caller's ``select`` spreads to the beams. Two rows, not
    one: the attention of a single query per sentence runs another product kernel, whose sums
    moved the first step's log-probs by up to 8e-6 (its state and top ids were the same); two
    rows give the same bits as five. Over test_2016_flickr in batches of 100 at beam 5 this
    steps 82,895 rows instead of 85,895."""
    beam_size, rows = first
    if position or rows == beam_size:
        return step_fn.step(tokens, state)
    log_probs, state = step_fn.step(tokens.reshape(-1, beam_size)[:, :rows].ravel(), state)
    take = _first_rows(np.arange(tokens.size), first)
    if isinstance(log_probs, TopLogProbs):
        return log_probs.take(take), state
    return np.asarray(log_probs)[take], state


def _length_penalty(length: int | np.ndarray, alpha: float) -> float | np.ndarray:
    """GNMT length penalty ``((5 + length) / 6) ** alpha`` (Wu et al., 2016, eq. 14)."""
    return ((5.0 + length) / 6.0) ** alpha


@dataclass(frozen=True)
class _Candidates:
    """The ``2 * beam`` best (beam, token) extensions of each sentence, best first.

    Attributes are ``(sentences, 2 * beam)``: ``scores`` (cumulative), ``beams`` (index
    within the sentence), ``token_ids``, ``step_log_probs`` (the token's own log-prob) and
    ``is_eos``.
    """

    scores: np.ndarray
    beams: np.ndarray
    token_ids: np.ndarray
    step_log_probs: np.ndarray
    is_eos: np.ndarray

    @classmethod
    def top(
        cls,
        beam_scores: np.ndarray,
        scores: np.ndarray,
        columns: np.ndarray | None,
        beam_size: int,
        eos_id: int | None,
    ) -> _Candidates:
        """Rank ``(sentences, beam)`` cumulative scores plus ``(rows, width)`` step scores,
        whose columns are the tokens ``columns`` ``(rows, width)`` (None: column = token)."""
        sentences, width = beam_scores.shape[0], scores.shape[1]
        # The best 2 * beam of a sentence are among the best 2 * beam of each of its rows, so
        # only (rows, 2 * beam) cumulative sums are formed and ranked. A narrowed step's
        # candidates (``columns`` given) come best first: unless a ban took one of a row's
        # first 2 * beam, those are its best; else a per-row argpartition (O(width), in the
        # step's float32) finds them.
        per_row = min(2 * beam_size, width)
        row_best = None
        if columns is not None and not np.isneginf(scores[:, :per_row]).any():
            row_scores = scores[:, :per_row]
        else:
            row_best = np.argpartition(scores, width - per_row, axis=1)[:, width - per_row :]
            row_scores = scores[np.arange(scores.shape[0])[:, None], row_best]
        totals = beam_scores.reshape(-1, 1) + row_scores
        totals = totals.reshape(sentences, beam_size * per_row)
        count = min(2 * beam_size, totals.shape[1])
        # One sort of the 2 * beam^2 sums per sentence: numpy's argpartition is slow on many
        # short rows (1,000 x 50: 0.75 ms against 0.32 ms for argsort, each step). Equal sums
        # come in an order fixed by the inputs (not by position, as a stable sort would give).
        best = np.argsort(-totals, axis=1)[:, :count]  # (sentences, count), best first
        each = np.arange(sentences)[:, None]
        beams, rank = np.divmod(best, per_row)  # rank among the row's candidates
        rows = each * beam_size + beams
        chosen = rank if row_best is None else row_best[rows, rank]
        token_ids = chosen if columns is None else columns[rows, chosen]
        # Bans only set -inf, so a finite candidate's step score is the model's log-prob.
        step_log_probs = row_scores[rows, rank].astype(np.float64)
        is_eos = token_ids == eos_id if eos_id is not None else np.zeros(best.shape, bool)
        return cls(totals[each, best], beams, token_ids, step_log_probs, is_eos)


@dataclass(frozen=True)
class _Beams:
    """The alive beams of the sentences still being decoded.

    Attributes:
        sentences: ``(sentences,)`` original batch index of each sentence.
        scores: ``(sentences, beam)`` float64 cumulative log-probs (``-inf`` = no beam).
        rows: ``(rows,)`` each row's row in the trail's last step (its beam is
            ``(length - 1, rows)``).
        length: tokens generated so far.
        trail: every step's tokens and back-pointers (shared by all steps' beams).
    """

    sentences: np.ndarray
    scores: np.ndarray
    rows: np.ndarray
    length: int
    trail: Trail

    @classmethod
    def start(cls, sentences: np.ndarray, first_tokens: np.ndarray, beam_size: int) -> _Beams:
        """``beam_size`` copies of each sentence's start; only beam 0 is alive, so the first
        step does not fill the beam with copies of the same tokens."""
        scores = np.full((sentences.size, beam_size), -np.inf)
        scores[:, 0] = 0.0
        trail = Trail(first_tokens[sentences].repeat(beam_size))
        return cls(sentences, scores, np.arange(sentences.size * beam_size), 0, trail)

    @property
    def last_tokens(self) -> np.ndarray:
        """``(rows,)`` int64, the token each row feeds to the next step."""
        tokens = self.trail.token_ids[-1] if self.length else self.trail.first_tokens
        return tokens[self.rows]

    def histories(self) -> list[list[int]]:
        """Per row, the first token and the tokens generated so far (for n-gram bans)."""
        steps = np.full(self.rows.size, self.length - 1)
        token_ids, _, roots = self.trail.paths(steps, self.rows)
        first = self.trail.first_tokens[roots]
        return np.concatenate([first[:, None], token_ids], axis=1).tolist()

    def advance(self, candidates: _Candidates) -> tuple[np.ndarray, _Beams]:
        """The best ``beam`` non-EOS candidates of each sentence become its beams.

        Returns ``(rows,)`` parent rows (into the current rows) and the new beams.
        """
        sentences, beam_size = self.scores.shape
        # A stable sort on is_eos moves the non-EOS candidates first, keeping their order;
        # there are always >= beam of them since each beam yields at most one EOS candidate.
        alive = np.argsort(candidates.is_eos, axis=1, kind="stable")[:, :beam_size]
        each = np.arange(sentences)[:, None]
        parent_rows = (each * beam_size + candidates.beams[each, alive]).ravel()
        token_ids = candidates.token_ids[each, alive].ravel()
        step_log_probs = candidates.step_log_probs[each, alive].ravel()
        # (Only a vocabulary of EOS alone could leave an EOS here: such a beam is dead.)
        is_eos = candidates.is_eos[each, alive]
        scores = np.where(is_eos, -np.inf, candidates.scores[each, alive])
        self.trail.append(self.rows[parent_rows], token_ids, step_log_probs)
        rows = np.arange(parent_rows.size)
        return parent_rows, _Beams(self.sentences, scores, rows, self.length + 1, self.trail)

    def drop(self, done: np.ndarray, parent_rows: np.ndarray) -> tuple[np.ndarray, _Beams]:
        """Remove the ``done`` (``(sentences,)`` bool) sentences from beams and parent rows."""
        rows = np.repeat(~done, self.scores.shape[1])
        return parent_rows[rows], _Beams(
            self.sentences[~done], self.scores[~done], self.rows[rows], self.length, self.trail
        )


def _keep_eos_candidates(
    kept: Kept, beams: _Beams, candidates: _Candidates, length_penalty: float
) -> None:
    """Offer each EOS candidate of finite score as a finished hypothesis of its sentence."""
    sentences, ranks = np.nonzero(candidates.is_eos & np.isfinite(candidates.scores))
    rows = sentences * beams.scores.shape[1] + candidates.beams[sentences, ranks]
    kept.offer(
        beams.sentences[sentences],
        candidates.scores[sentences, ranks],
        _length_penalty(beams.length + 1, length_penalty),  # EOS counts
        step=beams.length - 1,
        rows=beams.rows[rows],
        eos_log_probs=candidates.step_log_probs[sentences, ranks],
    )


def _keep_beams(kept: Kept, beams: _Beams, sentences: np.ndarray, length_penalty: float) -> None:
    """Offer the alive beams of ``sentences`` (local indices) as unfinished hypotheses."""
    local, beam = np.nonzero(np.isfinite(beams.scores[sentences]))
    sentences = sentences[local]
    kept.offer(
        beams.sentences[sentences],
        beams.scores[sentences, beam],
        _length_penalty(beams.length, length_penalty),
        step=beams.length - 1,
        rows=beams.rows[sentences * beams.scores.shape[1] + beam],
    )


def _cannot_improve(
    kept: Kept, beams: _Beams, max_new: np.ndarray, length_penalty: float, n_best: int
) -> np.ndarray:
    """``(sentences,)`` bool: the sentence holds ``n_best`` finished hypotheses and no alive
    beam can end above the ``n_best``-th of them, so the ``n_best`` returned are final. (Not
    the ``beam``-th: a translation returns one hypothesis, and waiting until ``beam`` of them
    are out of reach stepped 10% more rows on test_2016_flickr for the same output.)

    Log-probs are <= 0, so a beam's score only falls. Its normalized score can still rise when
    ``length_penalty > 0``, since the penalty grows with length: the bound then divides the
    best beam's score by the penalty at the sentence's ``max_new_tokens``, the largest it can
    reach. With ``length_penalty <= 0`` the penalty never grows and the current length gives the
    bound. (The bound at the current length alone, as in Hugging Face's default, is only a
    heuristic for ``length_penalty > 0``: it can stop before the best hypothesis is found.)
    """
    best_alive = beams.scores.max(axis=1)
    if length_penalty > 0:
        penalty = _length_penalty(max_new[beams.sentences], length_penalty)
    else:
        penalty = _length_penalty(beams.length, length_penalty)
    returned = kept.normalized[beams.sentences, n_best - 1]  # -inf while fewer are kept
    return np.isneginf(best_alive) | (best_alive / penalty <= returned)
