// numpy's default generator, `np.random.default_rng(seed).random()`, bit for bit, so that a
// seeded sample in JavaScript draws the same numbers as seqgen's Python search
// (seqgen/decoding/search.py, _draw). Ported from numpy (numpy/random/bit_generator.pyx,
// numpy/random/src/pcg64/pcg64.h and pcg64.c, numpy/random/_common.pxd):
//
// - SeedSequence(seed): the seed's 32-bit words (least significant first) are hashed into a
//   pool of 4 words by `hashmix` (xor with a running constant that starts at INIT_A and is
//   multiplied by MULT_A at each use, a multiply, then `value ^= value >> XSHIFT`), and every
//   pool word is mixed into every other by `mix` (MIX_MULT_L * x - MIX_MULT_R * y, then the
//   same xor-shift), all modulo 2**32.
// - generate_state(4, uint64): 8 words drawn by cycling the pool, each hashed the same way
//   with a constant that starts at INIT_B and is multiplied by MULT_B; word pairs (low, high)
//   are the 4 uint64s.
// - default_rng(seed) is Generator(PCG64(SeedSequence(seed))); PCG64 seeds itself with
//   state = (s[0] << 64) | s[1] and increment (inc = (s[2] << 64) | s[3]) << 1 | 1
//   (pcg_setseq_128_srandom_r: step, add the seed, step).
// - next_uint64: the 128-bit LCG steps (state * PCG_DEFAULT_MULTIPLIER_128 + inc), then the
//   XSL-RR output: the two 64-bit halves xored, rotated right by the state's top 6 bits.
// - random(): a double in [0, 1) from the top 53 bits: (next_uint64 >> 11) * 2**-53.
//
// BigInt is slow next to a step of the model, but a sample draws one number per row and step.

const MASK32 = 0xffffffffn;
const MASK64 = (1n << 64n) - 1n;
const MASK128 = (1n << 128n) - 1n;
const INIT_A = 0x43b0d7e5n;
const MULT_A = 0x931e8875n;
const INIT_B = 0x8b51f9ddn;
const MULT_B = 0x58f38dedn;
const MIX_MULT_L = 0xca01f9ddn;
const MIX_MULT_R = 0x4973f715n;
const XSHIFT = 16n; // 4 * 8 / 2: half the bits of a 32-bit word
const POOL_SIZE = 4;
const PCG_MULTIPLIER = (2549297995355413924n << 64n) | 4865540595714422341n;

/** A seed's 32-bit words, least significant first (numpy's _coerce_to_uint32_array). */
function seedWords(seed) {
  let value = BigInt(seed);
  if (value < 0n) throw new RangeError(`seed ${seed}: it must be a whole number >= 0`);
  const words = [];
  do {
    words.push(value & MASK32);
    value >>= 32n;
  } while (value > 0n);
  return words;
}

/** SeedSequence(seed).generate_state(4, uint64), as BigInts. */
export function seedSequenceState(seed) {
  const entropy = seedWords(seed);
  let hashConst = INIT_A;
  const hashmix = (value) => {
    let v = (value ^ hashConst) & MASK32;
    hashConst = (hashConst * MULT_A) & MASK32;
    v = (v * hashConst) & MASK32;
    return v ^ (v >> XSHIFT);
  };
  const mix = (x, y) => {
    const result = (MIX_MULT_L * x - MIX_MULT_R * y) & MASK32; // BigInt & wraps negatives
    return result ^ (result >> XSHIFT);
  };
  const pool = Array.from({ length: POOL_SIZE }, (_, i) => hashmix(i < entropy.length ? entropy[i] : 0n));
  for (let source = 0; source < POOL_SIZE; source += 1) {
    for (let target = 0; target < POOL_SIZE; target += 1) {
      if (source !== target) pool[target] = mix(pool[target], hashmix(pool[source]));
    }
  }
  for (let source = POOL_SIZE; source < entropy.length; source += 1) {
    for (let target = 0; target < POOL_SIZE; target += 1) pool[target] = mix(pool[target], hashmix(entropy[source]));
  }
  let stateConst = INIT_B;
  const words = Array.from({ length: 8 }, (_, i) => {
    let value = (pool[i % POOL_SIZE] ^ stateConst) & MASK32;
    stateConst = (stateConst * MULT_B) & MASK32;
    value = (value * stateConst) & MASK32;
    return value ^ (value >> XSHIFT);
  });
  return [0, 1, 2, 3].map((i) => words[2 * i] | (words[2 * i + 1] << 32n));
}

/** numpy's PCG64 bit generator, seeded as default_rng seeds it. */
export class PCG64 {
  constructor(seed) {
    const [s0, s1, i0, i1] = seedSequenceState(seed);
    this.increment = ((((i0 << 64n) | i1) << 1n) | 1n) & MASK128;
    this.state = 0n;
    this.advance();
    this.state = (this.state + ((s0 << 64n) | s1)) & MASK128;
    this.advance();
  }

  advance() {
    this.state = (this.state * PCG_MULTIPLIER + this.increment) & MASK128;
  }

  /** The next 64 random bits (XSL-RR output of the stepped state). */
  nextUint64() {
    this.advance();
    const folded = ((this.state >> 64n) ^ this.state) & MASK64;
    const rotation = this.state >> 122n;
    return ((folded >> rotation) | (folded << ((64n - rotation) & 63n))) & MASK64;
  }
}

/**
 * `np.random.default_rng(seed)`'s `random()`: uniform doubles in [0, 1). Without a seed,
 * a random one (as numpy takes fresh entropy).
 * @param {number|bigint|null|undefined} seed a whole number >= 0
 * @returns {() => number}
 */
export function defaultRng(seed) {
  const generator = new PCG64(seed ?? BigInt(Math.floor(Math.random() * 2 ** 32)) * 2n ** 32n + BigInt(Date.now()));
  return () => Number(generator.nextUint64() >> 11n) * 2 ** -53;
}
