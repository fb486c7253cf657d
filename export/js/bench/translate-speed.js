#!/usr/bin/env node
// Sentences per second of a translator bundle on onnxruntime-node, beam 5 and greedy, model
// time only (the bundle is opened, the worker threads started, and each thread warmed up on
// a batch of 50 sentences first).
//
//   node export/js/bench/translate-speed.js BUNDLE SENTENCES_FILE [--workers N]
//
// Python's figure on the same machine: python export/js/bench/translate_speed.py BUNDLE FILE

import fs from 'node:fs';
import { openBundle, TranslationThreads } from '../src/node.js';

const [folder, file, flag, value] = process.argv.slice(2);
const workers = flag === '--workers' ? Number(value) : 1;
if (!folder || !file || !(workers >= 1)) {
  process.stderr.write('usage: node export/js/bench/translate-speed.js BUNDLE SENTENCES_FILE [--workers N]\n');
  process.exit(2);
}
const sentences = fs.readFileSync(file, 'utf8').split('\n').filter((line) => line.length > 0);
const translator = await openBundle(folder, { task: 'translation' });
const threads = await TranslationThreads.start(folder, translator, workers).ready;
await threads.translateNBest(sentences.slice(0, 50 * workers), { beamSize: 5, batchSize: 50 });
for (const beamSize of [5, 1]) {
  const started = process.hrtime.bigint();
  await threads.translateNBest(sentences, { beamSize });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const speed = (sentences.length / seconds).toFixed(1);
  process.stdout.write(`node beam ${beamSize}, ${workers} worker(s): ${seconds.toFixed(2)} s, ${speed} sentences/s\n`);
}
await threads.close();
