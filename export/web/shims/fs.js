// sentencepiece-js imports Node's fs for loading models from paths; the page loads models
// from the bundle's base64 text instead, so nothing here is ever called.
export function readFileSync() {
  throw new Error('no file system in the browser');
}
export default { readFileSync };
