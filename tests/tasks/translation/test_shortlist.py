"""Lexical shortlists: building the table, the batch union, each sentence's columns of it, and
decoding with them (PyTorch).

The ONNX side (a shortlisted step graph, parity with PyTorch) is in test_onnx_translator.py;
training a shortlist from the training pairs is in test_translation.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seqgen.decoding.contract import ColumnLogProbs
from seqgen.errors import ConfigError
from seqgen.recipes import recipe_from_dict
from seqgen.tasks.translation.model import EncoderDecoder, sentence_logits, sentence_token_ids
from seqgen.tasks.translation.pipeline import TranslationOptions, Translator
from seqgen.tasks.translation.shortlist import (
    batch_shortlist,
    build_shortlist,
    column_token_ids,
    shortlist_ids,
)
from seqgen.tasks.translation.source_rows import encoder_inputs
from seqgen.tasks.translation.torch_step import TranslatorStep
from seqgen.text import TokenizerConfig, train_tokenizer

EOS = 3


def test_each_source_token_keeps_the_targets_it_co_occurs_with_best_first() -> None:
    # Source 10 always comes with target 20, source 11 with 21; target 5 is everywhere.
    sources = [[10], [10, 11], [11], [10], [12]]
    targets = [[20, 5], [20, 21, 5], [21, 5], [20, 5], [5]]
    table, frequent = build_shortlist(
        sources, targets, source_vocab_size=14, target_vocab_size=24, per_source=2, frequent=2
    )
    assert table.shape == (14, 2) and table.dtype == np.int64
    assert table[10, 0] == 20 and table[11, 0] == 21  # a translation beats an everywhere token
    assert table[12].tolist() == [5, EOS]  # one co-occurring target, then EOS padding
    assert table[13].tolist() == [EOS, EOS]  # never seen
    assert frequent.tolist() == [5, 20]  # 5 in every pair; 20 and 21 tie: the lower id first
    again = build_shortlist(
        sources, targets, source_vocab_size=14, target_vocab_size=24, per_source=2, frequent=2
    )
    assert all(np.array_equal(a, b) for a, b in zip((table, frequent), again, strict=True))


def test_the_batch_union_holds_the_specials_the_frequent_and_every_sources_row() -> None:
    table = np.full((8, 2), EOS, dtype=np.int64)
    table[5], table[6] = [40, 41], [42, 40]
    ids = shortlist_ids(table, np.array([30, 31]), np.array([[5, 6, 0], [6, 0, 0]]))
    assert ids.tolist() == [0, 1, 2, 3, 30, 31, 40, 41, 42]  # sorted, each once


def test_a_shortlist_needs_enough_frequent_tokens_for_the_top_candidates() -> None:
    recipe = {"task": "translation", "model": {"shortlist": 5, "shortlist_frequent": 10}}
    with pytest.raises(ConfigError, match="model.shortlist_frequent = 10 is too small"):
        recipe_from_dict(recipe).validate()
    with pytest.raises(ConfigError, match="model.shortlist = -1"):
        recipe_from_dict({"task": "translation", "model": {"shortlist": -1}}).validate()


SOURCE_TEXT = "ein mann fährt fahrrad. zwei hunde spielen im schnee.\n"
TARGET_TEXT = (  # a target vocabulary well above the 32 frequent tokens the shortlist keeps
    "a man rides a bike. two dogs play in the snow.\nABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789\n"
)


def tiny_translator(per_source: int) -> Translator:
    torch.manual_seed(0)
    recipe = recipe_from_dict(
        {
            "task": "translation",
            "tokenizer": {"kind": "char"},
            "model": {
                "embedding_size": 16,
                "encoder_hidden_size": 12,
                "decoder_hidden_size": 20,
                "shortlist": per_source,
                "shortlist_frequent": 32,
            },
        }
    )
    source = train_tokenizer(TokenizerConfig(kind="char"), SOURCE_TEXT)
    target = train_tokenizer(TokenizerConfig(kind="char"), TARGET_TEXT)
    model = EncoderDecoder(recipe.model, source.vocab_size, target.vocab_size)
    with torch.no_grad():
        model.decoder.output.weight.mul_(8.0)  # decisive scores: no near-ties
    generator = torch.Generator().manual_seed(1)
    shape = (source.vocab_size, per_source)
    table = torch.randint(4, target.vocab_size, shape, generator=generator)
    frequent = torch.randperm(target.vocab_size - 4, generator=generator)[:32] + 4
    model.set_shortlist(table, frequent)
    return Translator(TranslatorStep(model.eval()), source, target, recipe, {})


def test_a_shortlisted_step_scores_exactly_the_full_logits_of_its_tokens() -> None:
    model = tiny_translator(per_source=2).step_function.model
    source_ids = torch.tensor([[5, 6, 7, 3], [8, 3, 0, 0]])
    state = model.start(source_ids, torch.tensor([4, 2]))
    output_ids = torch.from_numpy(model.shortlist_ids(source_ids.numpy()))
    expected = shortlist_ids(
        model.shortlist_table.numpy(), model.shortlist_frequent.numpy(), source_ids.numpy()
    )
    assert output_ids.tolist() == expected.tolist()
    assert 36 <= len(output_ids) < model.target_vocab_size
    tokens = torch.tensor([2, 2])
    with torch.inference_mode():
        full, _ = model.step(tokens, state)
        narrow, _ = model.step(tokens, state, model.decoder.output_rows(output_ids))
    torch.testing.assert_close(narrow, full[:, output_ids])


def test_translations_use_only_shortlisted_tokens_and_the_full_vocabulary_on_request() -> None:
    translator = tiny_translator(per_source=1)
    model = translator.step_function.model
    sources = [translator.source_tokenizer.encode(s) for s in ("ein mann", "zwei hunde", "im")]
    for beam_size in (1, 4):
        full = translator.search(sources, _options(beam_size, shortlist=False))
        used_by_full = {token for best in full for token in best[0].tokens}
        # A shortlist without any token the full search chose: the search must do without.
        others = [t for t in range(4, model.target_vocab_size) if t not in used_by_full]
        table = torch.tensor(others[-1:]).expand(model.source_vocab_size, 1)
        model.set_shortlist(table, torch.tensor(others[:32]))
        allowed = set(model.shortlist_ids(_source_ids(translator, sources)).tolist())
        assert not allowed & (used_by_full - {EOS})
        shortlisted = translator.search(sources, _options(beam_size, shortlist=True))
        used = {token for best in shortlisted for token in best[0].tokens}
        assert used <= allowed
        assert used_by_full - {EOS} and not used & used_by_full  # another search, indeed
        again = translator.search(sources, _options(beam_size, shortlist=False))
        assert [b[0].tokens for b in again] == [b[0].tokens for b in full]


def test_a_shortlist_of_every_token_changes_nothing() -> None:
    translator = tiny_translator(per_source=1)
    model = translator.step_function.model
    vocab = model.target_vocab_size
    with torch.no_grad():  # every target token is frequent: log-probs over the same tokens
        model.shortlist_frequent = torch.arange(vocab)
    sentences = ["ein mann", "zwei hunde spielen im schnee."]
    for options in ({"beam_size": 1}, {"beam_size": 4, "n_best": 3}):
        with_list = translator.translate_n_best(sentences, max_length=12, **options)
        without = translator.translate_n_best(sentences, max_length=12, shortlist=False, **options)
        assert [[h.text for h in best] for best in with_list] == [
            [h.text for h in best] for best in without
        ]
        for best, reference in zip(with_list, without, strict=True):
            np.testing.assert_allclose(
                [h.score for h in best], [h.score for h in reference], atol=1e-5
            )


def _options(beam_size: int, *, shortlist: bool) -> TranslationOptions:
    return TranslationOptions(beam_size=beam_size, max_length=12, shortlist=shortlist)


def _source_ids(translator: Translator, sources: list[list[int]]) -> np.ndarray:
    return encoder_inputs(sources)[0]


def test_each_row_scores_its_sentences_columns_as_a_mask_over_the_union_would() -> None:
    """Format 3's step (each row over its sentence's columns, ``sentence_logits``) gives the
    log-probs that masking the batch's union to the sentence's tokens gives, at S columns."""
    model = tiny_translator(per_source=2).step_function.model
    table, frequent = model.shortlist_table.numpy(), model.shortlist_frequent.numpy()
    source_ids, lengths = encoder_inputs([[5, 6, 7], [8], [9, 10]])
    output_ids, columns, mask = batch_shortlist(table, frequent, source_ids, lengths)
    assert columns.shape[1] < len(output_ids) and np.isneginf(mask).any()  # padding
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, len(output_ids), generator=generator)  # two rows per sentence
    compact = torch.log_softmax(
        sentence_logits(logits, torch.from_numpy(columns), torch.from_numpy(mask)), -1
    )
    union_mask = torch.full((3, len(output_ids)), -torch.inf)
    for sentence in range(3):
        union_mask[sentence, columns[sentence][mask[sentence] == 0]] = 0
    masked = torch.log_softmax(logits + union_mask.repeat_interleave(2, 0), -1)
    ids = column_token_ids(output_ids, columns, mask).repeat(2, axis=0)
    dense = ColumnLogProbs(compact.numpy(), ids, model.target_vocab_size).dense()
    want = np.full_like(dense, -np.inf)
    want[:, output_ids] = masked.numpy()
    np.testing.assert_allclose(dense, want, rtol=0, atol=1e-6)
    top_values, top_columns = torch.topk(compact, 5)
    top_ids = sentence_token_ids(
        torch.from_numpy(output_ids), torch.from_numpy(columns), top_columns
    )
    want_values, want_columns = torch.topk(masked, 5)
    assert top_ids.tolist() == output_ids[want_columns.numpy()].tolist()
    torch.testing.assert_close(top_values, want_values)
    taken = ColumnLogProbs(compact.numpy(), ids, model.target_vocab_size).take(np.array([3]))
    np.testing.assert_array_equal(taken.dense(), dense[[3]])
