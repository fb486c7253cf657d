// Reading and checking a bundle's manifest (the contract: export/README.md). Files come from
// a `source` ({ readText(name), readBytes(name), name }), so the same code reads a folder in
// Node.js and static files over HTTP in the browser.

import { BundleError } from './errors.js';

export const FORMAT = 'seqgen-bundle';
export const FORMAT_VERSION = 7;
// Format 2 changed the translator's graphs (the source side once per sentence, not per row),
// format 3 its shortlisted step (each row over its sentence's shortlist columns), format 4
// moved the shortlist's output-layer rows into an output_rows graph run once per batch; a
// graph cannot be migrated without its checkpoint. Other kinds' older bundles still load.
// Format 5 gave step graphs a top_k input (format 4 steps return a fixed 16 and still load).
// Format 6 lets a float32 translator's step score each group of sentences against its own
// shortlists' union (output_group_rows, output_row_offsets); format 4 and 5 steps still load.
// Format 7 groups int8 steps too: their output_rows graph takes the groups' unions (G, U).
const MIN_FORMAT_VERSION = { translation: 4 };
const TOP_CANDIDATES = 16; // the most a step graph's top_log_probs hold (seqgen's contract)
const KINDS = ['generation', 'translation', 'classification'];
const MATMULS = ['int8']; // "matmul" values this runtime knows (absent: float products)

/**
 * Refuse a file name that could reach outside the bundle folder: a bundle reads nothing but
 * its own plain files (no folders, no "..", no absolute paths, no drive letters).
 * @param {unknown} name the manifest's value
 * @param {string} where the manifest key, for the message
 */
export function checkFileName(name, where) {
  const plain =
    typeof name === 'string' &&
    name.length > 0 &&
    !/[/\\:\0]/.test(name) &&
    name !== '.' &&
    name !== '..';
  if (!plain) {
    throw new BundleError(
      `manifest.json names ${JSON.stringify(name)} as ${where}; a bundle file must be a plain ` +
        'file name inside the bundle folder; re-export the bundle',
    );
  }
  return name;
}

/** Every file name the manifest lists, with the key that names it: [[key, name], ...]. */
export function listedFiles(manifest) {
  const files = [];
  for (const [graph, entry] of Object.entries(manifest.graphs ?? {})) {
    files.push([`graphs.${graph}.file`, entry?.file]);
  }
  const tokenizers = manifest.tokenizers ?? (manifest.tokenizer ? { '': manifest.tokenizer } : {});
  for (const [side, entry] of Object.entries(tokenizers)) {
    const key = side ? `tokenizers.${side}` : 'tokenizer';
    files.push([`${key}.file`, entry?.file]);
    if (entry && entry.sentencepiece_model !== undefined) {
      files.push([`${key}.sentencepiece_model`, entry.sentencepiece_model]);
    }
  }
  if (manifest.shortlist) files.push(['shortlist.file', manifest.shortlist.file]);
  // A packaged model's checkpoint, whose tensors its graphs read as ONNX external data.
  if (manifest.weights) files.push(['weights.file', manifest.weights.file]);
  return files;
}

/**
 * The bundle's manifest, checked: format, version, kind, matmul and every file name.
 * @param {{name: string, readText: (file: string) => Promise<string>}} source
 * @param {string} [kind] the task the caller runs; another task's bundle is refused
 */
export async function readManifest(source, kind) {
  const manifest = await readJson(source, 'manifest.json', 'is this a seqgen bundle?');
  if (manifest === null || typeof manifest !== 'object' || manifest.format !== FORMAT) {
    throw new BundleError(`${source.name} is not a seqgen bundle (no format "${FORMAT}" in manifest.json)`);
  }
  const version = manifest.format_version;
  if (!Number.isInteger(version)) {
    throw new BundleError(`${source.name} has a damaged format_version ${JSON.stringify(version)}; re-export it`);
  }
  if (version > FORMAT_VERSION) {
    throw new BundleError(
      `${source.name} has bundle format ${version}, newer than this runtime reads (${FORMAT_VERSION}); update seqgen-runtime`,
    );
  }
  if (manifest.kind === 'language_model') manifest.kind = 'generation'; // seqgen 0.1 bundles
  if (!KINDS.includes(manifest.kind)) {
    throw new BundleError(`${source.name} holds a ${JSON.stringify(manifest.kind)} bundle; this runtime runs ${KINDS.join(', ')} bundles`);
  }
  if (version < (MIN_FORMAT_VERSION[manifest.kind] ?? 1)) {
    throw new BundleError(
      `${source.name} is a ${manifest.kind} bundle of format ${version}, older than this runtime reads (${MIN_FORMAT_VERSION[manifest.kind]}); re-export it with this seqgen`,
    );
  }
  if (kind && manifest.kind !== kind) {
    throw new BundleError(`${source.name} is a ${manifest.kind} bundle, not a ${kind} one; use the command for ${manifest.kind}`);
  }
  if (manifest.matmul !== undefined && !MATMULS.includes(manifest.matmul)) {
    throw new BundleError(
      `${source.name} asks for ${JSON.stringify(manifest.matmul)} matrix products, which this runtime does not know; update it or re-export the bundle`,
    );
  }
  if (!manifest.graphs || typeof manifest.graphs !== 'object') {
    throw new BundleError(`${source.name}/manifest.json is damaged (no graphs); re-export the bundle`);
  }
  for (const [key, name] of listedFiles(manifest)) checkFileName(name, key);
  return manifest;
}

/** A JSON file of the bundle, or a one-line BundleError. */
export async function readJson(source, file, hint = 're-export the bundle') {
  let text;
  try {
    text = await source.readText(file);
  } catch (error) {
    throw new BundleError(`${source.name} has no readable ${file} (${error.code ?? error.message}); ${hint}`);
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new BundleError(`${source.name}/${file} is not valid JSON; re-export the bundle`);
  }
}

/** A graph's bytes, by its manifest name (`encoder`, `step`, ...). */
export async function readGraph(source, manifest, graph) {
  const entry = graphEntry(source, manifest, graph);
  try {
    return await source.readBytes(entry.file);
  } catch (error) {
    throw new BundleError(`${source.name} is missing ${entry.file} (${error.code ?? error.message}); re-export the bundle`);
  }
}

/** The manifest's entry of a graph (`encoder`, `step`, ...), or a one-line BundleError. */
export function graphEntry(source, manifest, graph) {
  const entry = manifest.graphs[graph];
  if (!entry) throw new BundleError(`${source.name} has no ${graph} graph; re-export the bundle`);
  return entry;
}

/**
 * How a step graph gives each row's best log-probs (export/README.md): `count`, the most it
 * returns (`top_log_probs` `(rows, count)`), and `fed`, whether it takes `top_k` (format 5:
 * min(top_k, 16, vocab) come back; format 4: a fixed count).
 * @param {object} manifest the bundle's manifest
 * @returns {{count: number, fed: boolean}}
 */
export function topCandidates(manifest) {
  const step = manifest.graphs.step;
  const fed = (step.inputs ?? []).some((input) => input.name === 'top_k');
  const width = (name) => step.outputs?.find((output) => output.name === name)?.shape?.[1];
  const fixed = width('top_log_probs');
  if (!fed) return { count: Number.isInteger(fixed) ? fixed : 0, fed };
  const vocab = width('log_probs'); // a name for a shortlisted step, of >= 16 columns
  return { count: Number.isInteger(vocab) ? Math.min(TOP_CANDIDATES, vocab) : TOP_CANDIDATES, fed };
}
