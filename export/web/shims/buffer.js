// sentencepiece-js decodes the model's base64 with Buffer.from(text, 'base64'): that, and
// nothing more of Node's Buffer, in browser terms.
export const Buffer = {
  from(text, encoding) {
    if (encoding !== 'base64') throw new Error(`Buffer shim: ${encoding} is not supported`);
    const binary = atob(text);
    return Uint8Array.from(binary, (c) => c.charCodeAt(0));
  },
};
export default { Buffer };
