// node --test: the client against a bundle and the greedy text seqgen printed for it.
// Run by tests/test_onnx_export.py, which exports a tiny bundle and passes through
// the environment: SEQGEN_BUNDLE (folder), SEQGEN_PROMPT, SEQGEN_MAX_NEW, SEQGEN_EXPECTED.
'use strict';

const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const test = require('node:test');
const { loadGenerator, readManifest, BundleError } = require('./generate.js');

const bundle = process.env.SEQGEN_BUNDLE;

test('greedy continuation equals seqgen generate --strategy greedy', { skip: !bundle }, async () => {
  const generator = await loadGenerator(bundle);
  const text = await generator.generate(process.env.SEQGEN_PROMPT, Number(process.env.SEQGEN_MAX_NEW));
  assert.strictEqual(text, process.env.SEQGEN_EXPECTED);
});

test('a folder without a manifest is refused in one line', () => {
  const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'not-a-bundle-'));
  assert.throws(() => readManifest(empty), (error) => {
    assert.ok(error instanceof BundleError);
    assert.match(error.message, /manifest\.json cannot be read/);
    return !error.message.includes('\n');
  });
});

test('a newer bundle format asks for an update', { skip: !bundle }, () => {
  const copy = fs.mkdtempSync(path.join(os.tmpdir(), 'newer-'));
  const manifest = JSON.parse(fs.readFileSync(path.join(bundle, 'manifest.json'), 'utf8'));
  manifest.format_version += 1;
  fs.writeFileSync(path.join(copy, 'manifest.json'), JSON.stringify(manifest));
  assert.throws(() => readManifest(copy), /newer than this client reads/);
});
