"""sacreBLEU wrappers: scores, signatures and alignment errors."""

from __future__ import annotations

import pytest

from seqgen.errors import DataError
from seqgen.tasks.translation.bleu import corpus_bleu, corpus_chrf


def test_identical_corpus_scores_100_with_signature() -> None:
    lines = ["A man rides a bicycle.", "Two dogs play in the snow."]
    bleu = corpus_bleu(lines, lines)
    assert bleu.score == pytest.approx(100.0)
    assert "tok:13a" in bleu.signature and "case:mixed" in bleu.signature
    assert str(bleu).startswith("BLEU = 100.00")
    assert corpus_chrf(lines, lines).score == pytest.approx(100.0)


def test_partial_match_is_between_0_and_100() -> None:
    bleu = corpus_bleu(["A man rides a red bicycle ."], ["A man rides a bicycle."])
    assert 0 < bleu.score < 100


def test_misaligned_inputs_name_both_counts() -> None:
    with pytest.raises(DataError, match="1 hypotheses but 2 references"):
        corpus_bleu(["a"], ["a", "b"])
    with pytest.raises(DataError, match="no references"):
        corpus_chrf([], [])
