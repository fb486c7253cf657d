// A classifier bundle on ONNX Runtime (export/README.md, "Classifier graph"): texts grouped by
// their length in tokens run unpadded through classify.onnx, as Python's pipeline does.

import { BundleError } from './errors.js';
import { int64 } from './tensors.js';

export class Classifier {
  constructor(ort, session, tokenizer, manifest) {
    this.task = 'classification';
    this.ort = ort;
    this.session = session;
    this.tokenizer = tokenizer;
    this.labels = manifest.labels;
    this.maxLength = manifest.classification?.max_length ?? Infinity;
  }

  /**
   * Each text's `topK` classes, most probable first: [[label, probability], ...].
   * @param {string[]} texts
   */
  async classify(texts, { topK = 1, batchSize = 256 } = {}) {
    const probabilities = await this.probabilities(texts, batchSize);
    return probabilities.map((row) =>
      row
        .map((p, c) => [this.labels[c], p])
        .sort((a, b) => b[1] - a[1]) // stable: equal probabilities keep the model's order
        .slice(0, topK),
    );
  }

  /** `(texts, classes)` probabilities. */
  async probabilities(texts, batchSize = 256) {
    const encoded = texts.map((text, i) => {
      const ids = this.tokenizer.encode(text);
      if (ids.length === 0) throw new BundleError(`text ${i + 1} is empty; a classifier needs some text`);
      return ids.slice(0, this.maxLength);
    });
    const groups = new Map();
    encoded.forEach((ids, row) => groups.set(ids.length, [...(groups.get(ids.length) ?? []), row]));
    const result = new Array(texts.length);
    for (const [length, rows] of [...groups].sort((a, b) => a[0] - b[0])) {
      for (let start = 0; start < rows.length; start += batchSize) {
        const chunk = rows.slice(start, start + batchSize);
        const tokenIds = int64(this.ort, chunk.flatMap((row) => encoded[row]), [chunk.length, length]);
        const { probabilities } = await this.session.run({ token_ids: tokenIds });
        const classes = probabilities.dims[1];
        chunk.forEach((row, i) => (result[row] = Array.from(probabilities.data.subarray(i * classes, (i + 1) * classes))));
      }
    }
    return result;
  }
}
