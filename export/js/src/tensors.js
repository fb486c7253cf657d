// Host-side helpers on ONNX Runtime tensors, whatever their element type: every state array
// is batch-major (axis 0 = rows), so selecting or reordering rows is one gather on axis 0.

/**
 * Rows of a batch-major tensor, in the order given (rows may repeat).
 * @param {object} ort onnxruntime-node or onnxruntime-web
 * @param {import('onnxruntime-common').Tensor} tensor `(rows, ...)` of any element type
 * @param {ArrayLike<number>} rows `(new_rows,)` indices into axis 0
 * @returns a `(new_rows, ...)` tensor of the same type
 */
export function gatherRows(ort, tensor, rows) {
  const [, ...rest] = tensor.dims;
  const width = rest.reduce((a, b) => a * b, 1);
  const source = tensor.data;
  const target = new source.constructor(rows.length * width);
  for (let i = 0; i < rows.length; i += 1) {
    target.set(source.subarray(rows[i] * width, (rows[i] + 1) * width), i * width);
  }
  return new ort.Tensor(tensor.type, target, [rows.length, ...rest]);
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * int64 values that fit in 31 bits (token ids) as an Int32Array: on a little-endian host the
 * low word of each, without a BigInt per element (`Int32Array.from(data, Number)`).
 * @param {BigInt64Array} data
 */
export function int32Ids(data) {
  if (!LITTLE_ENDIAN) return Int32Array.from(data, Number);
  const words = new Int32Array(data.buffer, data.byteOffset, data.length * 2);
  const ids = new Int32Array(data.length);
  for (let i = 0; i < ids.length; i += 1) ids[i] = words[2 * i];
  return ids;
}

/**
 * An int64 tensor from numbers: on a little-endian host, whole numbers within 32 bits (token
 * ids, lengths) are written as their two words, without a BigInt each.
 */
export function int64(ort, values, dims = [values.length]) {
  const data = new BigInt64Array(values.length);
  const words = LITTLE_ENDIAN ? new Int32Array(data.buffer) : null;
  for (let i = 0; i < values.length; i += 1) {
    const value = values[i];
    if (words && value === (value | 0)) {
      words[2 * i] = value;
      words[2 * i + 1] = value < 0 ? -1 : 0;
    } else {
      data[i] = BigInt(value); // a RangeError for a fraction, as BigInt64Array.from gave
    }
  }
  return new ort.Tensor('int64', data, dims);
}

/** A zero-filled float32 tensor. */
export function zeros(ort, dims) {
  return new ort.Tensor('float32', new Float32Array(dims.reduce((a, b) => a * b, 1)), dims);
}

