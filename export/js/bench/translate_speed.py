"""Sentences per second of a translator bundle on Python's ONNX path (seqgen's own pipeline),
beam 5 and greedy, model time only: the counterpart of translate-speed.js.

    python export/js/bench/translate_speed.py BUNDLE SENTENCES_FILE [--workers N]
"""

import sys
import time

from seqgen.bundles.reader import load_bundle

USAGE = "usage: python export/js/bench/translate_speed.py BUNDLE SENTENCES_FILE [--workers N]"
arguments = sys.argv[1:]
workers_given = len(arguments) == 4 and arguments[2] == "--workers" and arguments[3].isdigit()
if len(arguments) != 2 and not workers_given:
    sys.exit(USAGE)
folder, file = arguments[:2]
workers = max(1, int(arguments[3])) if workers_given else 1
sentences = [line for line in open(file, encoding="utf-8").read().split("\n") if line]
translator = load_bundle(folder, device="cpu", threads=workers)
translator.translate(sentences[:50], beam_size=5)
for beam_size in (5, 1):
    started = time.perf_counter()
    translator.translate(sentences, beam_size=beam_size)
    seconds = time.perf_counter() - started
    speed = len(sentences) / seconds
    print(f"python beam {beam_size}, {workers} worker(s): {seconds:.2f} s, {speed:.1f} sentences/s")
