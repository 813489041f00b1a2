/**
 * certs.ts against OpenSSH's ssh-keygen: certificates it issues parse to the right fields and
 * verify; certificates we issue are accepted by `ssh-keygen -L` (which checks the CA signature);
 * any tampering with the signed part fails; the parser survives hostile input.
 */
import { execFileSync } from "node:child_process"
import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import fc from "fast-check"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  CERT_TIME_INFINITY,
  CERT_TYPE_HOST,
  CERT_TYPE_USER,
  isCertificateAlgorithm,
  parseCertificate,
  signCertificate,
  verifyCertificateSignature,
  type CertificateTemplate,
  type SshCertificate
} from "../../src/ssh/certs.ts"
import {
  fingerprintSha256,
  formatAuthorizedKeyLine,
  generateSshKey,
  parseAuthorizedKeyLine,
  parseOpenSshPrivateKey,
  parsePublicKeyBlob,
  publicKeyOf,
  SshKeyError,
  type SignatureAlgorithm,
  type SshPrivateKey
} from "../../src/ssh/keys.ts"
import { SshReader, SshWireError, SshWriter } from "../../src/ssh/wire.ts"

let dir = ""
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "ssh-certs-test-"))
})
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

const keygen = (...args: ReadonlyArray<string>): string =>
  execFileSync("ssh-keygen", args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, TZ: "UTC" } })

let counter = 0
const tmpBase = (name: string): string => path.join(dir, `${counter++}-${name}`)

interface KeygenKey {
  readonly file: string
  readonly key: SshPrivateKey
  readonly pubBlob: Buffer
}

const sshKeygenKey = (type: "rsa" | "ed25519"): KeygenKey => {
  const file = tmpBase(type)
  keygen("-q", "-t", type, ...(type === "rsa" ? ["-b", "2048"] : []), "-N", "", "-C", "k", "-f", file)
  return {
    file,
    key: parseOpenSshPrivateKey(fs.readFileSync(file, "utf8")),
    pubBlob: parseAuthorizedKeyLine(fs.readFileSync(file + ".pub", "utf8")).blob
  }
}

/** Have ssh-keygen certify `subject` with `ca` (a fresh copy of the .pub so certs don't collide). */
const certify = (ca: KeygenKey, subject: KeygenKey, ...args: ReadonlyArray<string>): Buffer => {
  const base = tmpBase("subject")
  fs.copyFileSync(subject.file + ".pub", base + ".pub")
  keygen("-q", "-s", ca.file, ...args, base + ".pub")
  return parseAuthorizedKeyLine(fs.readFileSync(base + "-cert.pub", "utf8")).blob
}

/** `ssh-keygen -L` of a certificate blob. */
const keygenList = (cert: SshCertificate): string => {
  const file = tmpBase("x-cert.pub")
  fs.writeFileSync(file, formatAuthorizedKeyLine(cert.type, cert.blob, "ours") + "\n")
  return keygen("-L", "-f", file)
}

const signatureAlgorithmOf = (cert: SshCertificate): string => new SshReader(cert.signature).string()
const sshString = (s: string): Buffer => new SshWriter().string(s).toBuffer()

const T0 = BigInt(Date.UTC(2025, 0, 1) / 1000) // 2025-01-01T00:00:00Z
const T1 = T0 + 86_400n
const window = `-V 0x${T0.toString(16)}:0x${T1.toString(16)}`.split(" ")

const DEFAULT_USER_EXTENSIONS = [
  "permit-X11-forwarding",
  "permit-agent-forwarding",
  "permit-port-forwarding",
  "permit-pty",
  "permit-user-rc"
]

let rsaCa: KeygenKey
let edCa: KeygenKey
let rsaUser: KeygenKey
let edUser: KeygenKey
beforeAll(() => {
  rsaCa = sshKeygenKey("rsa")
  edCa = sshKeygenKey("ed25519")
  rsaUser = sshKeygenKey("rsa")
  edUser = sshKeygenKey("ed25519")
})

describe("certificates issued by ssh-keygen", () => {
  it("a gateway user certificate parses to the right fields and verifies", () => {
    const blob = certify(rsaCa, edUser, "-I", "client-relay", "-n", "gw-id,gw-name", ...window, "-z", "12345")
    const cert = parseCertificate(blob)
    expect(cert.type).toBe("ssh-ed25519-cert-v01@openssh.com")
    expect(cert.blob.equals(blob)).toBe(true)
    expect(cert.nonce.length).toBe(32)
    expect(cert.publicKey.type).toBe("ssh-ed25519")
    expect(cert.publicKey.blob.equals(edUser.pubBlob)).toBe(true)
    expect(cert.serial).toBe(12345n)
    expect(cert.certType).toBe(CERT_TYPE_USER)
    expect(cert.keyId).toBe("client-relay")
    expect(cert.principals).toEqual(["gw-id", "gw-name"])
    expect(cert.validAfter).toBe(T0)
    expect(cert.validBefore).toBe(T1)
    expect(cert.criticalOptions).toEqual([])
    expect(cert.extensions.map(([n]) => n)).toEqual(DEFAULT_USER_EXTENSIONS)
    expect(cert.extensions.every(([, v]) => v.length === 0)).toBe(true)
    expect(cert.signatureKey.equals(rsaCa.pubBlob)).toBe(true)
    expect(signatureAlgorithmOf(cert)).toBe("rsa-sha2-512") // ssh-keygen's default for RSA CAs
    expect(Buffer.concat([cert.signedData, new SshWriter().bytes(cert.signature).toBuffer()]).equals(blob)).toBe(true)
    expect(verifyCertificateSignature(cert)).toBe(true)
  })

  it("an RSA user key certificate carries the RSA key", () => {
    const cert = parseCertificate(certify(edCa, rsaUser, "-I", "client-relay", "-n", "gw-id"))
    expect(cert.type).toBe("ssh-rsa-cert-v01@openssh.com")
    expect(cert.publicKey.type).toBe("ssh-rsa")
    expect(cert.publicKey.blob.equals(rsaUser.pubBlob)).toBe(true)
    expect(cert.publicKey.key.asymmetricKeyDetails?.modulusLength).toBe(2048)
    expect(signatureAlgorithmOf(cert)).toBe("ssh-ed25519")
    expect(verifyCertificateSignature(cert)).toBe(true)
  })

  it("a host certificate (-h) like the relay's", () => {
    const cert = parseCertificate(certify(rsaCa, rsaUser, "-h", "-I", "relay-server", "-n", "relay.example.com:2222", ...window))
    expect(cert.certType).toBe(CERT_TYPE_HOST)
    expect(cert.keyId).toBe("relay-server")
    expect(cert.principals).toEqual(["relay.example.com:2222"])
    expect(cert.criticalOptions).toEqual([])
    expect(cert.extensions).toEqual([])
    expect(verifyCertificateSignature(cert)).toBe(true)
  })

  it("critical options keep their raw (string-wrapped) values; extensions can be chosen", () => {
    const cert = parseCertificate(
      certify(rsaCa, edUser, "-I", "k", "-n", "p", "-O", "clear", "-O", "source-address=10.0.0.0/8", "-O", "force-command=x", "-O", "permit-pty")
    )
    expect(cert.criticalOptions).toEqual([
      ["force-command", sshString("x")],
      ["source-address", sshString("10.0.0.0/8")]
    ])
    expect(cert.extensions).toEqual([["permit-pty", Buffer.alloc(0)]])
    expect(verifyCertificateSignature(cert)).toBe(true)
  })

  it.each(["rsa-sha2-256", "rsa-sha2-512", "ssh-rsa"])("signature algorithm -t %s", (alg) => {
    const cert = parseCertificate(certify(rsaCa, edUser, "-t", alg, "-I", "k", "-n", "p"))
    expect(signatureAlgorithmOf(cert)).toBe(alg)
    expect(verifyCertificateSignature(cert)).toBe(true)
  })

  it("-V always:forever and no principals", () => {
    const cert = parseCertificate(certify(edCa, edUser, "-I", "k", "-V", "always:forever"))
    expect(cert.validAfter).toBe(0n)
    expect(cert.validBefore).toBe(CERT_TIME_INFINITY)
    expect(cert.principals).toEqual([])
    expect(verifyCertificateSignature(cert)).toBe(true)
  })

  it.each([
    ["RSA CA", () => rsaCa],
    ["ed25519 CA", () => edCa]
  ])("any change to a signed byte fails verification (%s)", (_, ca) => {
    const blob = certify(ca(), edUser, "-I", "client-relay", "-n", "gw-id,gw-name", "-O", "source-address=10.0.0.0/8")
    const signedLength = parseCertificate(blob).signedData.length
    for (let i = 0; i < blob.length; i++) {
      const bad = Buffer.from(blob)
      bad[i]! ^= i < signedLength ? 0x01 : 0x80
      let cert: SshCertificate
      try {
        cert = parseCertificate(bad)
      } catch (e) {
        expect(e instanceof SshWireError || e instanceof SshKeyError).toBe(true)
        continue
      }
      expect(verifyCertificateSignature(cert), `byte ${i}`).toBe(false)
    }
  })
})

describe("certificates issued by signCertificate, read by ssh-keygen -L", () => {
  const template: CertificateTemplate = {
    certType: CERT_TYPE_USER,
    keyId: "client-relay",
    principals: ["gw-id", "gw-name"],
    validAfter: T0,
    validBefore: T1,
    serial: 7n,
    criticalOptions: [["source-address", sshString("10.0.0.0/8")]],
    extensions: [
      ["permit-pty", new Uint8Array()],
      ["permit-X11-forwarding", new Uint8Array()]
    ]
  }

  it.each<[string, () => SshPrivateKey, SignatureAlgorithm | undefined, string, string]>([
    ["RSA CA, default algorithm", () => rsaCa.key, undefined, "RSA", "rsa-sha2-512"],
    ["RSA CA, rsa-sha2-256", () => rsaCa.key, "rsa-sha2-256", "RSA", "rsa-sha2-256"],
    ["RSA CA, ssh-rsa", () => rsaCa.key, "ssh-rsa", "RSA", "ssh-rsa"],
    ["ed25519 CA", () => edCa.key, undefined, "ED25519", "ssh-ed25519"],
    ["CA generated by us", () => generateSshKey("ssh-rsa", 2048), undefined, "RSA", "rsa-sha2-512"]
  ])("%s", (_, getCa, alg, caKind, usedAlg) => {
    const ca = getCa()
    const cert = parseCertificate(signCertificate(parsePublicKeyBlob(rsaUser.pubBlob), template, ca, alg))
    expect(verifyCertificateSignature(cert)).toBe(true)
    expect(cert.keyId).toBe("client-relay")
    expect(cert.principals).toEqual(["gw-id", "gw-name"])
    expect(cert.signatureKey.equals(ca.publicBlob)).toBe(true)
    // Options come out sorted, as PROTOCOL.certkeys requires.
    expect(cert.extensions.map(([n]) => n)).toEqual(["permit-X11-forwarding", "permit-pty"])

    const listing = keygenList(cert)
    expect(listing).toContain("Type: ssh-rsa-cert-v01@openssh.com user certificate")
    expect(listing).toContain(`Public key: RSA-CERT ${fingerprintSha256(rsaUser.pubBlob)}`)
    expect(listing).toContain(`Signing CA: ${caKind} ${fingerprintSha256(ca.publicBlob)} (using ${usedAlg})`)
    expect(listing).toContain('Key ID: "client-relay"')
    expect(listing).toContain("Serial: 7")
    expect(listing).toContain("Valid: from 2025-01-01T00:00:00 to 2025-01-02T00:00:00")
    expect(listing).toMatch(/Principals: \n\s+gw-id\n\s+gw-name\n/)
    expect(listing).toMatch(/Critical Options: \n\s+source-address 10\.0\.0\.0\/8\n/)
    expect(listing).toMatch(/Extensions: \n\s+permit-X11-forwarding\n\s+permit-pty\n/)
  })

  it("host certificates for ed25519 keys, valid forever", () => {
    const blob = signCertificate(
      parsePublicKeyBlob(edUser.pubBlob),
      { certType: CERT_TYPE_HOST, keyId: "relay-server", principals: ["10.1.2.3:2222"], validAfter: 0n, validBefore: CERT_TIME_INFINITY },
      rsaCa.key
    )
    const cert = parseCertificate(blob)
    expect(cert.serial).toBe(0n)
    expect(verifyCertificateSignature(cert)).toBe(true)
    const listing = keygenList(cert)
    expect(listing).toContain("Type: ssh-ed25519-cert-v01@openssh.com host certificate")
    expect(listing).toContain("Valid: forever")
    expect(listing).toMatch(/Principals: \n\s+10\.1\.2\.3:2222\n/)
    expect(listing).toContain("Critical Options: (none)")
  })

  it("ssh-keygen -L refuses one of our certificates once a signed byte changes (so -L checks signatures)", () => {
    const blob = signCertificate(publicKeyOf(edUser.key), { ...template, keyId: "client-relaz" }, rsaCa.key)
    const cert = parseCertificate(blob)
    const bad = Buffer.from(blob)
    const at = bad.indexOf("client-relaz")
    bad[at + 11] = "y".charCodeAt(0)
    const badCert = parseCertificate(bad)
    expect(badCert.keyId).toBe("client-relay")
    expect(verifyCertificateSignature(badCert)).toBe(false)
    expect(keygenList(cert)).toContain('Key ID: "client-relaz"')
    expect(() => keygenList(badCert)).toThrow()
  })
})

describe("parseCertificate strictness", () => {
  const base: CertificateTemplate = { certType: CERT_TYPE_USER, keyId: "k", principals: ["p"], validAfter: 0n, validBefore: CERT_TIME_INFINITY }
  const issue = (t: Partial<CertificateTemplate>): Buffer => signCertificate(publicKeyOf(edUser.key), { ...base, ...t }, edCa.key)

  it("accepts the limits: 256 principals of 1 KiB", () => {
    const principals = Array.from({ length: 256 }, (_, i) => String(i).padStart(1024, "x"))
    const cert = parseCertificate(issue({ principals }))
    expect(cert.principals).toEqual(principals)
    expect(verifyCertificateSignature(cert)).toBe(true)
  })

  it.each<[string, () => Uint8Array]>([
    ["trailing bytes", () => Buffer.concat([issue({}), Buffer.from([0])])],
    ["257 principals", () => issue({ principals: Array.from({ length: 257 }, (_, i) => `p${i}`) })],
    ["a principal over 1 KiB", () => issue({ principals: ["x".repeat(1025)] })],
    ["cert type 3", () => issue({ certType: 3 })],
    ["a non-UTF-8 principal", () => {
      const blob = issue({ principals: ["AAAA"] })
      blob.set([0xff, 0xfe, 0xfd, 0xfc], blob.indexOf("AAAA"))
      return blob
    }],
    ["an unsupported certificate type name", () => {
      const blob = issue({})
      const r = new SshReader(blob)
      r.string()
      return Buffer.concat([sshString("ssh-dss-cert-v01@openssh.com"), blob.subarray(r.offset)])
    }],
    ["a certificate as the CA key", () =>
      signCertificate(publicKeyOf(edUser.key), base, { ...edCa.key, publicBlob: issue({}) })],
    ["a truncated signature field", () => issue({}).subarray(0, -1)]
  ])("rejects %s", (_, make) => {
    let thrown: unknown
    try {
      parseCertificate(make())
    } catch (e) {
      thrown = e
    }
    expect(thrown instanceof SshWireError || thrown instanceof SshKeyError, String(thrown)).toBe(true)
  })
})

describe("isCertificateAlgorithm", () => {
  it.each([
    ["ssh-rsa-cert-v01@openssh.com", true],
    ["rsa-sha2-256-cert-v01@openssh.com", true],
    ["rsa-sha2-512-cert-v01@openssh.com", true],
    ["ssh-ed25519-cert-v01@openssh.com", true],
    ["ssh-rsa", false],
    ["rsa-sha2-256", false],
    ["ecdsa-sha2-nistp256-cert-v01@openssh.com", false],
    ["", false]
  ])("%s -> %s", (name, expected) => {
    expect(isCertificateAlgorithm(name)).toBe(expected)
  })
})

describe("parseCertificate on hostile input (property)", () => {
  type Mutation =
    | { readonly kind: "flip"; readonly at: number; readonly bit: number }
    | { readonly kind: "set"; readonly at: number; readonly value: number }
    | { readonly kind: "truncate"; readonly at: number }
    | { readonly kind: "insert"; readonly at: number; readonly bytes: Uint8Array }
    | { readonly kind: "extend"; readonly bytes: Uint8Array }

  const mutationsArb = fc.array(
    fc.oneof(
      fc.record({ kind: fc.constant("flip" as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
      fc.record({ kind: fc.constant("set" as const), at: fc.nat(), value: fc.constantFrom(0, 1, 0x7f, 0x80, 0xff) }),
      fc.record({ kind: fc.constant("truncate" as const), at: fc.nat() }),
      fc.record({ kind: fc.constant("insert" as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }) }),
      fc.record({ kind: fc.constant("extend" as const), bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }) })
    ) as fc.Arbitrary<Mutation>,
    { minLength: 1, maxLength: 3 }
  )

  const mutate = (input: Uint8Array, mutations: ReadonlyArray<Mutation>): Buffer => {
    let b = Buffer.from(input)
    for (const m of mutations) {
      const at = b.length === 0 || m.kind === "extend" ? 0 : m.at % b.length
      if (m.kind === "flip" && b.length > 0) b[at] = b[at]! ^ (1 << m.bit)
      else if (m.kind === "set" && b.length > 0) b[at] = m.value
      else if (m.kind === "truncate") b = b.subarray(0, at)
      else if (m.kind === "insert") b = Buffer.concat([b.subarray(0, at), m.bytes, b.subarray(at)])
      else if (m.kind === "extend") b = Buffer.concat([b, m.bytes])
    }
    return b
  }

  /** Parse; on success the signature check must not throw either. */
  const survives = (blob: Uint8Array): boolean => {
    try {
      verifyCertificateSignature(parseCertificate(blob))
      return true
    } catch (e) {
      if (e instanceof SshWireError || e instanceof SshKeyError) return true
      throw e
    }
  }

  const certTypeName = fc.constantFrom("ssh-rsa-cert-v01@openssh.com", "ssh-ed25519-cert-v01@openssh.com")

  it("random bytes", () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 1500 }), survives), { numRuns: 500 })
  })

  it("random bytes behind a valid certificate type", () => {
    fc.assert(
      fc.property(certTypeName, fc.uint8Array({ maxLength: 1500 }), (name, tail) => survives(Buffer.concat([sshString(name), tail]))),
      { numRuns: 500 }
    )
  })

  it("mutations of certificates from ssh-keygen and from signCertificate", () => {
    const valid = [
      certify(rsaCa, edUser, "-I", "client-relay", "-n", "gw-id,gw-name", "-O", "source-address=10.0.0.0/8"),
      certify(edCa, rsaUser, "-h", "-I", "relay-server", "-n", "h:2222"),
      signCertificate(publicKeyOf(rsaUser.key), { certType: 1, keyId: "k", principals: ["a", "b"], validAfter: 1n, validBefore: 2n }, rsaCa.key, "ssh-rsa")
    ]
    fc.assert(
      fc.property(fc.constantFrom(...valid), mutationsArb, (blob, ms) => survives(mutate(blob, ms))),
      { numRuns: 1000 }
    )
  })
})
