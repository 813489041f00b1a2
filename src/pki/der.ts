/**
 * A minimal, bounded DER reader for untrusted input.
 *
 * It reads one TLV header at a time over a window `[pos, end)` of a byte array, checks every length
 * against the window before anything is touched, and never recurses: callers descend explicitly with
 * `enter()`, so the work done is linear in the bytes visited and the nesting depth is whatever the
 * caller's fixed structure walks. Failure is always a `DerError`.
 */

/** Malformed or unsupported DER. */
export class DerError extends Error {
  override readonly name = "DerError"
}

/** Universal tags used by certificates. */
export const Tag = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  NUMERIC_STRING: 0x12,
  PRINTABLE_STRING: 0x13,
  TELETEX_STRING: 0x14,
  IA5_STRING: 0x16,
  UNIVERSAL_STRING: 0x1c,
  BMP_STRING: 0x1e,
  SEQUENCE: 0x30,
  SET: 0x31
} as const

/** Context-specific constructed tag `[n]` (n < 31). */
export const contextTag = (n: number): number => 0xa0 | n

export class DerCursor {
  /** Tag byte of the element read by the last `next()`. */
  tag = 0
  /** Start (inclusive) and end (exclusive) of that element's contents. */
  start = 0
  end = 0
  private pos: number

  constructor(
    readonly buf: Uint8Array,
    offset: number,
    private readonly limit: number
  ) {
    if (offset < 0 || limit > buf.length || offset > limit) throw new DerError("window out of range")
    this.pos = offset
  }

  static over(buf: Uint8Array): DerCursor {
    return new DerCursor(buf, 0, buf.length)
  }

  hasMore(): boolean {
    return this.pos < this.limit
  }

  /** Offset of the next header (equals the window end once everything is read). */
  get offset(): number {
    return this.pos
  }

  /** Reads the next element's header; its contents are `[start, end)` and are skipped. */
  next(): void {
    const buf = this.buf
    const limit = this.limit
    let p = this.pos
    if (p + 2 > limit) throw new DerError("truncated header")
    const tag = buf[p++]!
    if ((tag & 0x1f) === 0x1f) throw new DerError("high-tag-number form is not supported")
    let length = buf[p++]!
    if (length & 0x80) {
      const n = length & 0x7f
      if (n === 0) throw new DerError("indefinite length is not DER")
      if (n > 4) throw new DerError("length too large")
      if (p + n > limit) throw new DerError("truncated length")
      if (buf[p] === 0) throw new DerError("non-minimal length")
      length = 0
      for (let i = 0; i < n; i++) length = length * 256 + buf[p++]!
      if (length < 0x80) throw new DerError("non-minimal length")
    }
    if (length > limit - p) throw new DerError("element overruns its container")
    this.tag = tag
    this.start = p
    this.end = p + length
    this.pos = p + length
  }

  /** Reads the next element and requires its tag. */
  expect(tag: number, what: string): void {
    if (!this.hasMore()) throw new DerError(`missing ${what}`)
    this.next()
    if (this.tag !== tag) {
      throw new DerError(`${what}: expected tag 0x${tag.toString(16)}, got 0x${this.tag.toString(16)}`)
    }
  }

  /** A cursor over the contents of the element read last. */
  enter(): DerCursor {
    if ((this.tag & 0x20) === 0) throw new DerError("not a constructed element")
    return new DerCursor(this.buf, this.start, this.end)
  }

  /** Whether the contents of the element read last equal `bytes`. */
  contentEquals(bytes: Uint8Array): boolean {
    const len = this.end - this.start
    if (len !== bytes.length) return false
    const buf = this.buf
    for (let i = 0; i < len; i++) if (buf[this.start + i] !== bytes[i]) return false
    return true
  }
}

/** DER content octets of a dotted OID (for comparisons against parsed OIDs). */
export const encodeOid = (dotted: string): Uint8Array => {
  const arcs = dotted.split(".").map((a) => {
    if (!/^\d+$/.test(a)) throw new TypeError(`bad OID arc in ${dotted}`)
    return BigInt(a)
  })
  if (arcs.length < 2) throw new TypeError(`OID needs at least two arcs: ${dotted}`)
  const out: Array<number> = []
  const push = (v: bigint): void => {
    const groups: Array<number> = [Number(v & 0x7fn)]
    for (v >>= 7n; v > 0n; v >>= 7n) groups.unshift(Number(v & 0x7fn) | 0x80)
    out.push(...groups)
  }
  push(arcs[0]! * 40n + arcs[1]!)
  for (const arc of arcs.slice(2)) push(arc)
  return Uint8Array.from(out)
}
