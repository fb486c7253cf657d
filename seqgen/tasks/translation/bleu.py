"""BLEU and chrF through sacreBLEU, always reported with their signatures.

sacreBLEU's defaults (detokenized, cased, 13a tokenizer) on raw references make scores
comparable with published figures (Post, 2018).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sacrebleu.metrics import BLEU, CHRF

from seqgen.errors import DataError


@dataclass(frozen=True)
class CorpusScore:
    name: str  # "BLEU" or "chrF2"
    score: float
    signature: str
    detail: str  # sacreBLEU's one-line summary (n-gram precisions, brevity penalty, ...)

    def __str__(self) -> str:
        return f"{self.detail} | {self.signature}"


def _check(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if len(hypotheses) != len(references):
        raise DataError(
            f"{len(hypotheses)} hypotheses but {len(references)} references; "
            "they must be aligned line by line"
        )
    if not references:
        raise DataError("nothing to score: no references")


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> CorpusScore:
    """Corpus BLEU of detokenized hypotheses against one reference each."""
    _check(hypotheses, references)
    metric = BLEU()
    result = metric.corpus_score(list(hypotheses), [list(references)])
    return CorpusScore("BLEU", result.score, str(metric.get_signature()), str(result))


def corpus_chrf(hypotheses: Sequence[str], references: Sequence[str]) -> CorpusScore:
    """Corpus chrF2 (Popović, 2015) against one reference each."""
    _check(hypotheses, references)
    metric = CHRF()
    result = metric.corpus_score(list(hypotheses), [list(references)])
    return CorpusScore("chrF2", result.score, str(metric.get_signature()), str(result))
