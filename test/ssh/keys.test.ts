/**
 * keys.ts against OpenSSH's ssh-keygen: keys it makes parse, keys we encode it reads, signatures
 * cross-verify both ways (certificates and SSHSIG, PROTOCOL.sshsig), and the parsers survive
 * random and mutated input with only SshWireError / SshKeyError.
 */
import { execFileSync } from "node:child_process"
import { createHash } from "node:crypto"
import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import fc from "fast-check"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { parseCertificate } from "../../src/ssh/certs.ts"
import {
  encodeOpenSshPrivateKey,
  fingerprintSha256,
  formatAuthorizedKeyLine,
  generateSshKey,
  parseAuthorizedKeyLine,
  parseOpenSshPrivateKey,
  parsePublicKeyBlob,
  publicKeyOf,
  sign,
  signatureAlgorithmFor,
  SshKeyError,
  verify,
  type PublicKeyAlgorithm,
  type SignatureAlgorithm,
  type SshPrivateKey
} from "../../src/ssh/keys.ts"
import { SshReader, SshWireError, SshWriter } from "../../src/ssh/wire.ts"

let dir = ""
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "ssh-keys-test-"))
})
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

const keygen = (...args: ReadonlyArray<string>): string =>
  execFileSync("ssh-keygen", args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, TZ: "UTC" } })

/** stdin-fed ssh-keygen (for -Y sign / check-novalidate). */
const keygenStdin = (input: Uint8Array, ...args: ReadonlyArray<string>): string =>
  execFileSync("ssh-keygen", args, { input, encoding: "utf8", stdio: ["pipe", "pipe", "pipe"] })

let counter = 0
const tmpFile = (name: string): string => path.join(dir, `${counter++}-${name}`)

interface KeygenKey {
  readonly file: string
  readonly pem: string
  readonly pubLine: string
}

const sshKeygenKey = (type: "rsa" | "ed25519", comment: string, extra: ReadonlyArray<string> = []): KeygenKey => {
  const file = tmpFile(type)
  keygen("-q", "-t", type, ...(type === "rsa" ? ["-b", "2048"] : []), "-N", "", "-C", comment, ...extra, "-f", file)
  return { file, pem: fs.readFileSync(file, "utf8"), pubLine: fs.readFileSync(file + ".pub", "utf8") }
}

const writeKey = (key: SshPrivateKey, comment = ""): string => {
  const file = tmpFile("ours")
  fs.writeFileSync(file, encodeOpenSshPrivateKey(key, comment), { mode: 0o600 })
  return file
}

/** The binary inside an OpenSSH private key PEM, and back. */
const binary = (pem: string): Buffer => Buffer.from(pem.replace(/-----[A-Z ]+-----/g, "").replace(/\s+/g, ""), "base64")
const armor = (bin: Uint8Array): string =>
  `-----BEGIN OPENSSH PRIVATE KEY-----\n${Buffer.from(bin).toString("base64")}\n-----END OPENSSH PRIVATE KEY-----\n`

const isExpectedError = (e: unknown): boolean => e instanceof SshWireError || e instanceof SshKeyError

/** Call `f`; pass if it returns or throws one of our two error types. */
const onlyOurErrors = (f: () => unknown): boolean => {
  try {
    f()
    return true
  } catch (e) {
    if (isExpectedError(e)) return true
    throw e
  }
}

// --- SSHSIG (PROTOCOL.sshsig): lets ssh-keygen verify raw signatures made by our `sign` -------

const SSHSIG_MAGIC = Buffer.from("SSHSIG")

const sshsigSignedData = (namespace: string, hashAlg: "sha256" | "sha512", message: Uint8Array): Buffer =>
  Buffer.concat([
    SSHSIG_MAGIC,
    new SshWriter().string(namespace).string("").string(hashAlg).bytes(createHash(hashAlg).update(message).digest()).toBuffer()
  ])

const sshsigArmor = (key: SshPrivateKey, algorithm: SignatureAlgorithm, namespace: string, message: Uint8Array): string => {
  const hashAlg = "sha512"
  const signature = sign(key, algorithm, sshsigSignedData(namespace, hashAlg, message))
  const blob = Buffer.concat([
    SSHSIG_MAGIC,
    new SshWriter().uint32(1).bytes(key.publicBlob).string(namespace).string("").string(hashAlg).bytes(signature).toBuffer()
  ])
  const b64 = blob.toString("base64").match(/.{1,76}/g)!.join("\n")
  return `-----BEGIN SSH SIGNATURE-----\n${b64}\n-----END SSH SIGNATURE-----\n`
}

const sshsigParse = (armored: string) => {
  const body = armored.replace(/-----[A-Z ]+-----/g, "").replace(/\s+/g, "")
  const blob = Buffer.from(body, "base64")
  expect(blob.subarray(0, 6).equals(SSHSIG_MAGIC)).toBe(true)
  const r = new SshReader(blob, 6)
  expect(r.uint32()).toBe(1)
  const publicKey = Buffer.from(r.bytes())
  const namespace = r.string()
  r.bytes()
  const hashAlg = r.string() as "sha256" | "sha512"
  const signature = Buffer.from(r.bytes())
  r.assertEnd()
  return { publicKey, namespace, hashAlg, signature }
}

// --- mutations for property tests --------------------------------------------------------------

type Mutation =
  | { readonly kind: "flip"; readonly at: number; readonly bit: number }
  | { readonly kind: "set"; readonly at: number; readonly value: number }
  | { readonly kind: "truncate"; readonly at: number }
  | { readonly kind: "insert"; readonly at: number; readonly bytes: Uint8Array }
  | { readonly kind: "extend"; readonly bytes: Uint8Array }

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant("flip" as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ kind: fc.constant("set" as const), at: fc.nat(), value: fc.constantFrom(0, 1, 0x7f, 0x80, 0xff) }),
  fc.record({ kind: fc.constant("truncate" as const), at: fc.nat() }),
  fc.record({ kind: fc.constant("insert" as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }) }),
  fc.record({ kind: fc.constant("extend" as const), bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }) })
)

const mutate = (input: Uint8Array, mutations: ReadonlyArray<Mutation>): Buffer => {
  let b = Buffer.from(input)
  for (const m of mutations) {
    const at = b.length === 0 ? 0 : m.kind === "extend" ? 0 : m.at % b.length
    switch (m.kind) {
      case "flip":
        if (b.length > 0) b[at] = b[at]! ^ (1 << m.bit)
        break
      case "set":
        if (b.length > 0) b[at] = m.value
        break
      case "truncate":
        b = b.subarray(0, at)
        break
      case "insert":
        b = Buffer.concat([b.subarray(0, at), m.bytes, b.subarray(at)])
        break
      case "extend":
        b = Buffer.concat([b, m.bytes])
        break
    }
  }
  return b
}

const mutationsArb = fc.array(mutationArb, { minLength: 1, maxLength: 3 })

// -----------------------------------------------------------------------------------------------

describe("keys made by ssh-keygen", () => {
  let rsa: KeygenKey
  let ed: KeygenKey
  beforeAll(() => {
    rsa = sshKeygenKey("rsa", "relay@infisical rsa")
    ed = sshKeygenKey("ed25519", "gateway key")
  })

  it.each([
    ["rsa", "ssh-rsa", 2048],
    ["ed25519", "ssh-ed25519", undefined]
  ] as const)("parses an %s private key and its .pub line", (which, type, bits) => {
    const k = which === "rsa" ? rsa : ed
    const priv = parseOpenSshPrivateKey(k.pem)
    const line = parseAuthorizedKeyLine(k.pubLine)
    expect(priv.type).toBe(type)
    expect(line.type).toBe(type)
    expect(line.comment).toBe(which === "rsa" ? "relay@infisical rsa" : "gateway key")
    expect(priv.publicBlob.equals(line.blob)).toBe(true)
    const pub = parsePublicKeyBlob(line.blob)
    expect(pub.type).toBe(type)
    expect(pub.blob.equals(line.blob)).toBe(true)
    expect(pub.key.asymmetricKeyDetails?.modulusLength).toBe(bits)
    expect(pub.key.equals(publicKeyOf(priv).key)).toBe(true)
    // Same fingerprint as ssh-keygen -l.
    expect(keygen("-l", "-E", "sha256", "-f", k.file + ".pub")).toContain(fingerprintSha256(line.blob))
  })

  it("signs with every algorithm and verifies its own signatures", () => {
    const data = Buffer.from("exchange hash")
    const cases: ReadonlyArray<readonly [KeygenKey, SignatureAlgorithm]> = [
      [rsa, "rsa-sha2-256"],
      [rsa, "rsa-sha2-512"],
      [rsa, "ssh-rsa"],
      [ed, "ssh-ed25519"]
    ]
    for (const [k, alg] of cases) {
      const priv = parseOpenSshPrivateKey(k.pem)
      const pub = parsePublicKeyBlob(parseAuthorizedKeyLine(k.pubLine).blob)
      const sig = sign(priv, alg, data)
      const r = new SshReader(sig)
      expect(r.string()).toBe(alg)
      expect(r.bytes().length).toBe(alg === "ssh-ed25519" ? 64 : 256)
      r.assertEnd()
      expect(verify(pub, sig, data)).toBe(true)
      expect(verify(pub, sig, data, [alg])).toBe(true)
    }
  })

  it("verifies SSHSIG signatures made by ssh-keygen -Y sign", () => {
    const message = Buffer.from("hello from ssh-keygen\n")
    for (const k of [rsa, ed]) {
      const msgFile = tmpFile("msg")
      fs.writeFileSync(msgFile, message)
      keygen("-Y", "sign", "-f", k.file, "-n", "file", msgFile)
      const parsed = sshsigParse(fs.readFileSync(msgFile + ".sig", "utf8"))
      const pub = parsePublicKeyBlob(parsed.publicKey)
      const signed = sshsigSignedData(parsed.namespace, parsed.hashAlg, message)
      expect(verify(pub, parsed.signature, signed)).toBe(true)
      expect(verify(pub, parsed.signature, sshsigSignedData(parsed.namespace, parsed.hashAlg, Buffer.from("other")))).toBe(false)
    }
  })

  it("refuses encrypted private keys", () => {
    const k = sshKeygenKey("ed25519", "enc", ["-N", "secret"])
    expect(() => parseOpenSshPrivateKey(k.pem)).toThrow(SshKeyError)
  })
})

describe("keys we make, read by ssh-keygen", () => {
  it.each(["ssh-rsa", "ssh-ed25519"] as const)("ssh-keygen -y reads our encoded %s key", (type) => {
    const key = generateSshKey(type)
    const file = writeKey(key, "our comment")
    const printed = keygen("-y", "-f", file).trim()
    expect(parseAuthorizedKeyLine(printed).blob.equals(key.publicBlob)).toBe(true)
    expect(printed.startsWith(formatAuthorizedKeyLine(type, key.publicBlob))).toBe(true)
    // And we read it back to the same key.
    const back = parseOpenSshPrivateKey(fs.readFileSync(file, "utf8"))
    expect(back.publicBlob.equals(key.publicBlob)).toBe(true)
    expect(back.key.equals(key.key)).toBe(true)
  })

  it.each([
    ["ssh-rsa", "rsa-sha2-512"],
    ["ssh-rsa", "rsa-sha2-256"],
    ["ssh-ed25519", "ssh-ed25519"]
  ] as const)("ssh-keygen -Y check-novalidate accepts our %s %s signature", (type, alg) => {
    const key = generateSshKey(type)
    const message = Buffer.from(`signed by us with ${alg}\n`)
    const sigFile = tmpFile("sig")
    fs.writeFileSync(sigFile, sshsigArmor(key, alg, "file", message))
    const out = keygenStdin(message, "-Y", "check-novalidate", "-n", "file", "-s", sigFile)
    expect(out).toContain("Good")
    // A different message must fail there too (so the check above means something).
    expect(() => keygenStdin(Buffer.from("tampered\n"), "-Y", "check-novalidate", "-n", "file", "-s", sigFile)).toThrow()
  })

  it.each(["ssh-rsa", "ssh-ed25519"] as const)("ssh-keygen signs certificates with our encoded %s CA and we verify them", (type) => {
    const ca = generateSshKey(type)
    const caFile = writeKey(ca)
    const user = sshKeygenKey("ed25519", "user")
    keygen("-q", "-s", caFile, "-I", "id", "-n", "p", user.file + ".pub")
    const cert = parseCertificate(parseAuthorizedKeyLine(fs.readFileSync(user.file + "-cert.pub", "utf8")).blob)
    expect(cert.signatureKey.equals(ca.publicBlob)).toBe(true)
    const caPub = parsePublicKeyBlob(ca.publicBlob)
    expect(verify(caPub, cert.signature, cert.signedData)).toBe(true)
    const tampered = Buffer.from(cert.signedData)
    tampered[tampered.length - 1]! ^= 1
    expect(verify(caPub, cert.signature, tampered)).toBe(false)
  })

  it("re-encodes an ssh-keygen key byte for byte, except the random check-ints", () => {
    const k = sshKeygenKey("rsa", "same bytes")
    const ours = encodeOpenSshPrivateKey(parseOpenSshPrivateKey(k.pem), "same bytes")
    const decode = (pem: string) => {
      const bin = binary(pem)
      const r = new SshReader(bin, 15)
      r.string()
      r.string()
      r.bytes()
      r.uint32()
      r.bytes()
      const sectionStart = r.offset + 4
      bin.fill(0, sectionStart, sectionStart + 8)
      return bin
    }
    expect(decode(ours).equals(decode(k.pem))).toBe(true)
    // Same line wrapping too.
    expect(ours.split("\n").map((l) => l.length)).toEqual(k.pem.split("\n").map((l) => l.length))
  })

  it("ssh-keygen -l agrees with our fingerprint of a generated key", () => {
    const key = generateSshKey("ssh-rsa", 3072)
    const file = tmpFile("pub")
    fs.writeFileSync(file, formatAuthorizedKeyLine("ssh-rsa", key.publicBlob, "c") + "\n")
    const out = keygen("-l", "-f", file)
    expect(out).toContain(fingerprintSha256(key.publicBlob))
    expect(out).toMatch(/^3072 /)
  })
})

describe("verify rejects", () => {
  const rsa = generateSshKey("ssh-rsa", 2048)
  const rsaPub = publicKeyOf(rsa)
  const ed = generateSshKey("ssh-ed25519")
  const edPub = publicKeyOf(ed)
  const data = Buffer.from("data to sign")

  it("tampered data", () => {
    for (const [k, p, alg] of [
      [rsa, rsaPub, "rsa-sha2-256"],
      [ed, edPub, "ssh-ed25519"]
    ] as const) {
      const sig = sign(k, alg, data)
      expect(verify(p, sig, Buffer.from("data to sigN"))).toBe(false)
      expect(verify(p, sig, data.subarray(1))).toBe(false)
    }
  })

  it("any flipped byte of the signature blob", () => {
    for (const [k, p, alg] of [
      [rsa, rsaPub, "rsa-sha2-512"],
      [ed, edPub, "ssh-ed25519"]
    ] as const) {
      const sig = sign(k, alg, data)
      for (let i = 0; i < sig.length; i++) {
        const bad = Buffer.from(sig)
        bad[i]! ^= 0x01
        expect(verify(p, bad, data)).toBe(false)
      }
      expect(verify(p, Buffer.concat([sig, Buffer.from([0])]), data)).toBe(false)
      expect(verify(p, sig.subarray(0, sig.length - 1), data)).toBe(false)
    }
  })

  it("algorithms not in the allowed list, or not matching the key", () => {
    const sig256 = sign(rsa, "rsa-sha2-256", data)
    expect(verify(rsaPub, sig256, data, ["rsa-sha2-512"])).toBe(false)
    expect(verify(rsaPub, sig256, data, [])).toBe(false)
    expect(verify(rsaPub, sign(rsa, "ssh-rsa", data), data, ["rsa-sha2-256", "rsa-sha2-512"])).toBe(false)
    // A SHA-256 signature relabelled as SHA-512 does not verify.
    const relabelled = new SshWriter().string("rsa-sha2-512").bytes(new SshReader(sig256, 4 + 12).bytes()).toBuffer()
    expect(verify(rsaPub, relabelled, data)).toBe(false)
    // Cross-type: ed25519 signature against an RSA key and vice versa.
    expect(verify(rsaPub, sign(ed, "ssh-ed25519", data), data)).toBe(false)
    expect(verify(edPub, sig256, data)).toBe(false)
    expect(() => sign(ed, "rsa-sha2-256", data)).toThrow(SshKeyError)
    expect(() => sign(rsa, "ssh-ed25519", data)).toThrow(SshKeyError)
  })

  it("RSA keys under 1024 bits, even with a correct signature", () => {
    const small = generateSshKey("ssh-rsa", 768)
    expect(verify(publicKeyOf(small), sign(small, "rsa-sha2-256", data), data)).toBe(false)
  })

  it("garbage instead of a signature blob (without throwing)", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), (blob) => {
        expect(verify(rsaPub, blob, data)).toBe(false)
        expect(verify(edPub, blob, data)).toBe(false)
      }),
      { numRuns: 300 }
    )
  })

  it("but accepts an RSA signature with its leading zero byte stripped, as OpenSSH does", () => {
    const key = generateSshKey("ssh-rsa", 1024)
    const pub = publicKeyOf(key)
    // About 1 in 256 signatures starts with a zero byte; search deterministically.
    for (let i = 0; i < 5000; i++) {
      const msg = Buffer.from(`message ${i}`)
      const raw = Buffer.from(new SshReader(sign(key, "rsa-sha2-256", msg), 4 + 12).bytes())
      if (raw[0] !== 0) continue
      const short = new SshWriter().string("rsa-sha2-256").bytes(raw.subarray(1)).toBuffer()
      expect(verify(pub, short, msg)).toBe(true)
      return
    }
    throw new Error("no signature with a leading zero found")
  })
})

describe("parseAuthorizedKeyLine", () => {
  const key = generateSshKey("ssh-ed25519")
  const b64 = key.publicBlob.toString("base64")

  it.each([
    [`ssh-ed25519 ${b64}`, ""],
    [`ssh-ed25519 ${b64}\n`, ""],
    [`ssh-ed25519 ${b64} user@host\n`, "user@host"],
    [`ssh-ed25519 ${b64} user@host\r\n`, "user@host"],
    [`  ssh-ed25519\t${b64}   comment with  spaces  \n\n`, "comment with  spaces"],
    [`# a comment line\n\nssh-ed25519 ${b64} c\n`, "c"]
  ])("reads %j", (line, comment) => {
    const parsed = parseAuthorizedKeyLine(line)
    expect(parsed.type).toBe("ssh-ed25519")
    expect(parsed.blob.equals(key.publicBlob)).toBe(true)
    expect(parsed.comment).toBe(comment)
  })

  it.each([
    ["empty", ""],
    ["only a type", "ssh-ed25519"],
    ["type mismatch", `ssh-rsa ${b64}`],
    ["bad base64", `ssh-ed25519 ${b64.slice(0, -2)}!!`],
    ["truncated base64", `ssh-ed25519 ${b64.slice(0, -1)}`],
    ["option prefix", `cert-authority ssh-ed25519 ${b64}`]
  ])("rejects %s", (_, line) => {
    expect(() => parseAuthorizedKeyLine(line)).toThrow(SshKeyError)
  })

  it("reads certificate lines without interpreting the blob", () => {
    const blob = new SshWriter().string("ssh-rsa-cert-v01@openssh.com").string("junk").toBuffer()
    const parsed = parseAuthorizedKeyLine(formatAuthorizedKeyLine("ssh-rsa-cert-v01@openssh.com", blob, "cert"))
    expect(parsed).toEqual({ type: "ssh-rsa-cert-v01@openssh.com", blob, comment: "cert" })
  })
})

describe("parsePublicKeyBlob rejects", () => {
  const rsa = generateSshKey("ssh-rsa", 2048)
  const ed = generateSshKey("ssh-ed25519")
  const fields = (blob: Buffer) => {
    const r = new SshReader(blob)
    r.string()
    return { e: Buffer.from(r.mpintBytes()), n: Buffer.from(r.mpintBytes()) }
  }

  it.each<[string, () => Buffer, typeof SshKeyError | typeof SshWireError]>([
    ["unknown type", () => new SshWriter().string("ssh-dss").bytes(Buffer.alloc(32)).toBuffer(), SshKeyError],
    ["a certificate type", () => new SshWriter().string("ssh-ed25519-cert-v01@openssh.com").toBuffer(), SshKeyError],
    ["trailing bytes", () => Buffer.concat([ed.publicBlob, Buffer.from([0])]), SshWireError],
    ["short ed25519 key", () => new SshWriter().string("ssh-ed25519").bytes(Buffer.alloc(31)).toBuffer(), SshKeyError],
    ["long ed25519 key", () => new SshWriter().string("ssh-ed25519").bytes(Buffer.alloc(33)).toBuffer(), SshWireError],
    ["even RSA exponent", () => new SshWriter().string("ssh-rsa").mpint(65536n).bytes(fields(rsa.publicBlob).n).toBuffer(), SshKeyError],
    ["RSA exponent 1", () => new SshWriter().string("ssh-rsa").mpint(1n).bytes(fields(rsa.publicBlob).n).toBuffer(), SshKeyError],
    ["huge RSA exponent", () => new SshWriter().string("ssh-rsa").mpint((1n << 40n) + 1n).bytes(fields(rsa.publicBlob).n).toBuffer(), SshKeyError],
    ["negative RSA modulus", () => new SshWriter().string("ssh-rsa").mpint(65537n).bytes(Buffer.from([0x80, 1])).toBuffer(), SshWireError],
    ["zero RSA modulus", () => new SshWriter().string("ssh-rsa").mpint(65537n).uint32(0).toBuffer(), SshKeyError]
  ])("%s", (_, make, error) => {
    expect(() => parsePublicKeyBlob(make())).toThrow(error)
  })
})

describe("parseOpenSshPrivateKey rejects", () => {
  const key = generateSshKey("ssh-ed25519")

  it("a PKCS#8 PEM", () => {
    const pem = key.key.export({ format: "pem", type: "pkcs8" }).toString()
    expect(() => parseOpenSshPrivateKey(pem)).toThrow(SshKeyError)
  })

  it("differing check-ints", () => {
    const bin = binary(encodeOpenSshPrivateKey(key))
    const r = new SshReader(bin, 15)
    r.string()
    r.string()
    r.bytes()
    r.uint32()
    r.bytes()
    const at = r.offset + 4
    bin[at]! ^= 1
    expect(() => parseOpenSshPrivateKey(armor(bin))).toThrow(/check-ints/)
  })

  it("a private key whose envelope holds another key's public half", () => {
    for (const type of ["ssh-ed25519", "ssh-rsa"] as const) {
      const a = generateSshKey(type, 1024)
      const b = generateSshKey(type, 1024)
      const bin = binary(encodeOpenSshPrivateKey(a))
      const r = new SshReader(bin, 15)
      r.string()
      r.string()
      r.bytes()
      r.uint32()
      const start = r.offset
      r.bytes()
      const swapped = armor(Buffer.concat([bin.subarray(0, start), new SshWriter().bytes(b.publicBlob).toBuffer(), bin.subarray(r.offset)]))
      expect(() => parseOpenSshPrivateKey(swapped)).toThrow(SshKeyError)
    }
  })
})

describe("signatureAlgorithmFor", () => {
  it.each<[string, SignatureAlgorithm | undefined]>([
    ["rsa-sha2-256-cert-v01@openssh.com", "rsa-sha2-256"],
    ["rsa-sha2-512-cert-v01@openssh.com", "rsa-sha2-512"],
    ["ssh-rsa-cert-v01@openssh.com", "ssh-rsa"],
    ["ssh-ed25519-cert-v01@openssh.com", "ssh-ed25519"],
    ["ssh-rsa", "ssh-rsa"],
    ["rsa-sha2-256", "rsa-sha2-256"],
    ["rsa-sha2-512", "rsa-sha2-512"],
    ["ssh-ed25519", "ssh-ed25519"],
    ["ecdsa-sha2-nistp256", undefined],
    ["toString", undefined],
    ["", undefined]
  ])("%s -> %s", (name, expected) => {
    expect(signatureAlgorithmFor(name)).toBe(expected)
  })
})

describe("parsers on hostile input (property)", () => {
  const keys: Record<PublicKeyAlgorithm, SshPrivateKey> = {
    "ssh-rsa": generateSshKey("ssh-rsa", 1024),
    "ssh-ed25519": generateSshKey("ssh-ed25519")
  }
  const typeArb = fc.constantFrom<PublicKeyAlgorithm>("ssh-rsa", "ssh-ed25519")

  it("parsePublicKeyBlob: random bytes", () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 600 }), (b) => onlyOurErrors(() => parsePublicKeyBlob(b))), { numRuns: 500 })
  })

  it("parsePublicKeyBlob: random bytes behind a valid type string", () => {
    fc.assert(
      fc.property(typeArb, fc.uint8Array({ maxLength: 300 }), (type, tail) =>
        onlyOurErrors(() => parsePublicKeyBlob(Buffer.concat([new SshWriter().string(type).toBuffer(), tail])))
      ),
      { numRuns: 500 }
    )
  })

  it("parsePublicKeyBlob: mutated valid blobs", () => {
    fc.assert(
      fc.property(typeArb, mutationsArb, (type, ms) => onlyOurErrors(() => parsePublicKeyBlob(mutate(keys[type].publicBlob, ms)))),
      { numRuns: 500 }
    )
  })

  it("parseAuthorizedKeyLine: random strings and mutated lines", () => {
    fc.assert(fc.property(fc.string({ maxLength: 300 }), (s) => onlyOurErrors(() => parseAuthorizedKeyLine(s))), { numRuns: 500 })
    fc.assert(
      fc.property(typeArb, mutationsArb, (type, ms) => {
        const line = Buffer.from(formatAuthorizedKeyLine(type, keys[type].publicBlob, "comment") + "\n")
        return onlyOurErrors(() => parseAuthorizedKeyLine(mutate(line, ms).toString("latin1")))
      }),
      { numRuns: 500 }
    )
  })

  it("parseOpenSshPrivateKey: random bodies", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 1200 }), (b) => onlyOurErrors(() => parseOpenSshPrivateKey(armor(b)))),
      { numRuns: 300 }
    )
    const magic = Buffer.from("openssh-key-v1\0")
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 1200 }), (b) => onlyOurErrors(() => parseOpenSshPrivateKey(armor(Buffer.concat([magic, b]))))),
      { numRuns: 300 }
    )
    fc.assert(fc.property(fc.string({ maxLength: 300 }), (s) => onlyOurErrors(() => parseOpenSshPrivateKey(s))), { numRuns: 300 })
  })

  it("parseOpenSshPrivateKey: mutated valid keys (binary and text)", () => {
    const pems = { "ssh-rsa": encodeOpenSshPrivateKey(keys["ssh-rsa"]), "ssh-ed25519": encodeOpenSshPrivateKey(keys["ssh-ed25519"]) }
    fc.assert(
      fc.property(typeArb, mutationsArb, (type, ms) => onlyOurErrors(() => parseOpenSshPrivateKey(armor(mutate(binary(pems[type]), ms))))),
      { numRuns: 400 }
    )
    fc.assert(
      fc.property(typeArb, mutationsArb, (type, ms) =>
        onlyOurErrors(() => parseOpenSshPrivateKey(mutate(Buffer.from(pems[type]), ms).toString("latin1")))
      ),
      { numRuns: 400 }
    )
  })

})
