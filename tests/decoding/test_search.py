"""Search on scripted step functions, against hand-computed expectations.

A scripted step function looks the next-token distribution up by the row's whole token
history (first token included), like fairseq's ``tests/utils.py`` and OpenNMT-py's
``test_beam_search.py``; its state is ``{"history": (rows, t)}`` and ``select`` gathers rows.
Vocabulary: BOS=0, EOS=1, A=2, B=3, C=4, D=5.
"""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pytest

from seqgen.decoding.beam import beam_search
from seqgen.decoding.contract import TopLogProbs
from seqgen.decoding.search import Hypothesis, greedy_search, sample

BOS, EOS, A, B, C, D = range(6)
VOCAB = 6

Prefix = tuple[int, ...]


def dist(probs: Mapping[int, float], vocab: int = VOCAB) -> np.ndarray:
    """A ``(vocab,)`` distribution: ``probs`` as given, the rest spread evenly over the others."""
    vector = np.zeros(vocab)
    for token, prob in probs.items():
        vector[token] = prob
    others = [token for token in range(vocab) if token not in probs]
    if others:
        vector[others] = (1.0 - sum(probs.values())) / len(others)
    return vector


def table(entries: Mapping[Prefix, Mapping[int, float]], default: Mapping[int, float]):
    """Distribution by exact history, ``default`` for any other history."""
    return lambda prefix: dist(entries.get(prefix, default))


def by_last_token(entries: Mapping[int, Mapping[int, float]]):
    """Distribution depending only on the last token (a Markov chain)."""
    return lambda prefix: dist(entries[prefix[-1]])


def random_distributions(vocab: int = VOCAB, sharpness: float = 1.5):
    """A fixed pseudo-random distribution per history: no ties, any length."""

    def probs(prefix: Prefix) -> np.ndarray:
        seed = zlib.crc32(np.asarray(prefix, dtype=np.int64).tobytes())
        logits = np.random.default_rng(seed).normal(size=vocab) * sharpness
        return np.exp(logits) / np.exp(logits).sum()

    return probs


class ScriptedStep:
    """A step function whose log-probs are ``log(probs_for(history))`` per row."""

    def __init__(self, probs_for: Callable[[Prefix], np.ndarray]) -> None:
        self.probs_for = probs_for
        self.step_rows: list[int] = []  # rows of every step call, to check finished rows leave
        self.selected: list[np.ndarray] = []

    def start(self, first_tokens: list[int]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        first = np.asarray(first_tokens, dtype=np.int64)
        return {"history": np.zeros((first.size, 0), dtype=np.int64)}, first

    def log_probs(self, prefix: Prefix) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(self.probs_for(prefix)).astype(np.float32)

    def step(self, tokens: np.ndarray, state: Mapping[str, np.ndarray]):
        assert tokens.dtype == np.int64 and tokens.shape == (state["history"].shape[0],)
        history = np.concatenate([state["history"], tokens[:, None]], axis=1)
        self.step_rows.append(tokens.size)
        log_probs = np.stack([self.log_probs(tuple(row)) for row in history.tolist()])
        return log_probs.reshape(tokens.size, -1), {"history": history}

    def select(self, state: Mapping[str, np.ndarray], rows: np.ndarray):
        self.selected.append(np.array(rows))
        return {name: array[rows] for name, array in state.items()}


class NarrowingStep(ScriptedStep):
    """A scripted step that, once narrowed, returns each row's top candidates only, as the
    model adapters do (``TopLogProbs``, best first)."""

    candidates: int | None = None
    asked: list[int | None] = []

    def narrowed(self, candidates: int) -> NarrowingStep:
        view = NarrowingStep(self.probs_for)
        view.step_rows, view.selected, view.candidates = self.step_rows, self.selected, candidates
        self.asked.append(candidates)
        return view

    def step(self, tokens: np.ndarray, state: Mapping[str, np.ndarray]):
        log_probs, state = super().step(tokens, state)
        if self.candidates is None:
            return log_probs, state
        # Best first; among equal log-probs the lower token id first, as a stable sort gives.
        ids = np.argsort(-log_probs, axis=1, kind="stable")[:, : self.candidates]
        return TopLogProbs(np.take_along_axis(log_probs, ids, axis=1), ids), state


def decode(search: Callable, probs_for: Callable, first_tokens: list[int], **kwargs):
    """Run ``search`` on a fresh scripted step; return its result and the step function."""
    step_fn = ScriptedStep(probs_for)
    state, first = step_fn.start(first_tokens)
    return search(step_fn, state, first, **kwargs), step_fn


def log(*probs: float) -> float:
    """Sum of the float32 log-probs, as search sees them."""
    return sum(float(np.float32(math.log(prob))) for prob in probs)


def penalty(length: int, alpha: float) -> float:
    return ((5 + length) / 6) ** alpha


def assert_hypothesis(
    hypothesis: Hypothesis, tokens: tuple[int, ...], probs: tuple[float, ...], finished: bool
) -> None:
    """Tokens, finished flag, per-token log-probs and their sum, to float32 precision."""
    assert hypothesis.tokens == tokens
    assert hypothesis.finished is finished
    assert hypothesis.token_log_probs == pytest.approx([log(prob) for prob in probs], rel=1e-6)
    assert hypothesis.score == pytest.approx(log(*probs), rel=1e-6)


# Greedy takes A (0.5) and then EOS (0.3): 0.15. B (0.4) then EOS (0.9) is 0.36.
GREEDY_TRAP = table(
    {
        (BOS,): {BOS: 0.01, EOS: 0.05, A: 0.5, B: 0.4, C: 0.03, D: 0.01},
        (BOS, A): {EOS: 0.3, A: 0.26, B: 0.24},  # the rest: 0.2 / 3 each
        (BOS, B): {EOS: 0.9},
    },
    default={EOS: 0.6},  # the rest: 0.08 each
)


def test_greedy_takes_the_locally_best_token() -> None:
    [best], step_fn = decode(greedy_search, GREEDY_TRAP, [BOS], max_new_tokens=5, eos_id=EOS)
    assert_hypothesis(best, (A,), (0.5, 0.3), finished=True)  # EOS ends it, not in tokens
    assert best.normalized_score == best.score
    assert step_fn.step_rows == [1, 1]


def test_beam_finds_what_greedy_misses() -> None:
    [[best]], step_fn = decode(
        beam_search, GREEDY_TRAP, [BOS], beam_size=2, max_new_tokens=3, eos_id=EOS
    )
    assert_hypothesis(best, (B,), (0.4, 0.9), finished=True)
    assert best.normalized_score == pytest.approx(best.score / penalty(2, 1.0))


def test_beam_stops_once_no_beam_can_beat_the_finished() -> None:
    # After step 2 the finished (B) 0.36 and (A) 0.15 beat both beams (A A 0.13, A B 0.12).
    [[first, second]], step_fn = decode(
        beam_search,
        GREEDY_TRAP,
        [BOS],
        beam_size=2,
        n_best=2,
        max_new_tokens=10,
        eos_id=EOS,
        length_penalty=0.0,
    )
    assert_hypothesis(first, (B,), (0.4, 0.9), finished=True)
    assert_hypothesis(second, (A,), (0.5, 0.3), finished=True)
    assert step_fn.step_rows == [2, 2]


def test_beam_stops_once_the_n_best_it_returns_are_out_of_reach() -> None:
    # After step 2: finished (B) 0.45 and () 0.05, beams A A 0.2 and A B 0.12. The best one is
    # out of reach, the second is not: n_best=1 stops there, n_best=2 steps once more.
    probs_for = table(
        {
            (BOS,): {B: 0.5, A: 0.4, EOS: 0.05},
            (BOS, B): {EOS: 0.9},
            (BOS, A): {A: 0.5, B: 0.3, EOS: 0.1},
        },
        default={EOS: 0.6},
    )
    options = {"beam_size": 2, "max_new_tokens": 10, "eos_id": EOS, "length_penalty": 0.0}
    [[best]], step_fn = decode(beam_search, probs_for, [BOS], n_best=1, **options)
    assert_hypothesis(best, (B,), (0.5, 0.9), finished=True)
    assert step_fn.step_rows == [2, 2]
    [[first, second]], step_fn = decode(beam_search, probs_for, [BOS], n_best=2, **options)
    assert (first.tokens, first.score) == (best.tokens, best.score)
    assert_hypothesis(second, (A, A), (0.4, 0.5, 0.6), finished=True)
    assert step_fn.step_rows == [2, 2, 2]


def test_beam_n_best_in_order_with_exact_scores() -> None:
    [hypotheses], _ = decode(
        beam_search,
        GREEDY_TRAP,
        [BOS],
        beam_size=3,
        n_best=3,
        max_new_tokens=2,
        eos_id=EOS,
        length_penalty=0.0,
    )
    assert len(hypotheses) == 3
    assert_hypothesis(hypotheses[0], (B,), (0.4, 0.9), finished=True)
    assert_hypothesis(hypotheses[1], (A,), (0.5, 0.3), finished=True)
    # At max_new_tokens the best alive beam (A A, 0.13) beats the finished () (0.05).
    assert_hypothesis(hypotheses[2], (A, A), (0.5, 0.26), finished=False)
    assert [hypothesis.normalized_score for hypothesis in hypotheses] == [
        hypothesis.score for hypothesis in hypotheses
    ]


def test_min_new_tokens_bans_eos() -> None:
    [best], _ = decode(
        greedy_search, GREEDY_TRAP, [BOS], max_new_tokens=5, min_new_tokens=2, eos_id=EOS
    )
    assert_hypothesis(best, (A, A), (0.5, 0.26, 0.6), finished=True)
    [hypotheses], _ = decode(
        beam_search,
        GREEDY_TRAP,
        [BOS],
        beam_size=2,
        n_best=2,
        max_new_tokens=3,
        min_new_tokens=2,
        eos_id=EOS,
        length_penalty=0.0,
    )
    assert_hypothesis(hypotheses[0], (A, A), (0.5, 0.26, 0.6), finished=True)
    assert_hypothesis(hypotheses[1], (A, B), (0.5, 0.24, 0.6), finished=True)


# () ends at once with 0.4; A B EOS has 0.45 * 0.8 * 0.9 = 0.324: lower in sum, higher per
# GNMT length: log(0.4) / 1 = -0.916 < log(0.324) / (8 / 6) = -0.845.
SHORT_OR_LONG = table(
    {
        (BOS,): {EOS: 0.4, A: 0.45},
        (BOS, A): {B: 0.8},
        (BOS, A, B): {EOS: 0.9},
    },
    default={EOS: 0.6},
)


@pytest.mark.parametrize(
    ("length_penalty", "winner", "runner_up"),
    [
        (0.0, ((), (0.4,)), ((A, B), (0.45, 0.8, 0.9))),
        (1.0, ((A, B), (0.45, 0.8, 0.9)), ((), (0.4,))),
    ],
)
def test_length_penalty_changes_the_winner(length_penalty, winner, runner_up) -> None:
    [hypotheses], _ = decode(
        beam_search,
        SHORT_OR_LONG,
        [BOS],
        beam_size=2,
        n_best=2,
        max_new_tokens=3,
        eos_id=EOS,
        length_penalty=length_penalty,
    )
    for hypothesis, (tokens, probs) in zip(hypotheses, [winner, runner_up], strict=True):
        assert_hypothesis(hypothesis, tokens, probs, finished=True)
        expected = log(*probs) / penalty(len(probs), length_penalty)
        assert hypothesis.normalized_score == pytest.approx(expected, rel=1e-6)


def test_beam_early_stop_bound_accounts_for_the_growing_length_penalty() -> None:
    # After step 1 () is finished at log(0.5) = -0.69 and the beam A has log(0.45) = -0.80:
    # at its current length it looks beaten, but A B EOS ends at log(0.441) / (8 / 6) = -0.61.
    probs_for = table(
        {(BOS,): {EOS: 0.5, A: 0.45}, (BOS, A): {B: 0.99}, (BOS, A, B): {EOS: 0.99}},
        default={EOS: 0.6},
    )
    [[best]], step_fn = decode(
        beam_search, probs_for, [BOS], beam_size=1, max_new_tokens=10, eos_id=EOS
    )
    assert_hypothesis(best, (A, B), (0.45, 0.99, 0.99), finished=True)
    assert step_fn.step_rows == [1, 1, 1]  # and then the bound at length 10 stops it


def test_max_new_tokens_per_row() -> None:
    max_new_tokens = np.array([1, 3, 0, 2])
    hypotheses, step_fn = decode(
        greedy_search, random_distributions(), [BOS, A, B, C], max_new_tokens=max_new_tokens
    )
    assert [len(hypothesis.tokens) for hypothesis in hypotheses] == [1, 3, 0, 2]
    assert not any(hypothesis.finished for hypothesis in hypotheses)
    assert hypotheses[2] == Hypothesis((), 0.0, (), False, 0.0)
    assert step_fn.step_rows == [3, 2, 1]  # row 2 never steps; rows leave at their max

    results, step_fn = decode(
        beam_search,
        random_distributions(),
        [BOS, A, B, C],
        beam_size=2,
        n_best=2,
        max_new_tokens=max_new_tokens,
    )
    assert [[len(h.tokens) for h in hypotheses] for hypotheses in results] == [
        [1, 1],
        [3, 3],
        [0],
        [2, 2],
    ]
    assert step_fn.step_rows == [6, 4, 2]


LENGTHS = {
    "first_tokens": [BOS, A, B, C, BOS, D],
    "max_new_tokens": np.array([4, 7, 2, 5, 0, 6]),
    "min_new_tokens": np.array([0, 2, 0, 1, 0, 3]),
}


def rows_alone(search: Callable, probs_for: Callable, **kwargs) -> list:
    """``search`` on each row of ``LENGTHS`` as a batch of one."""
    results = []
    for row, first_token in enumerate(LENGTHS["first_tokens"]):
        [result], _ = decode(
            search,
            probs_for,
            [first_token],
            max_new_tokens=LENGTHS["max_new_tokens"][row : row + 1],
            min_new_tokens=LENGTHS["min_new_tokens"][row : row + 1],
            **kwargs,
        )
        results.append(result)
    return results


@pytest.mark.parametrize(
    ("search", "kwargs"),
    [
        (greedy_search, {}),
        (greedy_search, {"no_repeat_ngram_size": 2}),
        (beam_search, {"beam_size": 3, "n_best": 3, "length_penalty": 0.6}),
        (beam_search, {"beam_size": 2, "n_best": 2, "length_penalty": 0.0}),
        (beam_search, {"beam_size": 4, "no_repeat_ngram_size": 2}),
    ],
)
def test_rows_leaving_early_do_not_change_other_rows(search: Callable, kwargs: dict) -> None:
    probs_for = random_distributions()
    batched, step_fn = decode(
        search,
        probs_for,
        LENGTHS["first_tokens"],
        max_new_tokens=LENGTHS["max_new_tokens"],
        min_new_tokens=LENGTHS["min_new_tokens"],
        eos_id=EOS,
        **kwargs,
    )
    assert batched == rows_alone(search, probs_for, eos_id=EOS, **kwargs)
    # Finished rows leave the batch: the step never grows and ends smaller than it started
    # (beam search's first step steps two rows per sentence: beam 0, the only one alive, and a
    # copy, see beam._step).
    rows = step_fn.step_rows[1:] if search is beam_search else step_fn.step_rows
    assert rows == sorted(rows, reverse=True)
    assert rows[-1] < rows[0]
    if search is beam_search:
        assert step_fn.step_rows[0] == 2 * sum(LENGTHS["max_new_tokens"] > 0)


@pytest.mark.parametrize("length_penalty", [0.0, 0.6, 1.0, -0.5])
def test_wide_beam_equals_exhaustive_search(length_penalty: float) -> None:
    vocab, max_new_tokens, n_best = 4, 3, 5
    step_fn = ScriptedStep(random_distributions(vocab, sharpness=1.0))
    candidates = []  # (normalized, tokens, finished)
    for tokens, finished in [
        *(
            (tokens, True)
            for length in range(max_new_tokens)
            for tokens in itertools.product([BOS, A, B], repeat=length)
        ),
        *((tokens, False) for tokens in itertools.product([BOS, A, B], repeat=max_new_tokens)),
    ]:
        sequence = (BOS, *tokens, *([EOS] if finished else []))
        score = sum(
            float(step_fn.log_probs(sequence[:end])[sequence[end]])
            for end in range(1, len(sequence))
        )
        length = len(sequence) - 1
        candidates.append((score / penalty(length, length_penalty), tokens, finished))
    expected = sorted(candidates, key=lambda candidate: -candidate[0])[:n_best]

    state, first = step_fn.start([BOS])
    [hypotheses] = beam_search(
        step_fn,
        state,
        first,
        beam_size=27,  # every prefix fits: the search is exhaustive
        n_best=n_best,
        max_new_tokens=max_new_tokens,
        eos_id=EOS,
        length_penalty=length_penalty,
    )
    assert [(h.tokens, h.finished) for h in hypotheses] == [
        (tokens, finished) for _, tokens, finished in expected
    ]
    assert [h.normalized_score for h in hypotheses] == pytest.approx(
        [normalized for normalized, _, _ in expected], rel=1e-5
    )
    for hypothesis in hypotheses:
        assert hypothesis.score == pytest.approx(sum(hypothesis.token_log_probs), rel=1e-9)


@pytest.mark.parametrize("temperature", [1.0, 0.5, 3.0])
def test_sample_with_top_k_1_equals_greedy(temperature: float) -> None:
    kwargs = {"max_new_tokens": np.array([5, 8, 3]), "eos_id": EOS}
    greedy, _ = decode(greedy_search, random_distributions(), [BOS, A, B], **kwargs)
    sampled, _ = decode(
        sample,
        random_distributions(),
        [BOS, A, B],
        temperature=temperature,
        top_k=1,
        rng=np.random.default_rng(0),
        **kwargs,
    )
    assert sampled == greedy


def test_sample_with_tiny_temperature_or_top_p_equals_greedy() -> None:
    kwargs = {"max_new_tokens": 6, "eos_id": EOS}
    greedy, _ = decode(greedy_search, random_distributions(), [BOS, A, B], **kwargs)
    for options in ({"temperature": 1e-6}, {"top_p": 1e-6}):
        sampled, _ = decode(
            sample,
            random_distributions(),
            [BOS, A, B],
            rng=np.random.default_rng(1),
            **options,
            **kwargs,
        )
        assert sampled == greedy


def test_sample_is_reproducible_with_a_seed() -> None:
    def run(seed: int) -> list[Hypothesis]:
        hypotheses, _ = decode(
            sample,
            random_distributions(sharpness=0.5),
            [BOS] * 8,
            max_new_tokens=20,
            eos_id=EOS,
            temperature=1.3,
            top_k=4,
            top_p=0.9,
            rng=np.random.default_rng(seed),
        )
        return hypotheses

    assert run(7) == run(7)
    assert run(7) != run(8)
    # Temperature, top-k and top-p change the draw, never the reported score.
    for hypothesis in run(7):
        assert hypothesis.score == pytest.approx(sum(hypothesis.token_log_probs), rel=1e-9)


# One step from BOS: A 0.7, B 0.2, EOS 0.1, nothing else.
ONE_STEP = table({(BOS,): {A: 0.7, B: 0.2, EOS: 0.1, BOS: 0.0, C: 0.0, D: 0.0}}, default={})


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, {A: 0.7, B: 0.2, EOS: 0.1}),
        ({"top_k": 2}, {A: 0.7 / 0.9, B: 0.2 / 0.9}),
        ({"top_p": 0.75}, {A: 0.7 / 0.9, B: 0.2 / 0.9}),  # A alone has 0.7 < 0.75
        ({"top_p": 0.65}, {A: 1.0}),
        ({"temperature": 2.0}, {A: 0.7**0.5, B: 0.2**0.5, EOS: 0.1**0.5}),
    ],
)
def test_sample_draws_from_the_filtered_distribution(options: dict, expected: dict) -> None:
    rows = 4000
    hypotheses, _ = decode(
        sample,
        ONE_STEP,
        [BOS] * rows,
        max_new_tokens=1,
        eos_id=EOS,
        rng=np.random.default_rng(3),
        **options,
    )
    drawn = [EOS if h.finished else h.tokens[0] for h in hypotheses]
    counts = {token: drawn.count(token) / rows for token in set(drawn)}
    total = sum(expected.values())
    assert set(counts) == set(expected)  # exactly the tokens the filters keep
    for token, weight in expected.items():
        assert counts[token] == pytest.approx(weight / total, abs=0.03)


# A Markov chain that loops A B A B ...; C and D are the second choices after A and B.
LOOP = by_last_token(
    {
        BOS: {A: 0.6},
        A: {B: 0.6, C: 0.3},
        B: {A: 0.6, D: 0.3},
        C: {A: 0.6, B: 0.3},
        D: {EOS: 0.9},
    }
)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (0, (A, B, A, B, A)),
        (2, (A, B, A, C, A)),  # "A B" seen: after A, B is banned
        (3, (A, B, A, B, D)),  # "A B A" seen: after A B, A is banned
    ],
)
def test_no_repeat_ngram(size: int, expected: tuple[int, ...]) -> None:
    [best], _ = decode(
        greedy_search, LOOP, [BOS], max_new_tokens=5, eos_id=EOS, no_repeat_ngram_size=size
    )
    assert best.tokens == expected


def repeats_an_ngram(tokens: tuple[int, ...], size: int) -> bool:
    ngrams = [tokens[start : start + size] for start in range(len(tokens) - size + 1)]
    return len(ngrams) != len(set(ngrams))


@pytest.mark.parametrize("size", [1, 2, 3])
def test_no_repeat_ngram_holds_for_every_search(size: int) -> None:
    kwargs = {"max_new_tokens": 12, "no_repeat_ngram_size": size}
    first_tokens = [BOS, A, B]
    rng = np.random.default_rng(0)
    paths = [
        *decode(greedy_search, random_distributions(), first_tokens, **kwargs)[0],
        *decode(sample, random_distributions(), first_tokens, rng=rng, **kwargs)[0],
    ]
    beams, _ = decode(
        beam_search, random_distributions(), first_tokens, beam_size=3, n_best=3, **kwargs
    )
    pairs = [
        *zip(first_tokens * 2, paths, strict=True),
        *((first, h) for first, row in zip(first_tokens, beams, strict=True) for h in row),
    ]
    assert len(pairs) == 6 + 9
    for first_token, hypothesis in pairs:
        assert not repeats_an_ngram((first_token, *hypothesis.tokens), size)
        assert np.isfinite(hypothesis.score)
    # With size 1 every token appears once, so all but the first come out and the row ends.
    if size == 1:
        assert all(len(hypothesis.tokens) == VOCAB - 1 for _, hypothesis in pairs)


@pytest.mark.parametrize("search", [greedy_search, sample])
def test_on_step_streams_every_token(search: Callable) -> None:
    streamed: dict[int, list[int]] = {}
    calls: list[np.ndarray] = []

    def on_step(row_indices: np.ndarray, tokens: np.ndarray) -> None:
        calls.append(row_indices)
        for row, token in zip(row_indices.tolist(), tokens.tolist(), strict=True):
            streamed.setdefault(row, []).append(token)

    extra = {"rng": np.random.default_rng(5)} if search is sample else {}
    hypotheses, _ = decode(
        search,
        random_distributions(),
        [BOS, A, B, C],
        max_new_tokens=np.array([6, 0, 3, 9]),
        eos_id=EOS,
        on_step=on_step,
        **extra,
    )
    for row, hypothesis in enumerate(hypotheses):
        expected = [*hypothesis.tokens, *([EOS] if hypothesis.finished else [])]
        assert streamed.get(row, []) == expected
    # Each call names the rows still active, in batch order; rows only ever leave.
    for before, after in itertools.pairwise(calls):
        assert set(after) <= set(before) and list(after) == sorted(after)


def test_zero_max_new_tokens_never_steps() -> None:
    [best], step_fn = decode(greedy_search, GREEDY_TRAP, [BOS], max_new_tokens=0, eos_id=EOS)
    assert best == Hypothesis((), 0.0, (), False, 0.0) and step_fn.step_rows == []
    [hypotheses], step_fn = decode(
        beam_search, GREEDY_TRAP, [BOS], beam_size=2, n_best=2, max_new_tokens=0, eos_id=EOS
    )
    assert hypotheses == [Hypothesis((), 0.0, (), False, 0.0)] and step_fn.step_rows == []


SAMPLE_DEFAULTS = {"rng": np.random.default_rng(0)}


@pytest.mark.parametrize(
    ("search", "kwargs", "name"),
    [
        (greedy_search, {"max_new_tokens": -1}, "max_new_tokens"),
        (greedy_search, {"max_new_tokens": np.array([1, 2])}, "max_new_tokens"),
        (greedy_search, {"max_new_tokens": 2.5}, "max_new_tokens"),
        (greedy_search, {"max_new_tokens": 3, "min_new_tokens": -2}, "min_new_tokens"),
        (greedy_search, {"max_new_tokens": 3, "no_repeat_ngram_size": -1}, "no_repeat"),
        (sample, {"max_new_tokens": 3, "temperature": 0.0, **SAMPLE_DEFAULTS}, "temperature"),
        (sample, {"max_new_tokens": 3, "temperature": -1.0, **SAMPLE_DEFAULTS}, "temperature"),
        (sample, {"max_new_tokens": 3, "top_k": -1, **SAMPLE_DEFAULTS}, "top_k"),
        (sample, {"max_new_tokens": 3, "top_p": 0.0, **SAMPLE_DEFAULTS}, "top_p"),
        (sample, {"max_new_tokens": 3, "top_p": 1.5, **SAMPLE_DEFAULTS}, "top_p"),
        (beam_search, {"max_new_tokens": 3, "beam_size": 0}, "beam_size"),
        (beam_search, {"max_new_tokens": -3, "beam_size": 2}, "max_new_tokens"),
        (beam_search, {"max_new_tokens": 3, "beam_size": 2, "n_best": 3}, "n_best"),
        (beam_search, {"max_new_tokens": 3, "beam_size": 2, "n_best": 0}, "n_best"),
    ],
)
def test_bad_arguments_raise_value_error(search: Callable, kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        decode(search, GREEDY_TRAP, [BOS], **kwargs)


def test_search_imports_without_torch() -> None:
    code = "import sys; sys.modules['torch'] = None; import seqgen.decoding.search"
    subprocess.run(
        [sys.executable, "-c", code], cwd=Path(__file__).parents[2], check=True, timeout=60
    )


@pytest.mark.parametrize(
    ("search", "kwargs"),
    [
        (greedy_search, {}),
        (greedy_search, {"banned_token_ids": [A, D]}),
        (beam_search, {"beam_size": 2, "n_best": 2}),
        (beam_search, {"beam_size": 3, "n_best": 3, "length_penalty": 0.6}),
        (beam_search, {"beam_size": 2, "banned_token_ids": [B]}),
    ],
)
def test_narrowed_steps_give_the_same_result_as_full_log_probs(
    search: Callable, kwargs: dict
) -> None:
    """Search asks for enough candidates per row that the top ones decide as all would."""
    vocab = 12
    probs_for = random_distributions(vocab=vocab)
    first_tokens = [BOS] * 5
    lengths = {
        "max_new_tokens": np.array([6, 2, 8, 5, 7]),
        "min_new_tokens": np.array([0, 1, 3, 0, 2]),
    }
    full, _ = decode(search, probs_for, first_tokens, eos_id=EOS, **lengths, **kwargs)
    NarrowingStep.asked = []
    narrow_fn = NarrowingStep(probs_for)
    state, first = narrow_fn.start(first_tokens)
    narrow = search(narrow_fn, state, first, eos_id=EOS, **lengths, **kwargs)
    assert NarrowingStep.asked and all(k is not None and k < vocab for k in NarrowingStep.asked)
    assert narrow == full


@pytest.mark.parametrize("search", [greedy_search, beam_search])
def test_banned_tokens_are_never_produced(search: Callable) -> None:
    """Language models ban <pad>, <s> and <unk>: greedy takes B once A is banned."""
    kwargs = {"beam_size": 2} if search is beam_search else {}
    result, _ = decode(
        search, GREEDY_TRAP, [BOS], max_new_tokens=3, eos_id=EOS, banned_token_ids=[A], **kwargs
    )
    best = result[0][0] if search is beam_search else result[0]
    assert_hypothesis(best, (B,), (0.4, 0.9), finished=True)
