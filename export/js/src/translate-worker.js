// A Node.js worker thread that decodes translation batches: onnxruntime-node runs a session
// on the calling thread, so batches decode side by side only in threads of their own (as
// seqgen's Python pipeline decodes one batch per core).

import { parentPort, workerData } from 'node:worker_threads';
import { openBundle } from './node.js';

const translator = await openBundle(workerData.folder, { task: 'translation' });
parentPort.on('message', async ({ id, sentences, options }) => {
  try {
    parentPort.postMessage({ id, found: await translator.decodeBatch(sentences, options) });
  } catch (error) {
    parentPort.postMessage({ id, error: error.message });
  }
});
parentPort.postMessage({ ready: true });
