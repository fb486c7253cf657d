// A translator bundle on ONNX Runtime (export/README.md, "Translator graphs"): the encoder
// graph starts the state, the step graph advances it, and search (greedy or beam) drives it
// exactly as seqgen/tasks/translation/pipeline.py does, batch for batch.

import { BundleError } from './errors.js';
import { greedySearch } from './search/greedy.js';
import { beamSearch } from './search/beam.js';
import { TranslatorStep } from './translator-step.js';
import { BOS_ID, EOS_ID, PAD_ID, UNK_ID } from './tokenizers.js';

export class Translator {
  /**
   * @param {TranslatorStep} step the graphs
   * @param {object} sourceTokenizer, targetTokenizer
   * @param {object} decoding the manifest's decoding defaults
   */
  constructor(step, sourceTokenizer, targetTokenizer, decoding) {
    this.task = 'translation';
    this.step = step;
    this.sourceTokenizer = sourceTokenizer;
    this.targetTokenizer = targetTokenizer;
    this.decoding = decoding;
  }

  /** The call's options over the model's defaults, checked. */
  options(given = {}) {
    const defined = Object.fromEntries(Object.entries(given).filter(([, v]) => v !== undefined && v !== null));
    const options = { nBest: 1, workers: 1, ...this.decodingDefaults(), ...defined };
    if (!Number.isInteger(options.beamSize) || options.beamSize < 1) {
      throw new BundleError(`beam size ${options.beamSize}; it must be a whole number >= 1`);
    }
    if (options.maxLength !== undefined && (!Number.isInteger(options.maxLength) || options.maxLength < 1)) {
      throw new BundleError(`max length ${options.maxLength}; it must be a whole number >= 1`);
    }
    if (!Number.isInteger(options.nBest) || options.nBest < 1 || options.nBest > options.beamSize) {
      throw new BundleError(`n-best ${options.nBest}; it must be between 1 and the beam size (${options.beamSize})`);
    }
    if (!(options.lengthPenalty >= 0)) {
      throw new BundleError(`length penalty ${options.lengthPenalty}; it must be >= 0 (0 = raw sums)`);
    }
    if (!Number.isInteger(options.noRepeatNgramSize) || options.noRepeatNgramSize < 0) {
      throw new BundleError(`no-repeat n-gram size ${options.noRepeatNgramSize}; it must be a whole number >= 0 (0 = off)`);
    }
    return options;
  }

  decodingDefaults() {
    const d = this.decoding;
    return {
      beamSize: d.beam_size ?? 5,
      lengthPenalty: d.length_penalty ?? 1,
      maxLengthRatio: d.max_length_ratio ?? 1.5,
      maxLengthOffset: d.max_length_offset ?? 10,
      minLengthRatio: d.min_length_ratio ?? 0,
      noRepeatNgramSize: d.no_repeat_ngram_size ?? 0,
      batchSize: d.batch_size ?? 100,
      maxSourceLength: d.max_source_length ?? Infinity,
    };
  }

  /** One translation per sentence; an empty sentence translates to "". */
  async translate(sentences, given = {}) {
    return (await this.translateNBest(sentences, given)).map((best) => best[0].text);
  }

  /**
   * The nBest translations of each sentence, best first: {text, score}.
   * @param {object} [given] beamSize, nBest, maxLength, batchSize; `decodeBatch(sentences,
   *   options, sources)` may decode a batch elsewhere (Node.js worker threads), else it runs
   *   here (`sources`: the sentences' ids, encoded once here for the batches)
   */
  async translateNBest(sentences, given = {}, decodeBatch = null) {
    const options = this.options(given);
    const results = sentences.map(() => [{ text: '', score: 0 }]);
    const encoded = this.encodeSources(sentences, options);
    const batches = this.batches(encoded, options);
    const decode = decodeBatch ?? ((texts, _, sources) => this.decodeBatch(texts, options, sources));
    let next = 0;
    const worker = async () => {
      while (next < batches.length) {
        const rows = batches[next++];
        const found = await decode(
          rows.map((r) => sentences[r]),
          options,
          rows.map((r) => encoded[r]),
        );
        rows.forEach((row, i) => (results[row] = found[i]));
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, options.workers) }, worker));
    return results;
  }

  /**
   * The batches Python decodes: non-empty sentences sorted longest first (in source pieces,
   * a stable sort), cut into batches of batchSize. The same batches keep the last bits the
   * same: a batch's output layer is computed over the union of its sentences' shortlists.
   * @param {number[][]} encoded the sentences' ids (`encodeSources`)
   * @returns {number[][]} sentence indices per batch
   */
  batches(encoded, options) {
    const lengths = encoded.map((ids) => ids.length);
    const order = lengths.map((_, i) => i).filter((i) => lengths[i] > 0);
    order.sort((a, b) => lengths[b] - lengths[a]);
    const batches = [];
    for (let start = 0; start < order.length; start += options.batchSize) {
      batches.push(order.slice(start, start + options.batchSize));
    }
    return batches;
  }

  /** Decode one batch (sorted longest first, non-empty); per sentence its hypotheses. */
  async decodeBatch(sentences, options, sources = this.encodeSources(sentences, options)) {
    const found = await this.search(sources, options);
    return found.map((hypotheses) =>
      hypotheses.map((h) => ({ text: this.targetTokenizer.decode(h.tokens), score: h.normalized })),
    );
  }

  /** Source ids (no EOS) per sentence, cut to the model's limit; [] for a blank line. */
  encodeSources(sentences, options) {
    return sentences.map((sentence) => {
      const ids = sentence.trim() ? this.sourceTokenizer.encode(sentence) : [];
      return ids.slice(0, options.maxSourceLength);
    });
  }

  /** Search one batch of non-empty sources; per source, its hypotheses best first. */
  async search(sources, options) {
    const lengths = sources.map((s) => s.length + 1); // the encoder also reads EOS
    const maxNew = lengths.map((n) => {
      const bound = Math.ceil(options.maxLengthRatio * n + options.maxLengthOffset);
      return options.maxLength ? Math.min(bound, options.maxLength) : bound;
    });
    const minNew = lengths.map((n, i) => Math.min(Math.floor(options.minLengthRatio * n), maxNew[i]));
    const state = await this.step.start(sources, { beamSize: options.beamSize });
    const common = {
      maxNew,
      minNew,
      eosId: EOS_ID,
      bannedIds: [PAD_ID, BOS_ID, UNK_ID],
      noRepeatNgramSize: options.noRepeatNgramSize,
    };
    const firstTokens = sources.map(() => BOS_ID);
    if (options.beamSize === 1) {
      const paths = await greedySearch(this.step, state, firstTokens, common);
      return paths.map((p) => [{ tokens: p.tokens, normalized: 0 }]);
    }
    return beamSearch(this.step, state, firstTokens, {
      ...common,
      beamSize: options.beamSize,
      nBest: options.nBest,
      lengthPenalty: options.lengthPenalty,
    });
  }
}
