// seqgen-runtime in a browser: bundles served as static files, run by onnxruntime-web on
// WebAssembly, or on WebGPU where the browser gives an adapter. The page passes in the `ort`
// it loaded (see export/web/): onnxruntime-web's WebAssembly build (`onnxruntime-web`,
// dist/ort.wasm.min.mjs) or its WebGPU build (`onnxruntime-web/webgpu`,
// dist/ort.webgpu.min.mjs, which also runs WebAssembly and loads a larger .wasm file).

import { checkFileName } from './bundle.js';
import { openBundle as openWith } from './index.js';

export * from './index.js';

/** A bundle at `url` (a folder of static files) as a file source. */
export function urlSource(url, fetchFile = fetch) {
  const base = url.endsWith('/') ? url : `${url}/`;
  const get = async (name) => {
    const response = await fetchFile(base + encodeURIComponent(checkFileName(name, 'a bundle file')));
    if (!response.ok) throw Object.assign(new Error(`HTTP ${response.status}`), { code: `HTTP ${response.status}` });
    return response;
  };
  return {
    name: url,
    readText: async (name) => (await get(name)).text(),
    readBytes: async (name) => new Uint8Array(await (await get(name)).arrayBuffer()),
  };
}

export const BACKENDS = ['auto', 'wasm', 'webgpu'];

/**
 * The backend to run on, and a notice for the page when it is not the one asked for.
 * auto takes WebGPU on a hardware adapter only: a software one (Chromium's SwiftShader,
 * `isFallbackAdapter`) is slower than WebAssembly. webgpu takes any adapter.
 * @param {string} requested auto, wasm or webgpu
 * @param {object|undefined} gpu `navigator.gpu` (undefined where the browser has no WebGPU)
 * @returns {Promise<{backend: 'wasm'|'webgpu', notice: string|null, adapter: string|null}>}
 */
export async function chooseBackend(requested, gpu) {
  if (!BACKENDS.includes(requested)) {
    return { backend: 'wasm', notice: `Unknown backend ${JSON.stringify(requested)} (choose ${BACKENDS.join(', ')}): running on WebAssembly.`, adapter: null };
  }
  if (requested === 'wasm') return { backend: 'wasm', notice: null, adapter: null };
  const adapter = gpu ? await gpu.requestAdapter().catch(() => null) : null;
  const fallback = Boolean(adapter?.isFallbackAdapter ?? adapter?.info?.isFallbackAdapter);
  const name = adapter ? [adapter.info?.vendor, adapter.info?.architecture].filter(Boolean).join(' ') || 'unnamed' : null;
  if (adapter && (requested === 'webgpu' || !fallback)) {
    return { backend: 'webgpu', notice: null, adapter: fallback ? `${name}, software` : name };
  }
  if (requested === 'auto') return { backend: 'wasm', notice: null, adapter: null };
  const why = gpu ? 'the browser gives no WebGPU adapter' : 'this browser has no WebGPU (navigator.gpu)';
  return { backend: 'wasm', notice: `WebGPU was asked for, but ${why}: running on WebAssembly.`, adapter: null };
}

/**
 * Open the bundle at `url` with onnxruntime-web's `ort`.
 * @param {object} [options] also `backend`: 'wasm' (default) or 'webgpu' (the `ort` of
 *   onnxruntime-web/webgpu; operators WebGPU lacks run on WebAssembly)
 */
export function openBundle(ort, url, options = {}) {
  const { backend = 'wasm', ...rest } = options;
  // WebGPU warns (on the console, as errors) that it leaves shape operators to the CPU, which
  // is by design: only errors are logged.
  const quiet = backend === 'webgpu' ? { logSeverityLevel: 3 } : {};
  const sessionOptions = { executionProviders: [backend], ...quiet, ...(options.sessionOptions ?? {}) };
  return openWith(ort, urlSource(url), { ...rest, sessionOptions });
}
