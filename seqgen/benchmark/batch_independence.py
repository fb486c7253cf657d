"""Does a sentence's translation depend on its batch? And how fast is decoding?

``python -m seqgen.benchmark.batch_independence`` translates test_2016_flickr with the
bundled translator on each backend (PyTorch, a float32 bundle, an int8 bundle), greedy and
beam 5, one sentence at a time, in batches of 16 and in one batch, and prints how many lines
differ from the one-at-a-time translation. ``--speed`` instead times each backend at its
default batch size (median sentences/s over ``--repeats`` runs after a warm-up). Bundles
are exported into ``--work`` on first use. It uses only the public API, so the same file
measures an older checkout too (the speed before and after a change, on one machine).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BACKENDS = ("torch", "onnx", "int8")
ALL = 0  # batch size meaning "the whole test set in one batch"


def open_backend(backend: str, model: str, work: Path) -> Any:
    """The translator of ``model`` on ``backend``: PyTorch on the CPU, or its float32 or
    int8 bundle (exported into ``work`` on first use) on ONNX Runtime on the CPU."""
    import seqgen

    if backend == "torch":
        return seqgen.load(model, kind="translation", device="cpu", backend="torch")
    return seqgen.load(exported_bundle(backend, model, work), kind="translation", device="cpu")


def exported_bundle(backend: str, model: str, work: Path) -> Path:
    """The float32 (``onnx``) or ``int8`` bundle of ``model``'s checkpoint, exported into
    ``work`` on first use."""
    from seqgen.checkpoints import model_path

    folder = work / f"{Path(model).name}-{backend}"
    if not (folder / "manifest.json").is_file():
        from seqgen.bundles.export import export_bundle

        export_bundle(model_path(model), folder, int8=backend == "int8")
    return folder


def differing_lines(
    translator: Any,
    lines: Sequence[str],
    *,
    beam: int,
    batch_sizes: Sequence[int],
    shortlist: bool = True,
) -> dict[int, int]:
    """Lines whose translation in batches of each size differs from the first size's;
    ``ALL`` means one batch of every line. The first size's own entry is 0."""
    outputs = {
        size: translator.translate(
            lines, beam_size=beam, batch_size=size or len(lines), shortlist=shortlist
        )
        for size in batch_sizes
    }
    first = outputs[batch_sizes[0]]
    return {
        size: sum(a != b for a, b in zip(first, found, strict=True))
        for size, found in outputs.items()
    }


def sentences_per_second(
    translator: Any, lines: Sequence[str], *, beam: int, repeats: int
) -> tuple[float, list[str]]:
    """The median rate over ``repeats`` timed runs at the default batch size, after one
    untimed run, and the translations."""
    outputs = translator.translate(lines, beam_size=beam)
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        translator.translate(lines, beam_size=beam)
        rates.append(len(lines) / (time.perf_counter() - started))
    return statistics.median(rates), outputs


def main(argv: Sequence[str] | None = None) -> None:
    """Print one line per backend and beam: lines differing per batch size, or the speed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="multi30k-de-en")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--beams", default="1,5")
    parser.add_argument("--batch-sizes", default="1,16,0", help="0: one batch of every line")
    parser.add_argument("--sentences", type=int, default=0, help="the first N lines (0: all)")
    parser.add_argument("--no-shortlist", action="store_true", help="score every token")
    parser.add_argument("--speed", action="store_true", help="time decoding instead")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/seqgen-batch-independence"))
    args = parser.parse_args(argv)
    from seqgen.data.corpora import load_parallel

    lines, references = load_parallel(
        "multi30k:de-en", "test_2016_flickr", data_dir=os.environ.get("SEQGEN_DATA_DIR")
    )
    if args.sentences:
        lines, references = lines[: args.sentences], references[: args.sentences]
    sizes = [int(size) for size in args.batch_sizes.split(",")]
    for backend in args.backends.split(","):
        translator = open_backend(backend, args.model, args.work)
        for beam in (int(b) for b in args.beams.split(",")):
            label = f"{backend:5} {'greedy' if beam == 1 else f'beam {beam}':7}"
            if args.speed:
                from seqgen.tasks.translation.bleu import corpus_bleu

                rate, outputs = sentences_per_second(
                    translator, lines, beam=beam, repeats=args.repeats
                )
                bleu = corpus_bleu(outputs, references).score
                print(f"{label} {rate:7.1f} sentences/s, BLEU {bleu:.2f}", flush=True)
                continue
            found = differing_lines(
                translator, lines, beam=beam, batch_sizes=sizes, shortlist=not args.no_shortlist
            )
            described = ", ".join(
                f"{'one batch' if size == ALL else f'batches of {size}'}: {count}"
                for size, count in list(found.items())[1:]
            )
            print(f"{label} lines differing from batches of {sizes[0]}: {described}", flush=True)


if __name__ == "__main__":
    main()
