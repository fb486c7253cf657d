// A generator bundle on ONNX Runtime (export/README.md, "Generator graphs"): the prompt is
// read by the prime graph in one call, then the step graph continues it greedily, by
// sampling, or with beam search, as seqgen/tasks/generation/pipeline.py does.

import { topCandidates } from './bundle.js';
import { BundleError } from './errors.js';
import { beamSearch } from './search/beam.js';
import { greedySearch } from './search/greedy.js';
import { sampleSearch } from './search/sample.js';
import { gatherRows, int32Ids, int64 } from './tensors.js';
import { BOS_ID } from './tokenizers.js';

const STRATEGIES = ['greedy', 'sample', 'beam'];

/** The decoding contract over prime.onnx and step.onnx. */
class GeneratorStep {
  constructor(ort, prime, step, manifest) {
    this.ort = ort;
    this.prime = prime;
    this.session = step;
    this.stateNames = manifest.state.names;
    this.stateShape = manifest.state.shape.slice(1); // [layers, hidden]
    this.float16 = manifest.state.dtype === 'float16';
    this.top = topCandidates(manifest);
  }

  /**
   * The state of `rows` copies of `promptIds` (BOS first), primed together as Python primes
   * a batch of them, and the token the first step feeds.
   */
  async start(promptIds, rows = 1) {
    const size = this.stateShape.reduce((a, b) => a * b, 1);
    let state = Object.fromEntries(
      this.stateNames.map((name) => [
        name,
        this.float16
          ? new this.ort.Tensor('float16', new Uint16Array(rows * size), [rows, ...this.stateShape])
          : new this.ort.Tensor('float32', new Float32Array(rows * size), [rows, ...this.stateShape]),
      ]),
    );
    const head = promptIds.slice(0, -1);
    if (head.length > 0) {
      const tokenIds = int64(this.ort, Array.from({ length: rows }, () => head).flat(), [rows, head.length]);
      const outputs = await this.prime.run({ token_ids: tokenIds, ...state });
      state = this.renamed(outputs);
    }
    return { state, firstToken: promptIds[promptIds.length - 1] };
  }

  async step(tokens, state, { candidates }) {
    const useTop = candidates <= this.top.count;
    const news = this.stateNames.map((name) => `new_${name}`);
    const fetches = useTop ? ['top_log_probs', 'top_ids', ...news] : ['log_probs', ...news];
    const feeds = { tokens: int64(this.ort, tokens), ...state };
    if (this.top.fed) feeds.top_k = int64(this.ort, [useTop ? candidates : 1]);
    const outputs = await this.session.run(feeds, fetches);
    const next = this.renamed(outputs);
    if (useTop) {
      const top = outputs.top_log_probs;
      return { values: top.data, ids: int32Ids(outputs.top_ids.data), width: top.dims[1], ranked: true, state: next };
    }
    const logProbs = outputs.log_probs;
    const width = logProbs.dims[1];
    const ids = Int32Array.from({ length: logProbs.data.length }, (_, i) => i % width);
    return { values: logProbs.data, ids, width, ranked: false, state: next };
  }

  select(state, rows) {
    return Object.fromEntries(Object.entries(state).map(([name, t]) => [name, gatherRows(this.ort, t, rows)]));
  }

  renamed(outputs) {
    return Object.fromEntries(this.stateNames.map((name) => [name, outputs[`new_${name}`]]));
  }
}

export class Generator {
  constructor(ort, prime, step, tokenizer, manifest) {
    this.task = 'generation';
    this.step = new GeneratorStep(ort, prime, step, manifest);
    this.tokenizer = tokenizer;
    this.defaults = manifest.generation?.defaults ?? {};
    this.bannedIds = manifest.generation?.banned_token_ids ?? [0, 1, 2, 3];
  }

  options(given = {}) {
    const defined = Object.fromEntries(Object.entries(given).filter(([, v]) => v !== undefined && v !== null));
    const d = this.defaults;
    const options = {
      strategy: d.strategy ?? 'sample',
      maxNewTokens: d.max_new_tokens ?? 300,
      temperature: d.temperature ?? 0.8, // seqgen's default (GenerationDecodingConfig)
      topK: d.top_k ?? 0,
      topP: d.top_p ?? 1,
      beamSize: d.beam_size ?? 5,
      lengthPenalty: d.length_penalty ?? 1,
      numSamples: d.num_samples ?? 1,
      noRepeatNgramSize: d.no_repeat_ngram_size ?? 0,
      ...defined,
    };
    if (!STRATEGIES.includes(options.strategy)) {
      throw new BundleError(`unknown strategy ${JSON.stringify(options.strategy)}; choose from: ${STRATEGIES.join(', ')}`);
    }
    if (!Number.isInteger(options.maxNewTokens) || options.maxNewTokens < 0) {
      throw new BundleError(`max length ${options.maxNewTokens}; it must be a whole number >= 0`);
    }
    if (!Number.isInteger(options.numSamples) || options.numSamples < 1) {
      throw new BundleError(`num samples ${options.numSamples}; it must be a whole number >= 1`);
    }
    if (options.strategy === 'beam' && options.numSamples > options.beamSize) {
      throw new BundleError(`${options.numSamples} samples (the n best beams) asked for, but the beam size is ${options.beamSize}; raise --beam-size`);
    }
    if (!(options.lengthPenalty >= 0)) {
      throw new BundleError(`length penalty ${options.lengthPenalty}; it must be >= 0 (0 = raw sums)`);
    }
    if (!Number.isInteger(options.noRepeatNgramSize) || options.noRepeatNgramSize < 0) {
      throw new BundleError(`no-repeat n-gram size ${options.noRepeatNgramSize}; it must be a whole number >= 0 (0 = off)`);
    }
    if (!(options.temperature >= 0 && options.temperature <= 100)) {
      throw new BundleError(`temperature ${options.temperature}; it must be in [0, 100] (0 means greedy)`);
    }
    if (!Number.isInteger(options.topK) || options.topK < 0) {
      throw new BundleError(`top-k ${options.topK}; it must be a whole number >= 0 (0 = off)`);
    }
    if (!(options.topP > 0 && options.topP <= 1)) {
      throw new BundleError(`top-p ${options.topP}; it must be in (0, 1] (1 = off)`);
    }
    if (options.seed !== undefined && !(Number.isSafeInteger(options.seed) && options.seed >= 0)) {
      throw new BundleError(`seed ${options.seed}; it must be a whole number >= 0`);
    }
    // Python's rule (seqgen/tasks/generation/pipeline.py): temperature 0 is greedy search.
    if (options.strategy === 'sample' && options.temperature === 0) options.strategy = 'greedy';
    return options;
  }

  /** The prompt followed by its continuation (seqgen's generate prints the same); with
   * numSamples > 1, the first of generateSamples'. */
  async generate(prompt, given = {}) {
    return (await this.generateSamples(prompt, given))[0];
  }

  /**
   * numSamples texts, each the prompt and a continuation, as seqgen/tasks/generation/
   * pipeline.py makes them: independent samples (one row each, decoded together), or the n
   * best beams of one row.
   * @returns {Promise<string[]>}
   */
  async generateSamples(prompt, given = {}) {
    const options = this.options(given);
    const promptIds = [BOS_ID, ...this.tokenizer.encode(prompt)];
    const rows = options.strategy === 'beam' ? 1 : options.numSamples;
    const { state, firstToken } = await this.step.start(promptIds, rows);
    const firstTokens = Array(rows).fill(firstToken);
    const common = {
      maxNew: Array(rows).fill(options.maxNewTokens),
      eosId: null,
      bannedIds: this.bannedIds,
      noRepeatNgramSize: options.noRepeatNgramSize,
    };
    let paths;
    if (options.strategy === 'beam') {
      const beam = { beamSize: options.beamSize, nBest: options.numSamples, lengthPenalty: options.lengthPenalty };
      [paths] = await beamSearch(this.step, state, firstTokens, { ...common, ...beam });
    } else if (options.strategy === 'greedy') {
      paths = await greedySearch(this.step, state, firstTokens, common);
    } else {
      paths = await sampleSearch(this.step, state, firstTokens, { ...common, ...options });
    }
    return paths.map((path) => prompt + this.continuation(promptIds, path.tokens));
  }

  /** The text the new tokens add to the prompt's, with the tokenizer's own spacing. */
  continuation(promptIds, newIds) {
    const before = this.tokenizer.decode(promptIds);
    const after = this.tokenizer.decode([...promptIds, ...newIds]);
    return after.startsWith(before) ? after.slice(before.length) : this.tokenizer.decode(newIds);
  }
}
