"""Parity of exported bundles with PyTorch on real data, on the CPU.

For the bundled translator on Multi30k test_2016_flickr (1000 sentences) and for the bundled
generator on 200 Tiny Shakespeare prompts of 1 to 100 characters: greedy and beam-5 token ids
from ONNX Runtime against PyTorch, at batch sizes 1, 7 and 64, and the largest difference of
per-step log-probabilities along PyTorch's greedy path. The translator is also run on
synthetic sources of 1 to 100 pieces.

    SEQGEN_DATA_DIR=MIRROR python export/parity.py [--translator-bundle DIR]
        [--generator-bundle DIR] [--batch-sizes 1,7,64] [--io-binding] [--json FILE]

Bundles are exported from the bundled checkpoints when not given. Exit code 1 when any
output differs or a log-probability differs by 1e-4 or more.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from seqgen.bundles.export import export_bundle
from seqgen.bundles.reader import load_bundle
from seqgen.checkpoints import bundled_model_path, load_checkpoint_pipeline
from seqgen.data.corpora import load_parallel, load_text
from seqgen.decoding.beam import beam_search
from seqgen.decoding.search import greedy_search
from seqgen.tasks.generation.pipeline import banned_token_ids

TOLERANCE = 1e-4
FORCED_STEPS = 30  # per-step log-prob comparison along PyTorch's greedy path


def forced_difference(torch_step, onnx_step, starts, steps: int) -> float:
    """Largest |log-prob difference| over ``steps`` steps fed PyTorch's greedy tokens."""
    torch_state, tokens = torch_step.start(starts)
    onnx_state, _ = onnx_step.start(starts)
    worst = 0.0
    for _ in range(steps):
        expected, torch_state = torch_step.step(tokens, torch_state)
        got, onnx_state = onnx_step.step(tokens, onnx_state)
        # A shortlisted model gives -inf outside the shortlist: both must agree where.
        outside = np.isneginf(expected)
        if not np.array_equal(np.isneginf(got), outside):
            return float("inf")
        worst = max(worst, float(np.abs(got[~outside] - expected[~outside]).max()))
        tokens = expected.argmax(axis=1)
    return worst


def check_translator(
    bundle: Path, batch_sizes: list[int], data_dir: str | None, io_binding: bool
) -> dict:
    reference = load_checkpoint_pipeline(bundled_model_path("translation"), device="cpu")
    runtime = load_bundle(bundle, device="cpu", io_binding=io_binding)
    sentences, _ = load_parallel("multi30k:de-en", "test_2016_flickr", data_dir=data_dir)
    sources = [s for s in reference.encode_sources(sentences) if s]
    rng = np.random.default_rng(0)
    vocab = reference.source_tokenizer.vocab_size
    synthetic = [rng.integers(4, vocab, n).tolist() for n in range(1, 101)]
    report: dict = {"sentences": len(sources), "synthetic_sources": "1..100 pieces"}
    for name, batch_sources in (("test_2016_flickr", sources), ("synthetic", synthetic)):
        order = sorted(range(len(batch_sources)), key=lambda i: -len(batch_sources[i]))
        ordered = [batch_sources[i] for i in order]
        for beam_size in (1, 5):
            # The model's own decoding settings, as `seqgen translate` resolves them.
            settings = reference.options(beam_size=beam_size)
            for batch in batch_sizes:
                differ = 0
                for start in range(0, len(ordered), batch):
                    chunk = ordered[start : start + batch]
                    expected = reference.search(chunk, settings)
                    got = runtime.search(chunk, settings)
                    differ += sum(
                        [h.tokens for h in e] != [h.tokens for h in g]
                        for e, g in zip(expected, got, strict=True)
                    )
                key = f"{name} {'greedy' if beam_size == 1 else 'beam-5'} batch {batch}"
                report[key] = f"{differ} of {len(ordered)} differ"
                print(f"translator {key}: {report[key]}", flush=True)
        worst = max(
            forced_difference(
                reference.step_function, runtime.step_function, ordered[i : i + 64], FORCED_STEPS
            )
            for i in range(0, len(ordered), 64)
        )
        report[f"{name} max log-prob difference"] = worst
        print(f"translator {name}: max |log-prob difference| {worst:.2e}", flush=True)
    return report


def check_generator(
    bundle: Path, batch_sizes: list[int], data_dir: str | None, io_binding: bool
) -> dict:
    reference = load_checkpoint_pipeline(bundled_model_path("generation"), device="cpu")
    runtime = load_bundle(bundle, device="cpu", io_binding=io_binding)
    tokenizer = reference.tokenizer
    text = load_text("tinyshakespeare", data_dir=data_dir)
    validation = text[int(0.9 * len(text)) :]
    rng = np.random.default_rng(0)
    prompts = []
    for length in np.linspace(1, 100, 200).astype(int):
        begin = int(rng.integers(0, len(validation) - length))
        prompts.append([tokenizer.bos_id, *tokenizer.encode(validation[begin : begin + length])])
    common = {"max_new_tokens": 100, "banned_token_ids": banned_token_ids(tokenizer)}
    report: dict = {"prompts": len(prompts), "prompt_characters": "1..100"}
    for label, search in (
        ("greedy", lambda step, state, first: greedy_search(step, state, first, **common)),
        (
            "beam-5",
            lambda step, state, first: beam_search(step, state, first, beam_size=5, **common),
        ),
    ):
        for batch in batch_sizes:
            differ = 0
            for start in range(0, len(prompts), batch):
                chunk = prompts[start : start + batch]
                results = [
                    search(step, *step.start(chunk))
                    for step in (reference.step_function, runtime.step_function)
                ]
                differ += sum(_tokens(e) != _tokens(g) for e, g in zip(*results, strict=True))
            key = f"{label} batch {batch}"
            report[key] = f"{differ} of {len(prompts)} differ"
            print(f"generator {key}: {report[key]}", flush=True)
    worst = max(
        forced_difference(
            reference.step_function, runtime.step_function, prompts[i : i + 64], FORCED_STEPS
        )
        for i in range(0, len(prompts), 64)
    )
    report["max log-prob difference"] = worst
    print(f"generator: max |log-prob difference| {worst:.2e}", flush=True)
    return report


def _tokens(result) -> list:
    """Token ids of a greedy hypothesis or of a beam's hypotheses."""
    return [h.tokens for h in result] if isinstance(result, list) else result.tokens


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--translator-bundle", type=Path)
    parser.add_argument("--generator-bundle", type=Path)
    parser.add_argument("--batch-sizes", default="1,7,64")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument(
        "--io-binding",
        action="store_true",
        help="run the bundles as on CUDA: state in ONNX Runtime memory, top-32 log-probs",
    )
    arguments = parser.parse_args()
    batch_sizes = [int(b) for b in arguments.batch_sizes.split(",")]
    report = {}
    with tempfile.TemporaryDirectory() as scratch:
        for kind, given, check in (
            ("translation", arguments.translator_bundle, check_translator),
            ("generation", arguments.generator_bundle, check_generator),
        ):
            started = time.perf_counter()
            bundle = given or export_bundle(bundled_model_path(kind), Path(scratch) / kind)
            report[kind] = check(bundle, batch_sizes, arguments.data_dir, arguments.io_binding)
            report[kind]["seconds"] = round(time.perf_counter() - started, 1)
    if arguments.json:
        arguments.json.write_text(json.dumps(report, indent=2))
    failed = [
        (kind, key)
        for kind, entries in report.items()
        for key, value in entries.items()
        if (isinstance(value, str) and value.endswith("differ") and not value.startswith("0 "))
        or (isinstance(value, float) and "difference" in key and value >= TOLERANCE)
    ]
    print("parity holds" if not failed else f"parity fails: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
