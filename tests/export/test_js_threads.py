"""The JavaScript runtime's translation threads (export/js/src/node.js, TranslationThreads):
kept across calls, the same translations as one thread and as Python, and a worker that
cannot start fails the call with its error instead of hanging it."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from seqgen.bundles.reader import load_bundle

# Two calls on the same threads (the calling one and two workers), then the calling thread
# alone; batches of 50, so that every thread decodes some.
REUSED = """
import fs from 'node:fs';
import { openBundle, TranslationThreads } from '%(node)s';
const [folder, file] = process.argv.slice(2);
const sentences = fs.readFileSync(file, 'utf8').split('\\n').filter((line) => line.length > 0);
const translator = await openBundle(folder, { task: 'translation' });
const threads = TranslationThreads.start(folder, translator, 3);
const options = { beamSize: 5, batchSize: 50 };
const first = await threads.translateNBest(sentences, options);
await threads.ready;
const second = await threads.translateNBest(sentences, options);
await threads.close();
const alone = await translator.translateNBest(sentences, options);
const text = (found) => found.map((best) => best[0].text);
const found = { first: text(first), second: text(second), alone: text(alone) };
console.log(JSON.stringify({ workers: threads.workers, ...found }));
"""

# The bundle removed after the calling thread opened it: the workers cannot open it.
FAILING = """
import fs from 'node:fs';
import { openBundle, TranslationThreads } from '%(node)s';
const [folder] = process.argv.slice(2);
const translator = await openBundle(folder, { task: 'translation' });
fs.rmSync(folder, { recursive: true });
const threads = TranslationThreads.start(folder, translator, 2);
await threads.ready.catch(() => {});
try {
  await threads.translateNBest(Array(120).fill('Ein Hund.'), { beamSize: 1, batchSize: 10 });
  console.log('no error');
} catch (error) {
  console.log(`error: ${error.message}`);
}
await threads.close();
try {
  TranslationThreads.start(folder, translator, 0);
} catch (error) {
  console.log(`error: ${error.message}`);
}
"""


def run_script(
    package: Path, script: str, folder: Path, *arguments: str
) -> subprocess.CompletedProcess[str]:
    """``script`` as an ES module in Node.js (written in ``folder``), ``%(node)s`` the
    runtime's node.js."""
    module = folder / "script.mjs"
    module.write_text(script % {"node": (package / "src" / "node.js").as_uri()}, encoding="utf-8")
    command = ["node", str(module), *arguments]
    return subprocess.run(command, capture_output=True, text=True, encoding="utf-8", timeout=300)


def test_threads_are_kept_across_calls_and_translate_as_one_thread(
    node_package: Path, bundled: Callable[[str], Path], data_dir: str, tmp_path: Path
) -> None:
    bundle = bundled("multi30k-de-en")
    source = Path(data_dir) / "multi30k" / "test_2016_flickr.de.gz"
    sentences = gzip.decompress(source.read_bytes()).decode("utf-8").splitlines()[:250]
    file = tmp_path / "test.de"
    file.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    result = run_script(node_package, REUSED, tmp_path, str(bundle), str(file))
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["workers"] == 3
    expected = load_bundle(bundle, device="cpu").translate(sentences, beam_size=5)
    assert found["first"] == found["second"] == found["alone"] == expected


def test_a_worker_that_cannot_start_fails_the_call(
    node_package: Path, bundled: Callable[[str], Path], tmp_path: Path
) -> None:
    folder = tmp_path / "bundle"
    shutil.copytree(bundled("multi30k-de-en"), folder)
    result = run_script(node_package, FAILING, tmp_path, str(folder))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"error: {folder} is not a seqgen bundle (no such folder)", lines
    assert lines[1] == "error: workers 0; it must be a whole number >= 1", lines
