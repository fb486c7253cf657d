// seqgen-runtime on Node.js: bundles from a folder, run by onnxruntime-node on the CPU.

import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
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
