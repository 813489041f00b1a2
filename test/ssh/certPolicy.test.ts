/**
 * checkGatewayCertificate (protocol.md §4.1, checklist 6-15) on certificates minted by ssh-keygen
 * the way the Infisical backend does (RSA CA, key id client-<relay>, principals [id, name]);
 * signCertificate covers what ssh-keygen refuses to make (empty first principal, odd times).
 */
import { execFileSync } from "node:child_process"
import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { checkGatewayCertificate, type CertificateVerdict } from "../../src/ssh/certPolicy.ts"
import {
  CERT_TIME_INFINITY,
  CERT_TYPE_USER,
  parseCertificate,
  signCertificate,
  type CertificateTemplate,
  type SshCertificate
} from "../../src/ssh/certs.ts"
import { parseAuthorizedKeyLine, parseOpenSshPrivateKey, publicKeyOf, type SshPrivateKey } from "../../src/ssh/keys.ts"
import { SshReader, SshWriter } from "../../src/ssh/wire.ts"

let dir = ""
let counter = 0
const tmpBase = (name: string): string => path.join(dir, `${counter++}-${name}`)

const keygen = (...args: ReadonlyArray<string>): string =>
  execFileSync("ssh-keygen", args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] })

interface KeygenKey {
  readonly file: string
  readonly key: SshPrivateKey
}

const sshKeygenKey = (type: "rsa" | "ed25519"): KeygenKey => {
  const file = tmpBase(type)
  keygen("-q", "-t", type, ...(type === "rsa" ? ["-b", "2048"] : []), "-N", "", "-C", "k", "-f", file)
  return { file, key: parseOpenSshPrivateKey(fs.readFileSync(file, "utf8")) }
}

const T0 = BigInt(Date.UTC(2025, 0, 1) / 1000)
const T1 = T0 + 86_400n
const NOW = new Date(Number(T0 + 3_600n) * 1000)
const RELAY = "relay"

let ca: KeygenKey // the relay's SSH client CA (ssh.clientCAPublicKey)
let otherCa: KeygenKey
let gateway: KeygenKey // the gateway's key pair

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "ssh-certpolicy-test-"))
  ca = sshKeygenKey("rsa")
  otherCa = sshKeygenKey("rsa")
  gateway = sshKeygenKey("rsa")
})
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

/** Have ssh-keygen sign the gateway key; defaults mirror the backend's gateway certificate. */
const mint = (opts: { signer?: KeygenKey; keyId?: string; principals?: string; extra?: ReadonlyArray<string> } = {}): SshCertificate => {
  const base = tmpBase("gw")
  fs.copyFileSync(gateway.file + ".pub", base + ".pub")
  const principals = opts.principals ?? "gw-id,gw-name"
  keygen(
    "-q",
    "-s",
    (opts.signer ?? ca).file,
    "-I",
    opts.keyId ?? `client-${RELAY}`,
    ...(principals === "" ? [] : ["-n", principals]),
    "-V",
    `0x${T0.toString(16)}:0x${T1.toString(16)}`,
    ...(opts.extra ?? []),
    base + ".pub"
  )
  return parseCertificate(parseAuthorizedKeyLine(fs.readFileSync(base + "-cert.pub", "utf8")).blob)
}

/** Our own signer, for certificates ssh-keygen will not produce. */
const issue = (t: Partial<CertificateTemplate>): SshCertificate =>
  parseCertificate(
    signCertificate(
      publicKeyOf(gateway.key),
      { certType: CERT_TYPE_USER, keyId: `client-${RELAY}`, principals: ["gw-id", "gw-name"], validAfter: T0, validBefore: T1, ...t },
      ca.key
    )
  )

const check = (certificate: SshCertificate, over: { username?: string; now?: Date; relayName?: string } = {}): CertificateVerdict =>
  checkGatewayCertificate({
    username: over.username ?? "gw-id",
    certificate,
    relayName: over.relayName ?? RELAY,
    clientCaPublicKey: ca.key.publicBlob,
    now: over.now ?? NOW
  })

const rsaFields = (blob: Buffer): [Buffer, Buffer] => {
  const r = new SshReader(blob)
  r.string()
  return [Buffer.from(r.mpintBytes()), Buffer.from(r.mpintBytes())]
}

const rejected = (reason: string): CertificateVerdict => ({ ok: false, reason })
const atSecond = (s: bigint, plusMs = 0): Date => new Date(Number(s) * 1000 + plusMs)

describe("accepted", () => {
  it("an org relay gateway cert: principals [id, name] (checklist 14)", () => {
    expect(check(mint())).toEqual({ ok: true, identity: { gatewayId: "gw-id", gatewayName: "gw-name" } })
  })

  it("an instance relay gateway cert: principals [id] gives an empty name (checklist 15)", () => {
    expect(check(mint({ principals: "gw-id" }))).toEqual({ ok: true, identity: { gatewayId: "gw-id", gatewayName: "" } })
  })

  it.each(["rsa-sha2-256", "rsa-sha2-512", "ssh-rsa"])("a CA signature made with %s", (alg) => {
    expect(check(mint({ extra: ["-t", alg] })).ok).toBe(true)
  })

  it("a source-address critical option (skipped, as Go's CertChecker does)", () => {
    expect(check(mint({ extra: ["-O", "source-address=10.0.0.0/8"] })).ok).toBe(true)
  })

  it("a certificate valid forever", () => {
    expect(check(mint({ extra: ["-V", "always:forever"] }), { now: new Date("2100-01-01T00:00:00Z") }).ok).toBe(true)
  })

  it("at the edges of the window: ValidAfter <= now < ValidBefore (whole seconds)", () => {
    const cert = mint()
    expect(check(cert, { now: atSecond(T0) }).ok).toBe(true)
    expect(check(cert, { now: atSecond(T1, -1) }).ok).toBe(true)
  })

  it("a username that is the second principal (as Go); the identity still comes from principal[0]", () => {
    expect(check(mint(), { username: "gw-name" })).toEqual({ ok: true, identity: { gatewayId: "gw-id", gatewayName: "gw-name" } })
  })
})

describe("rejected", () => {
  it("a host certificate (checklist 8)", () => {
    expect(check(mint({ extra: ["-h"] }))).toEqual(rejected("invalid certificate type: 2"))
  })

  it("a force-command critical option (checklist 13)", () => {
    expect(check(mint({ extra: ["-O", "force-command=/bin/true", "-O", "source-address=10.0.0.0/8"] }))).toEqual(
      rejected('certificate check failed: ssh: unsupported critical option "force-command" in certificate')
    )
  })

  it("a username that is not a principal (checklist 10)", () => {
    expect(check(mint(), { username: "other-gateway" })).toEqual(
      rejected(
        'certificate check failed: ssh: principal "other-gateway" not in the set of valid principals for given certificate: ["gw-id" "gw-name"]'
      )
    )
  })

  it("a certificate that is not yet valid (checklist 12)", () => {
    expect(check(mint(), { now: atSecond(T0, -1) })).toEqual(rejected("certificate check failed: ssh: cert is not yet valid"))
  })

  it("an expired certificate (checklist 12)", () => {
    expect(check(mint(), { now: atSecond(T1) })).toEqual(rejected("certificate check failed: ssh: cert has expired"))
  })

  it("times at or past 2^63 the way Go's int64 comparison treats them", () => {
    expect(check(issue({ validAfter: 1n << 63n, validBefore: CERT_TIME_INFINITY }))).toEqual(
      rejected("certificate check failed: ssh: cert is not yet valid")
    )
    expect(check(issue({ validAfter: 0n, validBefore: CERT_TIME_INFINITY - 1n }))).toEqual(
      rejected("certificate check failed: ssh: cert has expired")
    )
  })

  it("a certificate whose signature does not verify", () => {
    const good = mint({ keyId: `client-${RELAY}` })
    // Swap one byte of the key id inside the signed part: still well-formed, signature broken.
    const blob = Buffer.from(good.blob)
    const at = blob.indexOf(`client-${RELAY}`)
    blob[at] = "C".charCodeAt(0)
    expect(check(parseCertificate(blob))).toEqual(rejected("certificate check failed: ssh: certificate signature does not verify"))
  })

  it("a certificate signed by another CA (checklist 7)", () => {
    expect(check(mint({ signer: otherCa }))).toEqual(rejected("certificate check failed: ssh: certificate signed by unrecognized authority"))
  })

  it("a self-signed certificate with the right key id and principals (accepted by the Go relay)", () => {
    expect(check(mint({ signer: gateway }))).toEqual(rejected("certificate check failed: ssh: certificate signed by unrecognized authority"))
  })

  it("an empty principal list (checklist 11)", () => {
    expect(check(mint({ principals: "" }))).toEqual(rejected("gateway id is required"))
  })

  it("an empty first principal (checklist 11; ssh-keygen refuses to make one)", () => {
    expect(check(issue({ principals: ["", "gw-name"] }), { username: "gw-name" })).toEqual(rejected("gateway id is required"))
  })

  it("a wrong key id (checklist 9)", () => {
    expect(check(mint({ keyId: "client-other-relay" }))).toEqual(rejected("certificate Key ID does not match expected value"))
    expect(check(mint(), { relayName: "other-relay" })).toEqual(rejected("certificate Key ID does not match expected value"))
  })
})

describe("order of checks (first failure wins, as in the Go relay)", () => {
  it("cert type before everything", () => {
    expect(check(mint({ signer: otherCa, keyId: "x", extra: ["-h", "-O", "force-command=x"] }), { username: "nobody" })).toEqual(
      rejected("invalid certificate type: 2")
    )
  })

  it("critical options before principals, principals before time", () => {
    const late = { username: "nobody", now: atSecond(T1) }
    expect(check(mint({ extra: ["-O", "force-command=x"] }), late)).toEqual(
      rejected('certificate check failed: ssh: unsupported critical option "force-command" in certificate')
    )
    expect(check(mint(), late)).toEqual(
      rejected('certificate check failed: ssh: principal "nobody" not in the set of valid principals for given certificate: ["gw-id" "gw-name"]')
    )
  })

  it("time before signature, signature before CA, CA before gateway id and key id", () => {
    expect(check(mint({ signer: otherCa, principals: "", keyId: "x" }), { now: atSecond(T1) })).toEqual(
      rejected("certificate check failed: ssh: cert has expired")
    )
    expect(check(mint({ signer: otherCa, principals: "", keyId: "x" }))).toEqual(
      rejected("certificate check failed: ssh: certificate signed by unrecognized authority")
    )
    expect(check(mint({ principals: "", keyId: "x" }))).toEqual(rejected("gateway id is required"))
  })

  it("a forged certificate fails on its signature even when it names the right CA", () => {
    // Claims the relay's CA as signer but is signed by another key.
    const forged = signCertificate(
      publicKeyOf(gateway.key),
      { certType: CERT_TYPE_USER, keyId: `client-${RELAY}`, principals: ["gw-id"], validAfter: T0, validBefore: T1 },
      { ...otherCa.key, publicBlob: ca.key.publicBlob }
    )
    expect(check(parseCertificate(forged))).toEqual(rejected("certificate check failed: ssh: certificate signature does not verify"))
  })

  it("clientCaPublicKey is compared as a blob, byte for byte", () => {
    // The same RSA key with a non-minimal exponent encoding is a different blob: refused.
    const [e, n] = rsaFields(ca.key.publicBlob)
    const reencoded = new SshWriter().string("ssh-rsa").bytes(Buffer.concat([Buffer.from([0]), e])).bytes(n).toBuffer()
    expect(reencoded.equals(ca.key.publicBlob)).toBe(false)
    const input = { username: "gw-id", certificate: mint(), relayName: RELAY, now: NOW }
    expect(checkGatewayCertificate({ ...input, clientCaPublicKey: ca.key.publicBlob }).ok).toBe(true)
    expect(checkGatewayCertificate({ ...input, clientCaPublicKey: reencoded })).toEqual(
      rejected("certificate check failed: ssh: certificate signed by unrecognized authority")
    )
  })
})
