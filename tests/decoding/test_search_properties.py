"""Property-based tests (hypothesis) of search's invariants on scripted step functions.

Each example draws a pseudo-random distribution per history (``random_distributions`` of
``test_search.py``, seeded by the example), a batch, beam sizes and length limits, then
checks what must hold whatever the model: hypotheses are best-first, within their length
limits, scored as the sum of the model's log-probs along their path, free of EOS and banned
tokens; beam search with one beam scores at least what greedy does, and with as many beams
as there are paths it finds the best path (checked by enumerating every path). Between the
two, "beam >= greedy" does not hold: hypothesis finds, in a few hundred examples, a model
where two beams prune greedy's path and end lower (beam search is not monotone in its
size), so it is not claimed. Examples are few and tiny: the suite runs on 2 shared cores.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from seqgen.decoding.beam import beam_search
from seqgen.decoding.search import Hypothesis, greedy_search, sample


def _scripted():
    """test_search.py's scripted step functions (tests/ is not a package)."""
    path = Path(__file__).with_name("test_search.py")
    spec = importlib.util.spec_from_file_location("scripted_search_tests", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


scripted = _scripted()
BOS, EOS, VOCAB = scripted.BOS, scripted.EOS, scripted.VOCAB
FAST = settings(max_examples=40, deadline=None)


@st.composite
def problems(draw: st.DrawFn, *, max_length: int = 5) -> dict:
    """A scripted model and the arguments every search shares."""
    batch = draw(st.integers(1, 3))
    max_new = draw(st.lists(st.integers(0, max_length), min_size=batch, max_size=batch))
    min_new = [draw(st.integers(0, limit)) for limit in max_new]
    return {
        "probs_for": scripted.random_distributions(sharpness=draw(st.sampled_from([0.5, 2.0]))),
        "seed": draw(st.integers(0, 2**16)),
        "first_tokens": draw(st.lists(st.integers(2, VOCAB - 1), min_size=batch, max_size=batch)),
        "max_new_tokens": np.asarray(max_new),
        "min_new_tokens": np.asarray(min_new),
        "banned_token_ids": draw(st.sampled_from([(), (BOS,), (BOS, 4)])),
    }


def run(search, problem: dict, **options):
    """``search`` on a fresh scripted step of ``problem``."""
    probs_for = problem["probs_for"]
    salt = problem["seed"]
    # Another model per seed: the history is salted before it picks the distribution.
    step_fn = scripted.ScriptedStep(lambda prefix: probs_for((salt, *prefix)))
    state, first = step_fn.start(problem["first_tokens"])
    lengths = {k: problem[k] for k in ("max_new_tokens", "min_new_tokens", "banned_token_ids")}
    return search(step_fn, state, first, eos_id=EOS, **lengths, **options), step_fn


def path_score(step_fn, first: int, hypothesis: Hypothesis) -> float:
    """The sum of the model's log-probs along the hypothesis's path (EOS included)."""
    path = [*hypothesis.tokens, *([EOS] if hypothesis.finished else [])]
    history, score = [first], 0.0
    for token in path:
        score += float(step_fn.log_probs(tuple(history))[token])
        history.append(token)
    return score


def check_hypothesis(step_fn, problem: dict, row: int, hypothesis: Hypothesis) -> None:
    """What holds of every hypothesis of every search."""
    max_new = int(problem["max_new_tokens"][row])
    min_new = int(problem["min_new_tokens"][row])
    tokens = hypothesis.tokens
    assert len(tokens) + hypothesis.finished <= max_new  # EOS is a step too
    assert EOS not in tokens and not set(tokens) & set(problem["banned_token_ids"])
    assert len(hypothesis.token_log_probs) == len(tokens) + hypothesis.finished
    if hypothesis.finished:
        assert len(tokens) >= min_new  # EOS was banned before min_new_tokens
    else:
        assert len(tokens) == max_new  # only the length limit ends a row without EOS
    assert math.isclose(hypothesis.score, sum(hypothesis.token_log_probs), abs_tol=1e-4)
    expected = path_score(step_fn, problem["first_tokens"][row], hypothesis)
    assert math.isclose(hypothesis.score, expected, abs_tol=1e-4)


@FAST
@given(problem=problems(), beam_size=st.integers(1, 4), alpha=st.sampled_from([0.0, 0.6, 1.0]))
def test_beam_n_best_is_sorted_scored_and_within_its_limits(
    problem: dict, beam_size: int, alpha: float
) -> None:
    n_best = beam_size
    results, step_fn = run(
        beam_search, problem, beam_size=beam_size, n_best=n_best, length_penalty=alpha
    )
    assert len(results) == len(problem["first_tokens"])
    for row, hypotheses in enumerate(results):
        assert 1 <= len(hypotheses) <= n_best
        normalized = [h.normalized_score for h in hypotheses]
        assert normalized == sorted(normalized, reverse=True)
        assert len({h.tokens for h in hypotheses}) == len(hypotheses)  # no path twice
        for hypothesis in hypotheses:
            check_hypothesis(step_fn, problem, row, hypothesis)


@FAST
@given(problem=problems())
def test_greedy_and_sampling_hypotheses_hold_the_invariants(problem: dict) -> None:
    greedy, step_fn = run(greedy_search, problem)
    rng = np.random.default_rng(problem["seed"])
    sampled, sample_step = run(sample, problem, rng=rng, temperature=0.7, top_p=0.9)
    for row, hypothesis in enumerate(greedy):
        check_hypothesis(step_fn, problem, row, hypothesis)
        assert hypothesis.normalized_score == hypothesis.score
    for row, hypothesis in enumerate(sampled):
        check_hypothesis(sample_step, problem, row, hypothesis)


@FAST
@given(problem=problems())
def test_one_beam_scores_at_least_what_greedy_does(problem: dict) -> None:
    """Without a length penalty: the single beam follows greedy's path and also keeps the
    EOS endings it passes, so its best is never worse."""
    greedy, _ = run(greedy_search, problem)
    beam, _ = run(beam_search, problem, beam_size=1, length_penalty=0.0)
    for greedy_best, (beam_best,) in zip(greedy, beam, strict=True):
        assert beam_best.score >= greedy_best.score - 1e-5


@settings(max_examples=25, deadline=None)
@given(problem=problems(max_length=3))
def test_enough_beams_find_the_best_path(problem: dict) -> None:
    """With a beam per path (no pruning), beam search's best is the best of every path
    within the limits, which greedy's score never exceeds (no length penalty)."""
    beam_size = VOCAB ** int(problem["max_new_tokens"].max(initial=0))
    beam, step_fn = run(beam_search, problem, beam_size=max(beam_size, 1), length_penalty=0.0)
    greedy, _ = run(greedy_search, problem)
    for row, (best,) in enumerate(beam):
        optimum = best_path_score(step_fn, problem, row)
        assert math.isclose(best.score, optimum, abs_tol=1e-4)
        assert greedy[row].score <= best.score + 1e-5


def best_path_score(step_fn, problem: dict, row: int) -> float:
    """The best score of any path the row may produce, by enumerating them all: EOS after
    ``min_new_tokens`` to ``max_new_tokens - 1`` tokens (EOS is a step too), or exactly
    ``max_new_tokens`` tokens without EOS."""
    first = int(problem["first_tokens"][row])
    max_new = int(problem["max_new_tokens"][row])
    min_new = int(problem["min_new_tokens"][row])
    allowed = [t for t in range(VOCAB) if t != EOS and t not in problem["banned_token_ids"]]
    paths = [(length, True) for length in range(min_new, max_new)] + [(max_new, False)]
    return max(
        path_score(step_fn, first, Hypothesis(tokens, 0.0, (), finished, 0.0))
        for length, finished in paths
        for tokens in itertools.product(allowed, repeat=length)
    )
