"""Decoding options resolved once: the caller's argument > the model's stored defaults > the
library's defaults, with None meaning "not given"."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from seqgen.decoding.options import check_each, resolve_options
from seqgen.errors import SeqgenError


@dataclass
class Options:
    beam_size: int = 5
    length_penalty: float = 1.0
    n_best: int = 1

    def validate(self) -> None:
        if self.beam_size < 1:
            raise SeqgenError(f"beam_size = {self.beam_size}; it must be at least 1")
        if self.n_best > self.beam_size:
            raise SeqgenError(f"n_best = {self.n_best} is more than the beam ({self.beam_size})")


def test_the_caller_wins_over_the_stored_defaults_which_win_over_the_library() -> None:
    assert resolve_options(Options, {}, {}) == Options()
    assert resolve_options(Options, {"beam_size": 3}, {}) == Options(beam_size=3)
    resolved = resolve_options(Options, {"beam_size": 3, "length_penalty": 0.5}, {"beam_size": 7})
    assert resolved == Options(beam_size=7, length_penalty=0.5)


def test_none_is_not_given() -> None:
    assert resolve_options(Options, {"beam_size": 3}, {"beam_size": None}).beam_size == 3
    assert resolve_options(Options, {}, {"beam_size": None}).beam_size == 5


def test_an_unknown_option_is_refused_and_unknown_stored_keys_are_ignored() -> None:
    with pytest.raises(SeqgenError, match="unknown decoding option 'beam'.*beam_size"):
        resolve_options(Options, {}, {"beam": 2})
    # A newer seqgen may have stored more.
    assert resolve_options(Options, {"future_option": 1}, {}) == Options()


def test_the_resolved_options_are_validated_together() -> None:
    with pytest.raises(SeqgenError, match="beam_size = 0"):
        resolve_options(Options, {}, {"beam_size": 0})
    # The model's own beam is 2, so three of its best cannot be asked for.
    with pytest.raises(SeqgenError, match=r"n_best = 3 .*\(2\)"):
        resolve_options(Options, {"beam_size": 2}, {"n_best": 3})


def test_check_each_judges_each_given_option_alone_against_the_library() -> None:
    check_each(Options, {"n_best": 4, "beam_size": None})  # fine beside the library's beam 5
    with pytest.raises(SeqgenError, match="beam_size = 0"):
        check_each(Options, {"beam_size": 0})
