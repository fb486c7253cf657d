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
 * Translate with `workers` threads for one call: the calling thread and `workers - 1` worker
 * threads (`TranslationThreads`), closed at the end; no worker for a single batch. The batches
 * are Python's (Translator.batches), so the translations do not depend on the number of workers.
 * @param {string} folder the bundle
 * @param {import('./translator.js').Translator} translator the same bundle, opened here
 */
export async function translateInThreads(folder, translator, sentences, given = {}) {
  const workers = Math.max(1, given.workers ?? availableCores());
  // One batch at most (a line or a few typed at the command line): no thread to start.
  const oneBatch = sentences.length <= translator.options(given).batchSize;
  if (workers === 1 || oneBatch) return translator.translateNBest(sentences, { ...given, workers: 1 });
  const threads = TranslationThreads.start(folder, translator, workers);
  try {
    return await threads.translateNBest(sentences, given);
  } finally {
    await threads.close();
  }
}

/**
 * Translation batches decoded side by side, one per thread: the calling thread, with the
 * translator opened there, and `workers - 1` worker threads, each opening the bundle for its
 * own sessions (onnxruntime-node runs a session on the thread that calls it). Kept for every
 * call until `close()`, so that an application pays the threads' start (0.2-0.3 s here)
 * once; batches start on the calling thread while the workers open the bundle, and each
 * worker takes batches from when it is ready.
 */
export class TranslationThreads {
  /** Start the workers; `ready` resolves when every one of them has opened the bundle. */
  static start(folder, translator, workers = availableCores()) {
    if (!Number.isInteger(workers) || workers < 1) {
      throw new BundleError(`workers ${workers}; it must be a whole number >= 1`);
    }
    return new TranslationThreads(folder, translator, workers);
  }

  constructor(folder, translator, workers) {
    this.translator = translator;
    this.workers = workers;
    this.idle = [null]; // null: the calling thread
    this.waiting = [];
    this.calls = 0;
    this.failed = null;
    this.threads = Array.from({ length: workers - 1 }, () => {
      const worker = new Worker(new URL('./translate-worker.js', import.meta.url), { workerData: { folder } });
      worker.once('error', (error) => (this.failed ??= error));
      return worker;
    });
    const joined = this.threads.map(
      (worker) =>
        new Promise((ready, failed) => {
          worker.once('message', () => ready(this.release(worker)));
          worker.once('error', failed);
          worker.once('exit', () => failed(new BundleError('a translation worker thread stopped before it was ready')));
        }),
    );
    this.ready = Promise.all(joined).then(() => this);
    this.ready.catch(() => {}); // a worker's failure is thrown by the call it happens in
  }

  /**
   * The nBest translations of each sentence, as `translator.translateNBest` (the same
   * options; `workers` is the threads').
   */
  async translateNBest(sentences, given = {}) {
    const decode = async (texts, options, sources) => {
      const thread = this.idle.length ? this.idle.pop() : await new Promise((give) => this.waiting.push(give));
      try {
        if (this.failed) throw this.failed; // a worker that could not start: its error, at once
        // A worker encodes the texts itself; this thread has their ids already.
        if (thread) return await this.remote(thread, texts, options);
        return await this.translator.decodeBatch(texts, options, sources);
      } finally {
        this.release(thread);
      }
    };
    return this.translator.translateNBest(sentences, { ...given, workers: this.workers }, decode);
  }

  /** A batch decoded by a worker thread (its failure, or its exit, fails the batch). */
  async remote(worker, sentences, options) {
    const id = this.calls++;
    const reply = await new Promise((done, failed) => {
      const stop = (error) => {
        worker.off('message', listen);
        failed(error instanceof Error ? error : new BundleError('a translation worker thread stopped'));
      };
      const listen = (message) => {
        if (message.id !== id) return;
        worker.off('message', listen).off('error', stop).off('exit', stop);
        done(message);
      };
      worker.on('message', listen).once('error', stop).once('exit', stop);
      worker.postMessage({ id, sentences, options });
    });
    if (reply.error) throw new BundleError(reply.error);
    return reply.found;
  }

  /** `thread` free again: to a call waiting for one, else idle. */
  release(thread) {
    const waiting = this.waiting.shift();
    if (waiting) waiting(thread);
    else this.idle.push(thread);
  }

  /** Stop the worker threads. */
  async close() {
    const threads = this.threads;
    this.threads = [];
    this.idle = this.idle.filter((thread) => thread === null);
    await Promise.all(threads.map((worker) => worker.terminate()));
  }
}
