/** Key → RS mapping shared by ALDM, the router and applications. */

/**
 * Maps a key to its RS: FNV-1a 32-bit over the key's UTF-8 bytes, modulo `rsCount`.
 *
 * UTF-8 is encoded inline (no TextEncoder) so the hot routing path allocates nothing. Lone
 * surrogates are encoded as U+FFFD, exactly as `TextEncoder` would, so every implementation
 * that hashes the encoder's bytes agrees with this one.
 *
 * @throws RangeError when `rsCount` is not an integer ≥ 1 (a programming error, not input).
 */
export function keyToRs(key: string, rsCount: number): number {
  if (!Number.isInteger(rsCount) || rsCount < 1) throw new RangeError(`rsCount must be an integer >= 1, got ${rsCount}`);
  let h = 0x811c9dc5;
  const step = (byte: number): void => {
    h ^= byte;
    h = Math.imul(h, 0x01000193);
  };
  for (let i = 0; i < key.length; i++) {
    let cp = key.charCodeAt(i);
    if (cp >= 0xd800 && cp <= 0xdbff) {
      const next = i + 1 < key.length ? key.charCodeAt(i + 1) : 0;
      if (next >= 0xdc00 && next <= 0xdfff) {
        cp = 0x10000 + ((cp - 0xd800) << 10) + (next - 0xdc00);
        i++;
      } else cp = 0xfffd;
    } else if (cp >= 0xdc00 && cp <= 0xdfff) cp = 0xfffd;
    if (cp < 0x80) step(cp);
    else if (cp < 0x800) {
      step(0xc0 | (cp >> 6));
      step(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      step(0xe0 | (cp >> 12));
      step(0x80 | ((cp >> 6) & 0x3f));
      step(0x80 | (cp & 0x3f));
    } else {
      step(0xf0 | (cp >> 18));
      step(0x80 | ((cp >> 12) & 0x3f));
      step(0x80 | ((cp >> 6) & 0x3f));
      step(0x80 | (cp & 0x3f));
    }
  }
  return (h >>> 0) % rsCount;
}
