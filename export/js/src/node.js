// seqgen-runtime on Node.js: bundles from a folder, run by onnxruntime-node on the CPU.

import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import { checkFileName } from './bundle.js';
import { BundleError } from './errors.js';
import { openBundle as openWith } from './index.js';

export * from './index.js';

/** A bundle folder as a file source; every name must be a plain file of that folder. */
export function folderSource(folder) {
  const file = (name) => path.join(folder, checkFileName(name, 'a bundle file'));
  return {
    name: folder,
    readText: (name) => fs.readFile(file(name), 'utf8'),
    readBytes: async (name) => new Uint8Array(await fs.readFile(file(name))),
    pathOf: file, // onnxruntime-node loads a graph with external data from its path
  };
}

/**
 * Open the bundle in `folder` as its task's pipeline.
 * @param {string} folder
 * @param {{task?: string}} [options]
 */
export async function openBundle(folder, options = {}) {
  const stat = await fs.stat(folder).catch(() => null);
  if (!stat) throw new BundleError(`${folder} is not a seqgen bundle (no such folder)`);
  if (!stat.isDirectory()) throw new BundleError(`${folder} is not a seqgen bundle (not a folder)`);
  // One thread per operator: a step's products are too small to split; batches run side by
  // side instead (Translator's `workers`), as seqgen does in Python.
  const sessionOptions = { executionProviders: ['cpu'], intraOpNumThreads: 1, interOpNumThreads: 1 };
  return openWith(ort, folderSource(folder), { ...options, sessionOptions });
}

/** How many batches to decode at once: one per core. */
export function availableCores() {
  return os.availableParallelism?.() ?? os.cpus().length;
}

/**
 * Translate with `workers` threads, each holding its own sessions; the batches are Python's
 * (Translator.batches), so the translations do not depend on the number of workers.
 * @param {string} folder the bundle
 * @param {import('./translator.js').Translator} translator the same bundle, opened here
 */
export async function translateInThreads(folder, translator, sentences, given = {}) {
  const workers = Math.max(1, given.workers ?? availableCores());
  if (workers === 1) return translator.translateNBest(sentences, { ...given, workers: 1 });
  const threads = await Promise.all(
    Array.from({ length: workers }, () => {
      const worker = new Worker(new URL('./translate-worker.js', import.meta.url), { workerData: { folder } });
      return new Promise((ready, failed) => {
        worker.once('message', () => ready(worker));
        worker.once('error', failed);
      });
    }),
  );
  const idle = [...threads];
  const waiting = [];
  let calls = 0;
  const decode = async (texts, options) => {
    const worker = idle.pop() ?? (await new Promise((give) => waiting.push(give)));
    const id = calls++;
    const reply = await new Promise((done) => {
      const listen = (message) => message.id === id && (worker.off('message', listen), done(message));
      worker.on('message', listen);
      worker.postMessage({ id, sentences: texts, options });
    });
    (waiting.shift() ?? ((w) => idle.push(w)))(worker);
    if (reply.error) throw new BundleError(reply.error);
    return reply.found;
  };
  try {
    return await translator.translateNBest(sentences, { ...given, workers }, decode);
  } finally {
    await Promise.all(threads.map((worker) => worker.terminate()));
  }
}
