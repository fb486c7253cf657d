// seqgen-runtime in a browser: bundles served as static files, run by onnxruntime-web
// (WebAssembly). The page passes in the `ort` it loaded (see export/web/).

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

/** Open the bundle at `url` with onnxruntime-web's `ort`. */
export function openBundle(ort, url, options = {}) {
  const sessionOptions = { executionProviders: ['wasm'], ...(options.sessionOptions ?? {}) };
  return openWith(ort, urlSource(url), { ...options, sessionOptions });
}
