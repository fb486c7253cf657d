#!/usr/bin/env node
// Continue a prompt greedily with a seqgen character-level generator bundle, on ONNX Runtime
// for Node.js: no Python, no PyTorch. The bundle contract is ../README.md.
//
//   node generate.js BUNDLE_DIR "ROMEO:" [MAX_NEW_TOKENS]
//
// As a library: const { loadGenerator } = require('./generate.js');
//   const generator = await loadGenerator(dir); await generator.generate('ROMEO:', 100);

'use strict';

const fs = require('fs');
const path = require('path');
const ort = require('onnxruntime-node');

const FORMAT = 'seqgen-bundle';
const FORMAT_VERSION = 1;

class BundleError extends Error {}

function readJson(file) {
  let text;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    throw new BundleError(`${file} cannot be read (${error.code}); is this a seqgen bundle?`);
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new BundleError(`${file} is not valid JSON; re-export the bundle`);
  }
}

/** The manifest, checked: format, version, kind, tokenizer and precision this client runs. */
function readManifest(folder) {
  const manifest = readJson(path.join(folder, 'manifest.json'));
  if (manifest.format !== FORMAT) {
    throw new BundleError(`${folder} is not a seqgen bundle; export one with seqgen export`);
  }
  if (manifest.format_version > FORMAT_VERSION) {
    throw new BundleError(
      `${folder} has bundle format ${manifest.format_version}, newer than this client reads ` +
        `(${FORMAT_VERSION}); update the client`,
    );
  }
  if (manifest.kind !== 'generation' && manifest.kind !== 'language_model') {
    throw new BundleError(`${folder} holds a ${manifest.kind} bundle; this client runs generators`);
  }
  if (manifest.tokenizer.kind !== 'char') {
    throw new BundleError(
      `${folder} has a ${manifest.tokenizer.kind} tokenizer; this client runs character-level ` +
        'generators (export a model trained with tokenizer.kind = "char")',
    );
  }
  if (manifest.precision !== 'float32') {
    throw new BundleError(`${folder} is a ${manifest.precision} bundle; export it without --fp16`);
  }
  // "int8" (seqgen export --int8) runs on onnxruntime-node's CPU build as it is.
  if (manifest.matmul !== undefined && manifest.matmul !== 'int8') {
    throw new BundleError(
      `${folder} asks for ${manifest.matmul} matrix products, which this client does not know; ` +
        'update the client or re-export the bundle',
    );
  }
  return manifest;
}

/** Character tokenizer: id = index in `tokens`; unknown characters are <unk>. */
class CharTokenizer {
  constructor(data, specialIds) {
    this.tokens = data.tokens;
    this.lowercase = Boolean(data.lowercase);
    this.ids = new Map(this.tokens.map((token, id) => [token, id]));
    this.special = new Set([specialIds.pad, specialIds.bos, specialIds.eos]);
    this.unk = specialIds.unk;
  }

  encode(text) {
    // Array.from splits by code point, as Python iterates a str.
    return Array.from(this.lowercase ? text.toLowerCase() : text, (c) =>
      this.ids.has(c) ? this.ids.get(c) : this.unk,
    );
  }

  decode(ids) {
    return ids
      .filter((id) => !this.special.has(id))
      .map((id) => this.tokens[id])
      .join('');
  }
}

class Generator {
  constructor(manifest, tokenizer, prime, step) {
    this.manifest = manifest;
    this.tokenizer = tokenizer;
    this.prime = prime;
    this.step = step;
    this.stateNames = manifest.state.names; // hidden (and cell), each [rows, layers, hidden]
    this.stateShape = manifest.state.shape.slice(1);
    this.banned = manifest.generation.banned_token_ids;
  }

  zeros() {
    const size = this.stateShape.reduce((a, b) => a * b, 1);
    return Object.fromEntries(
      this.stateNames.map((name) => [
        name,
        new ort.Tensor('float32', new Float32Array(size), [1, ...this.stateShape]),
      ]),
    );
  }

  /** The prompt followed by `maxNewTokens` greedily chosen characters. */
  async generate(prompt, maxNewTokens = 100) {
    const ids = [this.manifest.special_ids.bos, ...this.tokenizer.encode(prompt)];
    let state = this.zeros();
    if (ids.length > 1) {
      // Everything but the last prompt token in one call; the last one feeds the first step.
      const head = ids.slice(0, -1);
      const tokenIds = new ort.Tensor('int64', BigInt64Array.from(head, BigInt), [1, head.length]);
      state = this.renamed(await this.prime.run({ token_ids: tokenIds, ...state }));
    }
    let token = ids[ids.length - 1];
    const generated = [];
    for (let i = 0; i < maxNewTokens; i += 1) {
      const tokens = new ort.Tensor('int64', BigInt64Array.from([BigInt(token)]), [1]);
      const outputs = await this.step.run({ tokens, ...state });
      state = this.renamed(outputs);
      token = this.argmax(outputs.log_probs.data);
      generated.push(token);
    }
    // As seqgen does: the prompt as given, then the decoded continuation.
    return prompt + this.tokenizer.decode(generated);
  }

  renamed(outputs) {
    return Object.fromEntries(this.stateNames.map((name) => [name, outputs[`new_${name}`]]));
  }

  argmax(logProbs) {
    let best = -1;
    for (let id = 0; id < logProbs.length; id += 1) {
      if (this.banned.includes(id)) continue; // pad, bos, unk, eos: text has no end token
      if (best < 0 || logProbs[id] > logProbs[best]) best = id;
    }
    return best;
  }
}

async function loadGenerator(folder) {
  const manifest = readManifest(folder);
  const tokenizer = new CharTokenizer(
    readJson(path.join(folder, manifest.tokenizer.file)),
    manifest.special_ids,
  );
  const options = { executionProviders: ['cpu'], intraOpNumThreads: 1 };
  const open = (name) =>
    ort.InferenceSession.create(path.join(folder, manifest.graphs[name].file), options);
  const [prime, step] = await Promise.all([open('prime'), open('step')]);
  return new Generator(manifest, tokenizer, prime, step);
}

async function main(argv) {
  const [folder, prompt = '', maxNew = '100'] = argv;
  const maxNewTokens = Number(maxNew);
  if (!folder || !Number.isInteger(maxNewTokens) || maxNewTokens < 0) {
    throw new BundleError('usage: node generate.js BUNDLE_DIR PROMPT [MAX_NEW_TOKENS >= 0]');
  }
  const generator = await loadGenerator(folder);
  process.stdout.write(`${await generator.generate(prompt, maxNewTokens)}\n`);
}

if (require.main === module) {
  main(process.argv.slice(2)).catch((error) => {
    // One line, no stack trace, for bad input; anything else is a bug worth its trace.
    const message = error instanceof BundleError ? error.message : error.stack;
    process.stderr.write(`seqgen-generate: error: ${message}\n`);
    process.exitCode = 1;
  });
}

module.exports = { loadGenerator, readManifest, CharTokenizer, BundleError };
