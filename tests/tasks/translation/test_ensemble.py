"""Ensemble decoding: ``seqgen translate --model A --model B`` averages the models' log-probs.

Three tiny untrained translators (char tokenizers, hidden sizes of 12 to 20) are written once
per module: ``first`` and ``second`` share the target vocabulary but not the source one, and
``other`` has another target vocabulary. Their output layers are scaled up, as in
test_translator_bundle.py, so that near-ties do not turn token comparisons into luck.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result

from seqgen.cli import main
from seqgen.decoding.contract import TopLogProbs
from seqgen.decoding.ensemble import EnsembleStep, average_log_probs, top_log_probs
from seqgen.errors import SeqgenError
from seqgen.loading import load
from seqgen.recipes import recipe_from_dict, recipe_to_dict
from seqgen.tasks.translation.ensemble import (
    EnsembleTranslator,
    MemberSources,
    ensemble,
    shortlist_of,
)
from seqgen.tasks.translation.model import EncoderDecoder
from seqgen.tasks.translation.pipeline import Translator
from seqgen.tasks.translation.source_rows import OUTPUT_IDS
from seqgen.text import TokenizerConfig, train_tokenizer
from seqgen.training.checkpoint import Checkpoint, save_checkpoint

SOURCE_TEXT = "ein mann fährt fahrrad. zwei hunde spielen im schnee.\n"
TARGET_TEXT = "a man rides a bike. two dogs play in the snow.\nABCDEFGHIJKLMNOPQRSTUVWXYZ\n"
SENTENCES = ["ein mann", "", "zwei hunde spielen im schnee.", "fährt", "im schnee"]


def save_translator(
    path: Path, *, seed: int, source_text: str = SOURCE_TEXT, target_text: str = TARGET_TEXT,
    **model: object,
) -> Path:  # fmt: skip
    """A tiny untrained translator checkpoint; ``seed`` picks its weights."""
    torch.manual_seed(seed)
    sizes = {"embedding_size": 16, "encoder_hidden_size": 12, "decoder_hidden_size": 20}
    recipe = recipe_from_dict(
        {
            "task": "translation",
            "tokenizer": {"kind": "char"},
            "model": {**sizes, **model},
            "decoding": {"beam_size": 3, "max_length_offset": 6},
        }
    )
    source = train_tokenizer(TokenizerConfig(kind="char"), source_text)
    target = train_tokenizer(TokenizerConfig(kind="char"), target_text)
    translator = EncoderDecoder(recipe.model, source.vocab_size, target.vocab_size)
    with torch.no_grad():
        translator.decoder.output.weight.mul_(8.0)
        if translator.has_shortlist:  # a shortlist of random tokens, other for each seed
            vocab, shape = target.vocab_size, translator.shortlist_table.shape
            generator = torch.Generator().manual_seed(seed)
            translator.shortlist_table.copy_(torch.randint(4, vocab, shape, generator=generator))
    sides = {"source": source.to_dict(), "target": target.to_dict()}
    save_checkpoint(
        path, Checkpoint("translation", recipe_to_dict(recipe), sides, translator.state_dict())
    )
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ensemble")
    return {
        "first": save_translator(folder / "first.safetensors", seed=0),
        "second": save_translator(
            folder / "second.safetensors", seed=1, source_text=SOURCE_TEXT + "äöüß\n"
        ),
        "other": save_translator(
            folder / "other.safetensors", seed=2, target_text=TARGET_TEXT + "0123456789\n"
        ),
    }


@pytest.fixture(scope="module")
def translators(checkpoints: dict[str, Path]) -> dict[str, Translator]:
    return {name: load(path, device="cpu") for name, path in checkpoints.items()}


def texts(results: list) -> list[list[str]]:
    return [[found.text for found in best] for best in results]


def scores(results: list) -> list[float]:
    return [found.score for best in results for found in best]


@pytest.mark.parametrize("options", [{"beam_size": 1}, {"beam_size": 3, "n_best": 2}])
def test_a_model_ensembled_with_itself_translates_as_the_model(
    translators: dict[str, Translator], options: dict
) -> None:
    single = translators["first"]
    twice = ensemble([single, single])
    assert isinstance(twice, EnsembleTranslator) and ensemble([single]) is single
    want = single.translate_n_best(SENTENCES, **options)
    have = twice.translate_n_best(SENTENCES, **options)
    assert texts(have) == texts(want)
    # The mean of two equal arrays is that array; the scores differ in the last bits only
    # because the single model's search reads each row's top candidates, computed apart.
    np.testing.assert_allclose(scores(have), scores(want), rtol=1e-6)


def test_an_ensemble_step_is_the_mean_of_its_members_steps(
    translators: dict[str, Translator],
) -> None:
    members = [translators["first"], translators["second"]]
    pair = ensemble(members)
    sources = pair.encode_sources(SENTENCES[2:])
    assert isinstance(sources[0], MemberSources)
    # Each member reads the source with its own tokenizer ("ä" is unknown to the first).
    assert sources[1].per_member[0] != sources[1].per_member[1]
    state, tokens = pair.step_function.start(sources)
    member_states = [m.step_function.start(m.encode_sources(SENTENCES[2:]))[0] for m in members]
    rows = np.array([2, 0, 0, 1])  # beams of a sentence, and a dropped sentence
    for _ in range(2):
        log_probs, state = pair.step_function.step(tokens, state)
        each = [
            m.step_function.step(tokens, s) for m, s in zip(members, member_states, strict=True)
        ]
        expected = np.mean([member_log_probs for member_log_probs, _ in each], axis=0)
        assert log_probs.shape == expected.shape == (3, pair.target_tokenizer.vocab_size)
        np.testing.assert_allclose(log_probs, expected, rtol=1e-6)
        assert not np.allclose(each[0][0], each[1][0])  # two models, not one twice
        member_states = [new_state for _, new_state in each]
        tokens = log_probs.argmax(axis=1)
    state = pair.step_function.select(state, rows)
    member_states = [
        m.step_function.select(s, rows) for m, s in zip(members, member_states, strict=True)
    ]
    log_probs, _ = pair.step_function.step(tokens[rows], state)
    each = [
        m.step_function.step(tokens[rows], s)[0]
        for m, s in zip(members, member_states, strict=True)
    ]
    np.testing.assert_allclose(log_probs, np.mean(each, axis=0), rtol=1e-6)


def test_averaging_keeps_minus_infinity_and_refuses_narrowed_or_unequal_members() -> None:
    first = np.array([[np.log(0.5), np.log(0.5), -np.inf]], dtype=np.float32)
    second = np.log(np.array([[0.25, 0.25, 0.5]], dtype=np.float32))
    mean = average_log_probs([first, second])
    np.testing.assert_allclose(mean[0, :2], np.log([0.5, 0.5]) / 2 + np.log([0.25, 0.25]) / 2)
    assert mean.dtype == np.float32 and np.isneginf(mean[0, 2])
    with pytest.raises(ValueError, match="differ in shape"):
        average_log_probs([first, first[:, :2]])
    with pytest.raises(ValueError, match="at least two"):
        EnsembleStep([object()])  # type: ignore[list-item]


@pytest.mark.parametrize("members", [2, 3])
def test_the_mean_is_the_float64_mean_rounded_once(members: int) -> None:
    """Two members are summed in float32 (one rounding, halving is exact), more in float64:
    either way the float64 mean rounded once to float32, bit for bit."""
    generator = np.random.default_rng(members)
    arrays = [
        np.log(generator.dirichlet(np.ones(300), size=40)).astype(np.float32)
        for _ in range(members)
    ]
    arrays[0][:, :7] = -np.inf
    expected = (np.sum(np.stack(arrays).astype(np.float64), axis=0) / members).astype(np.float32)
    np.testing.assert_array_equal(average_log_probs(arrays), expected)


def test_the_narrowed_view_gives_each_rows_best_of_the_mean_best_first() -> None:
    log_probs = np.full((3, 50), -np.inf, dtype=np.float32)
    log_probs[0] = -np.arange(50, dtype=np.float32)[::-1]  # every token finite
    log_probs[1, [7, 30, 3, 41, 12]] = [-2.0, -0.5, -4.0, -1.0, -3.0]  # a shortlist of 5
    log_probs[2, [9, 2]] = [-1.0, -0.25]  # fewer finite than asked for
    top = top_log_probs(log_probs, 4)
    np.testing.assert_array_equal(top.values[0], [0, -1, -2, -3])
    np.testing.assert_array_equal(top.token_ids[0], [49, 48, 47, 46])
    np.testing.assert_array_equal(top.values[1], [-0.5, -1, -2, -3])
    np.testing.assert_array_equal(top.token_ids[1], [30, 41, 7, 12])
    np.testing.assert_array_equal(top.values[2], [-0.25, -1, -np.inf, -np.inf])
    np.testing.assert_array_equal(top.token_ids[2, :2], [2, 9])


def test_members_sharing_a_shortlist_keep_it_and_others_score_every_token(
    tmp_path: Path,
) -> None:
    paths = [save_translator(tmp_path / f"{seed}.safetensors", seed=seed, shortlist=2,
                             shortlist_frequent=16) for seed in (0, 0, 1)]  # fmt: skip
    same, twin, different = (load(path, device="cpu") for path in paths)
    shortlist = shortlist_of(same.step_function)
    assert shortlist is not None and shortlist[0].shape[1] == 2
    sources = same.encode_sources(SENTENCES[2:])
    pair = ensemble([same, twin]).step_function
    kept, tokens = pair.start(sources)
    assert all(OUTPUT_IDS in state for state in kept)
    # The narrowed view: the best of the mean over the shortlisted tokens, as the dense mean.
    dense, _ = pair.step(tokens, kept)
    top, _ = pair.narrowed(5).step(tokens, kept)
    assert isinstance(top, TopLogProbs) and top.values.shape == (3, 5)
    np.testing.assert_array_equal(top.values, -np.sort(-dense, axis=1)[:, :5])
    np.testing.assert_array_equal(np.take_along_axis(dense, top.token_ids, axis=1), top.values)
    dropped, tokens = ensemble([same, different]).step_function.start(sources)
    assert not any(OUTPUT_IDS in state for state in dropped)
    log_probs, _ = ensemble([same, different]).step_function.step(tokens, dropped)
    assert np.isfinite(log_probs).all()  # every token scored
    want = same.translate(SENTENCES, beam_size=3)
    assert ensemble([same, twin]).translate(SENTENCES, beam_size=3) == want


def test_onnx_and_mixed_ensembles_of_the_bundled_translator_translate_as_pytorch() -> None:
    # Exporting two tiny models takes 50 s here: the bundled translator ships as both.
    on_torch = load("multi30k-de-en", device="cpu", backend="torch")
    on_onnx = load("multi30k-de-en", device="cpu")
    sentences = ["Ein Mann fährt Fahrrad.", "", "Zwei Hunde spielen im Schnee."]
    mixed = ensemble([on_torch, on_onnx])
    # The checkpoint's shortlist buffers and the bundle's shortlist file agree, so it is kept.
    assert mixed.step_function.shared_shortlist
    for options in ({"beam_size": 1}, {"beam_size": 5}):
        want = on_torch.translate(sentences, **options)
        assert mixed.translate(sentences, **options) == want
        assert ensemble([on_onnx, on_onnx]).translate(sentences, **options) == want


def invoke(*args: str | Path, input: str | None = None) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args], input=input)


def one_line_error(result: Result) -> str:
    assert result.exit_code != 0 and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("seqgen: error: "), result.stderr
    return lines[0]


def test_translate_with_two_models_prints_the_ensembles_translations(
    checkpoints: dict[str, Path], translators: dict[str, Translator]
) -> None:
    models = ["--model", checkpoints["first"], "--model", checkpoints["second"]]
    result = invoke("translate", *models, "--beam-size", "2", input="\n".join(SENTENCES))
    assert result.exit_code == 0, result.output
    pair = ensemble([translators["first"], translators["second"]])
    assert result.stdout.splitlines() == pair.translate(SENTENCES, beam_size=2)


def test_evaluate_scores_an_ensemble(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "source.de").write_text("ein mann\nim schnee\n", encoding="utf-8")
    (tmp_path / "reference.en").write_text("a man\nin the snow\n", encoding="utf-8")
    files = ["--source", tmp_path / "source.de", "--reference", tmp_path / "reference.en"]
    models = ["--model", checkpoints["first"], "--model", checkpoints["second"]]
    result = invoke("evaluate", *models, *files, "--beam-size", "1")
    assert result.exit_code == 0, result.output
    assert "2 sentences, beam 1" in result.stdout and "BLEU" in result.stdout


def test_models_of_another_target_vocabulary_are_refused_in_one_line(
    checkpoints: dict[str, Path], translators: dict[str, Translator]
) -> None:
    models = ["--model", checkpoints["first"], "--model", checkpoints["other"]]
    for command in ("translate", "evaluate"):
        line = one_line_error(invoke(command, *models, input="ein mann\n"))
        assert "different target vocabularies" in line and str(checkpoints["other"]) in line
        assert str(checkpoints["first"]) in line
    with pytest.raises(SeqgenError, match="model 2 and model 1 have different target"):
        ensemble([translators["first"], translators["other"]])


def test_an_attention_plot_of_an_ensemble_is_refused_in_one_line(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    models = ["--model", checkpoints["first"], "--model", checkpoints["first"]]
    plot = ["--attention-plot", tmp_path / "attention.png"]
    line = one_line_error(invoke("translate", *models, *plot, input="ein mann\n"))
    assert "one model's attention" in line


def test_only_translators_ensemble(checkpoints: dict[str, Path], trained_run: Path) -> None:
    models = ["--model", trained_run, "--model", checkpoints["first"]]
    assert "only translators" in one_line_error(invoke("evaluate", *models))
    with pytest.raises(SeqgenError, match="an ensemble is of translators only"):
        ensemble([load(checkpoints["first"], device="cpu"), load(trained_run, device="cpu")])
