// The ONNX Runtime step function of a translator bundle: `start` runs the encoder, `step` the
// step graph, `select` gathers rows on the host. The source side of the state (memory, keys,
// source_mask and a shortlist's output_mask) is kept once per sentence (bundle format 2,
// export/README.md): the rows are grouped by sentence, `rows / sentences` consecutive rows
// each, and the source side is gathered again only when the sentences change, once per
// sentence, never when beams reorder within their sentence (seqgen's source_rows.py).

import { BundleError } from './errors.js';
import { shortlistIds } from './shortlist.js';
import { gatherRows, int64 } from './tensors.js';
import { EOS_ID, PAD_ID } from './tokenizers.js';

const RECURRENT = ['hidden', 'cell', 'feed'];
const OUTPUT_IDS = 'output_ids'; // (M,) int64: the batch's shortlist (union of its sentences)
const OUTPUT_MASK = 'output_mask'; // (sentences, M) float32: 0 where the sentence may use it

export class TranslatorStep {
  /**
   * @param {object} ort onnxruntime-node or onnxruntime-web
   * @param {object} encoder, step InferenceSessions
   * @param {object} manifest the bundle's manifest
   * @param {{table: number[][], frequent: number[]}|null} shortlist
   */
  constructor(ort, encoder, step, manifest, shortlist) {
    this.ort = ort;
    this.encoder = encoder;
    this.session = step;
    this.stateNames = manifest.state.names;
    this.recurrentNames = this.stateNames.filter((name) => RECURRENT.includes(name));
    this.sourceNames = this.stateNames.filter((name) => !RECURRENT.includes(name));
    this.takesOutputIds = step.inputNames.includes(OUTPUT_IDS);
    this.takesOutputMask = step.inputNames.includes(OUTPUT_MASK);
    this.topCount = topCount(manifest);
    this.shortlist = shortlist;
    this.vocabSize = manifest.model.target_vocab_size;
    if (this.takesOutputIds && !shortlist) {
      throw new BundleError('the step graph takes a shortlist but the bundle has none; re-export it');
    }
    if (this.takesOutputIds && !this.takesOutputMask) {
      throw new BundleError('the step graph takes a shortlist without its mask (an old bundle); re-export it with this seqgen');
    }
  }

  /**
   * Encode a batch of sources (ids without EOS).
   * @param {number[][]} sources
   * @returns the state: one row per sentence (`layout`: sentences and rows per sentence)
   */
  async start(sources) {
    if (sources.length === 1) {
      // One row as two, then back to one (see oneRowAsTwo).
      return this.select(await this.start([sources[0], sources[0]]), [0]);
    }
    const rows = sources.map((s) => [...s, EOS_ID]);
    const width = Math.max(...rows.map((r) => r.length));
    const padded = rows.flatMap((r) => [...r, ...Array(width - r.length).fill(PAD_ID)]);
    const outputs = await this.encoder.run({
      source_ids: int64(this.ort, padded, [rows.length, width]),
      source_lengths: int64(this.ort, rows.map((r) => r.length)),
    });
    const sourceSide = Object.fromEntries(this.sourceNames.map((name) => [name, outputs[name]]));
    let outputIds = null;
    if (this.takesOutputIds) {
      const union = shortlistIds(this.shortlist, padded);
      outputIds = { ids: union, tensor: int64(this.ort, union) };
      sourceSide[OUTPUT_MASK] = this.outputMask(rows, union);
    }
    return {
      layout: { sentences: rows.length, perSentence: 1 },
      recurrent: Object.fromEntries(this.recurrentNames.map((name) => [name, outputs[name]])),
      sourceSide,
      outputIds,
    };
  }

  /** `(sentences, M)` float32: 0 where the sentence's own shortlist has the token, else -inf. */
  outputMask(rows, union) {
    const column = new Map(union.map((id, c) => [id, c]));
    const mask = new Float32Array(rows.length * union.length).fill(Number.NEGATIVE_INFINITY);
    rows.forEach((row, s) => {
      for (const id of shortlistIds(this.shortlist, row)) mask[s * union.length + column.get(id)] = 0;
    });
    return new this.ort.Tensor('float32', mask, [rows.length, union.length]);
  }

  /**
   * One step of every row.
   * @param {number[]} tokens `(rows,)` each row's previous token
   * @param {{candidates: number}} need how many best candidates per row search reads
   * @returns {Promise<{values: Float32Array, ids: Int32Array, width: number, ranked: boolean, state: object}>}
   *   `(rows, width)` log-probs and their token ids: the graph's top K, best first, when
   *   they suffice, else every (shortlisted) token
   */
  async step(tokens, state, { candidates }) {
    if (tokens.length === 1) return this.oneRowAsTwo(tokens, state, candidates);
    const feeds = { tokens: int64(this.ort, tokens), ...state.recurrent, ...state.sourceSide };
    if (state.outputIds) feeds[OUTPUT_IDS] = state.outputIds.tensor;
    const useTop = candidates <= this.topCount;
    const news = this.recurrentNames.map((name) => `new_${name}`);
    const fetches = useTop ? ['top_log_probs', 'top_ids', ...news] : ['log_probs', ...news];
    const outputs = await this.session.run(feeds, fetches);
    const recurrent = Object.fromEntries(this.recurrentNames.map((name) => [name, outputs[`new_${name}`]]));
    const next = { ...state, recurrent };
    if (useTop) {
      const top = outputs.top_log_probs;
      return { values: top.data, ids: Int32Array.from(outputs.top_ids.data, Number), width: top.dims[1], ranked: true, state: next };
    }
    const logProbs = outputs.log_probs;
    const width = logProbs.dims[1];
    const columns = state.outputIds ? state.outputIds.ids : Array.from({ length: width }, (_, i) => i);
    const ids = new Int32Array(logProbs.data.length);
    for (let row = 0; row < tokens.length; row += 1) ids.set(columns, row * width);
    return { values: logProbs.data, ids, width, ranked: false, state: next };
  }

  /**
   * `step` of one row, run as two copies of it, as seqgen's Python adapter does: ONNX
   * Runtime's CPU matrix product takes a matrix-vector kernel for a single row, whose sums
   * run in another order, so a sentence alone would differ in the last bits from the same
   * sentence in a batch (enough to change a beam's choice now and then). The copy is a
   * sentence of its own, as in a batch of one row per sentence.
   */
  async oneRowAsTwo(tokens, state, candidates) {
    const pair = this.select(state, [0, 0], { separate: true });
    const found = await this.step([tokens[0], tokens[0]], pair, { candidates });
    const { width } = found;
    return {
      ...found,
      values: found.values.slice(0, width),
      ids: found.ids.slice(0, width),
      state: this.select(found.state, [0]),
    };
  }

  /**
   * Gather `rows` (indices into the current rows, may repeat) of the state, and its source
   * side once per sentence, only where the sentences change (`separate`: one per row).
   */
  select(state, rows, { separate = false } = {}) {
    const layout = rowLayout(rows, state.layout.perSentence, separate);
    const { sentences } = layout;
    const unchanged =
      layout.perSentence === state.layout.perSentence &&
      sentences.length === state.layout.sentences &&
      sentences.every((sentence, i) => sentence === i);
    const recurrent = Object.fromEntries(
      Object.entries(state.recurrent).map(([name, t]) => [name, gatherRows(this.ort, t, rows)]),
    );
    const sourceSide = unchanged
      ? state.sourceSide
      : Object.fromEntries(Object.entries(state.sourceSide).map(([name, t]) => [name, gatherRows(this.ort, t, sentences)]));
    return { ...state, layout: { sentences: sentences.length, perSentence: layout.perSentence }, recurrent, sourceSide };
  }
}

/**
 * The layout of `rows` (indices into a state of `perSentence` rows per sentence): the new
 * rows per sentence and each new sentence's index among the old ones. Consecutive rows of
 * one old sentence form a new sentence when every such run has the same length (beam search:
 * the beam; greedy: 1); otherwise, or `separate`, each row is a sentence of its own
 * (seqgen/tasks/translation/source_rows.py, row_layout).
 * @returns {{perSentence: number, sentences: number[]}}
 */
function rowLayout(rows, perSentence, separate) {
  const owner = Array.from(rows, (row) => Math.floor(row / perSentence));
  if (separate || owner.length < 2) return { perSentence: 1, sentences: owner };
  const starts = owner.flatMap((o, i) => (i === 0 || o !== owner[i - 1] ? [i] : []));
  const run = (starts[1] ?? owner.length) - starts[0];
  const even = starts.every((start, i) => (starts[i + 1] ?? owner.length) - start === run);
  if (!even) return { perSentence: 1, sentences: owner };
  return { perSentence: run, sentences: starts.map((start) => owner[start]) };
}

/** K of the step graph's top_log_probs `(rows, K)`, from the manifest. */
function topCount(manifest) {
  const output = manifest.graphs.step.outputs?.find((o) => o.name === 'top_log_probs');
  return Number.isInteger(output?.shape?.[1]) ? output.shape[1] : 0;
}
