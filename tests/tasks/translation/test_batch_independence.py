"""A sentence's translation does not depend on its batch (issue 23): each row scores only its
own sentence's shortlist (``output_columns`` and their ``output_mask``), with PyTorch, float32
and int8 bundles; the shortlist is kept once per sentence, like the source side, and gathered
when the sentences change."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from seqgen.bundles.export import export_bundle
from seqgen.bundles.reader import load_bundle
from seqgen.checkpoints import bundled_model_path
from seqgen.decoding.beam import beam_search
from seqgen.decoding.search import greedy_search
from seqgen.loading import load
from seqgen.tasks.translation.config import EncoderDecoderConfig
from seqgen.tasks.translation.model import EncoderDecoder
from seqgen.tasks.translation.pipeline import Translator
from seqgen.tasks.translation.shortlist import (
    batch_shortlist,
    column_token_ids,
    shortlist_columns,
    shortlist_ids,
)
from seqgen.tasks.translation.source_rows import (
    OUTPUT_COLUMNS,
    OUTPUT_IDS,
    OUTPUT_MASK,
    encoder_inputs,
)
from seqgen.tasks.translation.torch_step import TranslatorStep

onnx = pytest.importorskip("onnx", reason="exporting needs the export extra")

EOS = 3
# The first lines of Multi30k's test_2016_flickr: before the mask, line 1's beam-5 translation
# ended "...on a styar." alone and "...on a steer." beside line 2.
SENTENCES = [
    "Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt.",
    "Ein Boston Terrier läuft über saftig-grünes Gras vor einem weißen Zaun.",
    "Ein Mädchen in einem Karateanzug bricht ein Brett mit einem Tritt.",
    "Fünf Leute in Winterjacken und mit Helmen stehen im Schnee mit Schneemobilen im Hintergrund.",
    "Leute Reparieren das Dach eines Hauses.",
    "Eine Gruppe von Menschen steht vor einem Iglu.",
]


def test_each_sentences_columns_are_exactly_its_own_shortlist() -> None:
    table = np.full((9, 2), EOS, dtype=np.int64)
    table[5], table[6], table[7] = [40, 41], [42, 40], [43, 44]
    table[0] = [50, 51]  # a PAD row that is not just EOS: padding must not be read
    frequent = np.array([30, 31])
    source_ids, lengths = encoder_inputs([[5, 6], [7], [6]])  # EOS appended, PAD after
    output_ids, columns, mask = batch_shortlist(table, frequent, source_ids, lengths)
    # Sentence 0 holds 4 special ids, 2 frequent and 40, 41, 42: 9 columns, the others 8.
    assert columns.shape == mask.shape == (3, 9)
    assert columns.dtype == np.int64 and mask.dtype == np.float32
    assert (mask == 0).sum(axis=1).tolist() == [9, 8, 8]
    assert np.isneginf(mask[1:, 8]).all() and (columns[1:, 8] == 0).all()  # padding
    ids = column_token_ids(output_ids, columns, mask)
    for row, source in enumerate([[5, 6, EOS], [7, EOS], [6, EOS]]):
        alone = shortlist_ids(table, frequent, np.array([source]))
        assert ids[row][mask[row] == 0].tolist() == alone.tolist()  # ascending, as alone
        assert (ids[row][mask[row] != 0] == -1).all()
    assert 50 not in output_ids  # the union of the rows', padding not read
    wider = np.arange(60, dtype=np.int64)  # a superset of ids works the same
    again, again_mask = shortlist_columns(table, frequent, source_ids, lengths, wider)
    np.testing.assert_array_equal(column_token_ids(wider, again, again_mask), ids)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The bundled translator's checkpoint (``torch``) and its float32 and int8 bundles."""
    folder = tmp_path_factory.mktemp("multi30k")
    checkpoint = bundled_model_path("translation")
    found = {"torch": checkpoint}
    for name, int8 in (("onnx", False), ("int8", True)):
        found[name] = export_bundle(checkpoint, folder / name, int8=int8)
    return found


@pytest.fixture(scope="module")
def backends(bundles: dict[str, Path]) -> dict[str, Translator]:
    """The bundled translator on PyTorch, the float32 bundle and the int8 bundle (CPU)."""
    found = {"torch": load(bundles["torch"], kind="translation", device="cpu")}
    for name in ("onnx", "int8"):
        found[name] = load_bundle(bundles[name], device="cpu", threads=1)
    return found


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "onnx", "int8"])
@pytest.mark.parametrize("beam_size", [1, 5])
def test_a_sentence_translates_the_same_alone_beside_others_and_in_a_large_batch(
    backends: dict[str, Translator], backend: str, beam_size: int
) -> None:
    translator = backends[backend]
    alone = [translator.translate([s], beam_size=beam_size)[0] for s in SENTENCES]
    pairs = translator.translate(SENTENCES, beam_size=beam_size, batch_size=2)
    many = SENTENCES * 6  # one batch of 36 rows (180 with beam 5)
    together = translator.translate(many, beam_size=beam_size, batch_size=len(many))
    assert pairs == alone
    assert together == alone * 6


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnx", "int8"])
def test_any_number_of_workers_translates_the_same(bundles: dict[str, Path], backend: str) -> None:
    """Two workers (threads), each searching its own batches, as one."""
    one = load_bundle(bundles[backend], device="cpu", threads=1)
    two = load_bundle(bundles[backend], device="cpu", threads=2)
    assert two.step_function.workers == 2
    for beam_size in (1, 5):
        want = one.translate(SENTENCES, beam_size=beam_size, batch_size=len(SENTENCES))
        assert two.translate(SENTENCES, beam_size=beam_size, batch_size=1) == want
        assert two.translate(SENTENCES, beam_size=beam_size, batch_size=3) == want


@pytest.mark.slow
@pytest.mark.parametrize("io_binding", [False, True])
def test_select_gathers_the_shortlist_with_the_rows(
    bundles: dict[str, Path], backends: dict[str, Translator], io_binding: bool
) -> None:
    bundle = bundles["onnx"]
    steps = {
        "torch": backends["torch"].step_function,
        "onnx": load_bundle(bundle, device="cpu", threads=1, io_binding=io_binding).step_function,
    }
    sources = [backends["torch"].source_tokenizer.encode(s) for s in SENTENCES[:3]]
    rows = np.array([2, 0, 0, 1])
    for name, step_function in steps.items():
        state, _ = step_function.start(sources)
        assert host(state[OUTPUT_IDS]).ndim == 1
        for entry in (OUTPUT_COLUMNS, OUTPUT_MASK):
            shortlist = host(state[entry])
            assert shortlist.shape[0] == 3
            assert not np.array_equal(shortlist[0], shortlist[1])  # other shortlists
            # Uneven groups: one sentence per row.
            selected = step_function.select(state, rows)
            np.testing.assert_array_equal(host(selected[entry]), shortlist[rows], err_msg=name)
            again = step_function.select(selected, np.array([3, 0]))  # after a reorder, again
            np.testing.assert_array_equal(host(again[entry]), shortlist[[1, 2]], err_msg=name)
            # A beam's layout: once per sentence, and gathered again when a sentence leaves.
            beams = step_function.select(state, np.array([2, 2, 0, 0]))
            np.testing.assert_array_equal(host(beams[entry]), shortlist[[2, 0]], err_msg=name)
            left = step_function.select(beams, np.array([3, 2]))
            np.testing.assert_array_equal(host(left[entry]), shortlist[[0]], err_msg=name)


def host(value: object) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.cpu().numpy()
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def tiny_shortlisted_model() -> EncoderDecoder:
    """A small random translator whose shortlist leaves out most of its 60 target tokens."""
    torch.manual_seed(0)
    config = EncoderDecoderConfig(
        embedding_size=16,
        encoder_hidden_size=12,
        decoder_hidden_size=20,
        shortlist=2,
        shortlist_frequent=16,
    )
    model = EncoderDecoder(config, 20, 60)
    with torch.no_grad():
        model.decoder.output.weight.mul_(8.0)  # decisive scores: no near-ties
    generator = torch.Generator().manual_seed(1)
    table = torch.randint(4, 60, (20, 2), generator=generator)
    model.set_shortlist(table, torch.randperm(56, generator=generator)[:16] + 4)
    return model.eval()


def test_cuda_graph_bookkeeping_keeps_each_row_to_its_shortlist() -> None:
    """On the CPU ``cuda_graphs=True`` runs the graphed step's buffers without capturing: the
    mask is one of its per-sentence inputs, copied in when the sentences change. Greedy and
    beam find for each sentence what it finds alone."""
    model = tiny_shortlisted_model()
    plain, graphed = TranslatorStep(model), TranslatorStep(model, cuda_graphs=True)
    sources = [[4, 5, 6, 7], [8, 9], [10, 4, 5], [6]]
    max_new = np.array([6, 3, 5, 4])

    def best(step_function: TranslatorStep, rows: list[list[int]], beam: int) -> list[list[int]]:
        state, first = step_function.start(rows)
        limit = max_new[[sources.index(r) for r in rows]]
        if beam == 1:
            return [
                h.tokens for h in greedy_search(step_function, state, first, max_new_tokens=limit)
            ]
        found = beam_search(step_function, state, first, max_new_tokens=limit, beam_size=beam)
        return [list(hypotheses[0].tokens) for hypotheses in found]

    for beam in (1, 3):
        together = best(plain, sources, beam)
        assert best(graphed, sources, beam) == together
        assert [best(plain, [source], beam)[0] for source in sources] == together
        assert len({tuple(tokens) for tokens in together}) > 1
