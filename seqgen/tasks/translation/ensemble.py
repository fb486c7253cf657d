"""Ensembles of translators: ``seqgen translate --model A --model B ...`` (no torch here).

An :class:`EnsembleTranslator` decodes with the mean of its members' log-probabilities at
every step (:mod:`seqgen.decoding.ensemble`), greedy or beam, on any mix of PyTorch and ONNX
Runtime members. The members must share the target vocabulary (token ``i`` is one piece for
all of them; refused in one line otherwise); each encodes the source with its own tokenizer
and length limit. Decoding defaults (beam size, length penalty, length limits, batch size)
are the first member's, and so are the source lengths the length limits are computed from.

Lexical shortlists: members whose shortlists are the same (same table, frequent tokens,
source tokenizer and source length limit: members trained by one recipe on one corpus) keep
it, so an ensemble decodes as fast as its members and a model ensembled with itself gives its
own translations. Members whose shortlists differ (or where only some have one) all score
every token, as ``--no-shortlist`` does: averaging each member over its own shortlist would
silently decode over their intersection (a token one member leaves out gets ``-inf``), and
the union needs every member to score tokens outside its own list, which is every token
anyway for the adapters.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seqgen.decoding.contract import State
from seqgen.decoding.ensemble import EnsembleState, EnsembleStep
from seqgen.errors import SeqgenError
from seqgen.tasks.translation.pipeline import Translator, TranslatorStepFunction


class MemberSources(list):
    """One sentence's source ids for the pipeline (the first member's: what batches are
    ordered by and length limits computed from), carrying each member's own ids."""

    def __init__(self, first: list[int], per_member: Sequence[list[int]]) -> None:
        super().__init__(first)
        self.per_member = tuple(per_member)


class EnsembleTranslatorStep(EnsembleStep):
    """The ensemble's step function with the translator adapters' ``start``."""

    def __init__(
        self, members: Sequence[TranslatorStepFunction], *, shared_shortlist: bool
    ) -> None:
        super().__init__(members)
        self.shared_shortlist = shared_shortlist

    def start(
        self, sources: Sequence[Sequence[int]], *, shortlist: bool = True, beam_size: int = 1
    ) -> tuple[EnsembleState, np.ndarray]:
        """Encode ``batch`` sources with every member: a :class:`MemberSources` gives each
        member its own ids, plain ids go to every member. ``shortlist`` holds only where
        the members share one (module docstring); ``beam_size`` goes to each. Returns the
        members' states and ``first_tokens`` ``(batch,)`` (the first member's; every
        member's is BOS)."""
        shortlist = shortlist and self.shared_shortlist
        states: list[State] = []
        first_tokens = None
        for index, member in enumerate(self.members):
            own = [s.per_member[index] if isinstance(s, MemberSources) else s for s in sources]
            state, tokens = member.start(  # type: ignore[attr-defined]
                own, shortlist=shortlist, beam_size=beam_size
            )
            states.append(state)
            first_tokens = tokens if first_tokens is None else first_tokens
        return tuple(states), first_tokens  # type: ignore[return-value]


class EnsembleTranslator(Translator):
    """Several translators decoding as one; the same ``translate`` and ``translate_n_best``
    as a :class:`Translator`, with the first member's tokenizers, recipe and info."""

    def __init__(self, members: Sequence[Translator], names: Sequence[str]) -> None:
        check_target_vocabularies(members, names)
        first = members[0]
        self.members = tuple(members)
        # Members that read the source as the first does: the same ids, computed once.
        self._reads_as_first = [_source_key(member) == _source_key(first) for member in members]
        shared = all(self._reads_as_first) and _same_shortlists(members)
        step_function = EnsembleTranslatorStep(
            [member.step_function for member in members], shared_shortlist=shared
        )
        super().__init__(
            step_function,  # type: ignore[arg-type]
            first.source_tokenizer,
            first.target_tokenizer,
            first.recipe,
            first.info,
        )

    def encode_sources(self, sentences: Sequence[str]) -> list[list[int]]:
        """Per sentence, a :class:`MemberSources` of every member's ids (cut to its limit)."""
        first = self.members[0].encode_sources(sentences)
        per_member = [
            first if same else member.encode_sources(sentences)
            for member, same in zip(self.members, self._reads_as_first, strict=True)
        ]
        return [
            MemberSources(ids, [member_ids[row] for member_ids in per_member])
            for row, ids in enumerate(first)
        ]

    def attention(self, sentence: str, translation: Any = None, **options: Any) -> Any:
        raise SeqgenError(
            "an ensemble has no single attention map; draw one model's "
            "(seqgen translate --model A --attention-plot ...)"
        )


def ensemble(translators: Sequence[Any], names: Sequence[str] | None = None) -> Translator:
    """One translator decoding with ``translators`` together (the task's ``ensemble`` hook):
    the translator itself when there is one (nothing changes), else an
    :class:`EnsembleTranslator`. ``names`` (e.g. the paths) name the models in errors."""
    names = list(names) if names else [f"model {n}" for n in range(1, len(translators) + 1)]
    if len(names) != len(translators) or not translators:
        raise ValueError(f"{len(translators)} translators and {len(names)} names")
    for translator, name in zip(translators, names, strict=True):
        if not isinstance(translator, Translator):
            task = getattr(translator, "task", type(translator).__name__)
            raise SeqgenError(f"{name} is a {task} model; an ensemble is of translators only")
    if len(translators) == 1:
        return translators[0]
    return EnsembleTranslator(translators, names)


def load_ensemble(
    paths: Sequence[str | Path], *, device: str = "auto", backend: str = "auto"
) -> Translator:
    """Load each path as a translator (``seqgen.load``) and ensemble them; no path: the
    bundled translator."""
    from seqgen.loading import load

    if not paths:
        return load(None, kind="translation", device=device, backend=backend)
    loaded = [load(path, kind="translation", device=device, backend=backend) for path in paths]
    return ensemble(loaded, [str(path) for path in paths])


def check_target_vocabularies(members: Sequence[Translator], names: Sequence[str]) -> None:
    """SeqgenError naming the first member whose target tokenizer is not the first one's."""
    expected = members[0].target_tokenizer.to_dict()
    for member, name in zip(members[1:], names[1:], strict=True):
        if member.target_tokenizer.to_dict() != expected:
            raise SeqgenError(
                f"{name} and {names[0]} have different target vocabularies; an ensemble "
                "needs models that share one target tokenizer (trained on the same data "
                f"with the same [tokenizer] settings, or with tokenizer.copy_from = {names[0]})"
            )


def _source_key(member: Translator) -> tuple[dict, int]:
    """What decides a member's source ids: its source tokenizer and length limit."""
    return member.source_tokenizer.to_dict(), member.max_source_length


def _same_shortlists(members: Sequence[Translator]) -> bool:
    """Whether every member has the first one's shortlist, or none has one."""
    first = shortlist_of(members[0].step_function)
    for member in members[1:]:
        other = shortlist_of(member.step_function)
        if (first is None) != (other is None):
            return False
        if first is not None and other is not None:
            if not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True)):
                return False
    return True


def shortlist_of(step_function: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """A translator adapter's shortlist, ``(table (source vocab, K), frequent (N,))`` int64,
    or None: the PyTorch adapter's model buffers, or the ONNX adapter's bundle file."""
    model = getattr(step_function, "model", None)
    if model is not None:
        if not model.has_shortlist:
            return None
        return model.shortlist_table.cpu().numpy(), model.shortlist_frequent.cpu().numpy()
    if not getattr(step_function, "takes_output_ids", False):
        return None
    return step_function.shortlist
