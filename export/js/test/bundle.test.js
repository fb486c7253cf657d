// node --test: what the runtime refuses when it opens a bundle, and the tokenizers' rules.

import assert from 'node:assert';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'node:test';
import { BundleError, checkFileName, openBundle, readManifest, tokenizerReader } from '../src/node.js';
import { FORMAT_VERSION, topCandidates } from '../src/bundle.js';
import { VocabularyTokenizer } from '../src/tokenizers.js';

function memorySource(manifest) {
  return { name: 'memory', readText: async () => JSON.stringify(manifest), readBytes: async () => new Uint8Array() };
}

const MANIFEST = {
  format: 'seqgen-bundle',
  format_version: 1,
  kind: 'classification',
  graphs: { classify: { file: 'classify.onnx' } },
  tokenizer: { file: 'tokenizer.json', kind: 'word' },
};

const oneLine = (pattern) => (error) => error instanceof BundleError && pattern.test(error.message) && !error.message.includes('\n');

test('a file name must be a plain name inside the bundle', async () => {
  for (const name of ['../secret.onnx', '/etc/passwd', 'sub/step.onnx', 'a\\b.onnx', 'C:step.onnx', '..', '', 3]) {
    assert.throws(() => checkFileName(name, 'graphs.step.file'), oneLine(/plain file name/));
    const manifest = { ...MANIFEST, graphs: { classify: { file: name } } };
    await assert.rejects(readManifest(memorySource(manifest)), oneLine(/graphs\.classify\.file/));
  }
  const sentencepiece = { ...MANIFEST, tokenizer: { file: 'tokenizer.json', sentencepiece_model: '../x.model' } };
  await assert.rejects(readManifest(memorySource(sentencepiece)), oneLine(/sentencepiece_model/));
  const shortlist = { ...MANIFEST, shortlist: { file: '/tmp/shortlist.json' } };
  await assert.rejects(readManifest(memorySource(shortlist)), oneLine(/shortlist\.file/));
  const weights = { ...MANIFEST, weights: { file: '../model.safetensors' } }; // a packaged model's
  await assert.rejects(readManifest(memorySource(weights)), oneLine(/weights\.file/));
});

test('newer format, unknown kind, another task: one line each', async () => {
  await assert.rejects(readManifest(memorySource({ ...MANIFEST, format_version: FORMAT_VERSION + 1 })), oneLine(/newer than this runtime reads/));
  await assert.rejects(readManifest(memorySource({ ...MANIFEST, kind: 'speech' })), oneLine(/"speech" bundle/));
  await assert.rejects(readManifest(memorySource(MANIFEST), 'translation'), oneLine(/classification bundle, not a translation one/));
  await assert.rejects(readManifest(memorySource({ ...MANIFEST, matmul: 'int4' })), oneLine(/"int4" matrix products/));
});

test('a translator bundle of format 1 or 2 is refused in one line; other kinds of format 1 load', async () => {
  const translator = { ...MANIFEST, kind: 'translation', graphs: { step: { file: 'step.onnx' } } };
  await assert.rejects(readManifest(memorySource(translator)), oneLine(/format 1, older .* re-export it with this seqgen/));
  const third = { ...translator, format_version: 3 };
  await assert.rejects(readManifest(memorySource(third)), oneLine(/format 3, older .* re-export it with this seqgen/));
  assert.strictEqual((await readManifest(memorySource({ ...translator, format_version: 4 }))).kind, 'translation');
  assert.strictEqual((await readManifest(memorySource({ ...translator, format_version: 5 }))).kind, 'translation');
  assert.strictEqual((await readManifest(memorySource(MANIFEST))).kind, 'classification');
});

test('a step of format 5 takes top_k, capped at min(16, vocab); a format 4 step a fixed K', () => {
  const step = (inputs, logProbs, top) => ({
    graphs: {
      step: {
        inputs: inputs.map((name) => ({ name })),
        outputs: [{ name: 'log_probs', shape: ['rows', logProbs] }, { name: 'top_log_probs', shape: ['rows', top] }],
      },
    },
  });
  assert.deepStrictEqual(topCandidates(step(['tokens', 'top_k'], 40, 'top_k')), { count: 16, fed: true });
  assert.deepStrictEqual(topCandidates(step(['tokens', 'top_k'], 9, 'top_k')), { count: 9, fed: true });
  assert.deepStrictEqual(topCandidates(step(['tokens', 'top_k'], 'sentence_shortlist', 'top_k')), { count: 16, fed: true });
  assert.deepStrictEqual(topCandidates(step(['tokens'], 40, 16)), { count: 16, fed: false });
});

test('a folder without a manifest, or no folder, is not a bundle', async () => {
  const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'not-a-bundle-'));
  try {
    await assert.rejects(openBundle(empty), oneLine(/manifest\.json/));
    await assert.rejects(openBundle(path.join(empty, 'nothing')), oneLine(/no such folder/));
  } finally {
    fs.rmSync(empty, { recursive: true, force: true }); // each run left one behind before
  }
});

test('word tokens split and join as seqgen/text/word.py', () => {
  const tokenizer = new VocabularyTokenizer('word', ['<pad>', '<unk>', '<s>', '</s>', 'don\'t', 'stop', ',', 'café', '(', ')'], false);
  assert.deepStrictEqual(tokenizer.encode("Don't stop, café (x)"), [1, 5, 6, 7, 8, 1, 9]);
  assert.strictEqual(tokenizer.decode([4, 5, 6, 7, 8, 5, 9]), "don't stop, café (stop)");
});

test('a tokenizer file both sides name is read and parsed once; two files, twice', async () => {
  const reads = [];
  const data = JSON.stringify({ kind: 'word', tokens: ['<pad>', '<unk>', '<s>', '</s>', 'dog'], lowercase: false });
  const source = { name: 'memory', readText: async (file) => (reads.push(file), data) };
  const tokenizer = tokenizerReader(source);
  const joint = { file: 'tokenizer.json', kind: 'word' };
  const [sourceSide, targetSide] = await Promise.all([tokenizer(joint), tokenizer({ ...joint })]);
  assert.strictEqual(sourceSide, targetSide);
  assert.deepStrictEqual(sourceSide.encode('dog cat'), [4, 1]);
  assert.deepStrictEqual(reads, ['tokenizer.json']);
  // An older bundle's two copies: each its own file.
  await tokenizer({ file: 'source_tokenizer.json' });
  await tokenizer({ file: 'target_tokenizer.json' });
  assert.deepStrictEqual(reads, ['tokenizer.json', 'source_tokenizer.json', 'target_tokenizer.json']);
});
