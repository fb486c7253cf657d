// Opening a bundle, whatever runs it: `ort` is onnxruntime-node or onnxruntime-web, `source`
// reads the bundle's files (a folder in Node.js, static files over HTTP in a browser).

import { graphEntry, readGraph, readJson, readManifest } from './bundle.js';
import { BundleError } from './errors.js';
import { Classifier } from './classifier.js';
import { Generator } from './generator.js';
import { createTokenizer } from './tokenizers.js';
import { Translator } from './translator.js';
import { TranslatorStep } from './translator-step.js';

export { BundleError } from './errors.js';

// As seqgen's Python sessions (seqgen/decoding/onnx_session.py), so that both compute the same
// bits: the `extended` graph optimisations, and denormals as zero (a shortlist-masked
// LogSoftmax sums exp() results ONNX Runtime clamps to denormals, which the CPU's slow path
// made several times slower; values under 1e-38 change nothing decoding can see).
const SESSION_OPTIONS = {
  graphOptimizationLevel: 'extended',
  extra: { session: { set_denormal_as_zero: '1' } },
};
export { checkFileName, readManifest } from './bundle.js';
export { createTokenizer } from './tokenizers.js';

/**
 * `(entry) => Promise<tokenizer>` for a manifest's tokenizer entries, by file name: a joint
 * vocabulary's one file, which both sides of a translator name, is fetched and parsed once
 * (a web page downloads it once); older bundles' two copies are each read as before.
 * @param {{name: string, readText: Function}} source the bundle's files
 */
export function tokenizerReader(source) {
  const byFile = new Map();
  return (entry) => {
    if (!byFile.has(entry.file)) {
      const where = `${source.name}/${entry.file}`;
      byFile.set(entry.file, readJson(source, entry.file).then((data) => createTokenizer(data, where)));
    }
    return byFile.get(entry.file);
  };
}

/** `() => Promise<bytes>` of a packaged model's weights file, read once; null for a bundle
 * without one (what `seqgen export` writes). */
function externalWeights(source, manifest) {
  if (!manifest.weights) return null;
  let bytes = null;
  return () => {
    bytes ??= source.readBytes(manifest.weights.file).catch((error) => {
      throw new BundleError(`${source.name} is missing ${manifest.weights.file} (${error.code ?? error.message}); reinstall seqgen or export a bundle`);
    });
    return bytes;
  };
}

/**
 * The bundle as its task's pipeline: a Translator, a Generator or a Classifier.
 * @param {object} ort onnxruntime-node or onnxruntime-web
 * @param {{name: string, readText: Function, readBytes: Function}} source the bundle's files
 * @param {object} [options]
 * @param {string} [options.task] refuse a bundle of another task
 * @param {object} [options.sessionOptions] for ort.InferenceSession.create
 */
export async function openBundle(ort, source, { task, sessionOptions = {} } = {}) {
  const manifest = await readManifest(source, task);
  // onnxruntime-web's WebGPU refuses to create two sessions at once ("another WebGPU EP
  // inference session is being created"): there, one after the other.
  let creating = Promise.resolve();
  const oneAtATime = sessionOptions.executionProviders?.includes('webgpu');
  const create = (model, external = {}) => {
    const options = { ...SESSION_OPTIONS, ...sessionOptions, ...external };
    if (!oneAtATime) return ort.InferenceSession.create(model, options);
    const session = creating.then(() => ort.InferenceSession.create(model, options));
    creating = session.catch(() => {});
    return session;
  };
  const weights = externalWeights(source, manifest);
  const open = async (graph) => {
    // A packaged model's graphs read their weights from the checkpoint beside them: by the
    // graph's path where the source has paths (ONNX Runtime resolves them inside its folder),
    // else from the bytes handed over as external data (onnxruntime-web).
    const model = weights && source.pathOf ? source.pathOf(graphEntry(source, manifest, graph).file) : null;
    const bytes = model ?? (await readGraph(source, manifest, graph));
    const external = weights && !model ? { externalData: [{ path: manifest.weights.file, data: await weights() }] } : {};
    try {
      return await create(bytes, external);
    } catch (error) {
      const detail = String(error.message ?? error).split('\n')[0];
      throw new BundleError(`ONNX Runtime cannot load ${source.name}/${manifest.graphs[graph].file} (${detail}); re-export the bundle`);
    }
  };
  const tokenizer = tokenizerReader(source);
  if (manifest.kind === 'translation') {
    const shortlist = manifest.shortlist ? await readJson(source, manifest.shortlist.file) : null;
    const [encoder, step, outputRows, sourceTokenizer, targetTokenizer] = await Promise.all([
      open('encoder'),
      open('step'),
      manifest.graphs.output_rows ? open('output_rows') : null, // a shortlisted model's
      tokenizer(manifest.tokenizers.source),
      tokenizer(manifest.tokenizers.target),
    ]);
    const translatorStep = new TranslatorStep(ort, { encoder, step, outputRows }, manifest, shortlist);
    return new Translator(translatorStep, sourceTokenizer, targetTokenizer, manifest.decoding ?? {});
  }
  if (manifest.kind === 'generation') {
    const [prime, step, text] = await Promise.all([open('prime'), open('step'), tokenizer(manifest.tokenizer)]);
    return new Generator(ort, prime, step, text, manifest);
  }
  const [session, text] = await Promise.all([open('classify'), tokenizer(manifest.tokenizer)]);
  return new Classifier(ort, session, text, manifest);
}
