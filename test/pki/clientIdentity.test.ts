/**
 * The relay's reading of a client certificate (protocol.md §4.2): CN, first O and the .100.3
 * gateway-name extension, on minted certificates, on hand-made edge cases and on hostile bytes.
 */
import { X509Certificate } from "node:crypto"
import { Either } from "effect"
import fc from "fast-check"
import { beforeAll, describe, expect, it } from "vitest"
import {
  ClientIdentityError,
  isHeartbeatProbe,
  parseClientIdentity,
  parseClientIdentityEither,
  type ClientIdentity,
  type GatewayNameField
} from "../../src/pki/clientIdentity.ts"
import { DerCursor, DerError, encodeOid, Tag } from "../../src/pki/der.ts"
import {
  createRelayHierarchy,
  generateRsaKeyPair,
  RELAY_CONNECTING_GATEWAY_INFO_OID,
  x509,
  ZERO_UUID,
  type RelayPki
} from "../../src/pki/mint.ts"

const ORG_ID = "7d3e0c4a-1b2c-4d5e-8f90-a1b2c3d4e5f6"
const GATEWAY_ID = "2b8e6c1d-3f4a-4b5c-9d6e-7f8091a2b3c4"
const OID = RELAY_CONNECTING_GATEWAY_INFO_OID

let pki: RelayPki
let clientDer: Uint8Array
let heartbeatDer: Uint8Array
let serverDer: Uint8Array
let spki: ArrayBuffer

const derOf = (pem: string): Uint8Array => new Uint8Array(new X509Certificate(pem).raw)

beforeAll(async () => {
  const hierarchy = await createRelayHierarchy()
  pki = await hierarchy.instance()
  const [client, heartbeat, server, keys] = await Promise.all([
    pki.issueRelayClient({ gatewayId: GATEWAY_ID, gatewayName: "gw-one", orgName: "Acme, Inc.", orgId: ORG_ID }),
    pki.issueHeartbeatClient(),
    pki.issueRelayServer("127.0.0.1"),
    generateRsaKeyPair(2048)
  ])
  clientDer = derOf(client.clientCertificate)
  heartbeatDer = derOf(heartbeat.clientCertificate)
  serverDer = derOf(server.serverCertificate)
  spki = await x509.cryptoProvider.get().subtle.exportKey("spki", keys.publicKey)
})

type NameSpec = ConstructorParameters<typeof x509.Name>[0]

/**
 * A structurally valid certificate with an arbitrary subject and extensions, and a dummy
 * signature: the parser only reads structure, and skipping RSA keeps property tests fast.
 */
const fakeCert = async (subject: NameSpec, extensions: ReadonlyArray<x509.Extension> = []): Promise<Uint8Array> => {
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: "01",
    subject: new x509.Name(subject),
    issuer: "CN=Fake CA",
    notBefore: new Date(),
    notAfter: new Date(Date.now() + 60_000),
    publicKey: spki,
    signature: new Uint8Array(256),
    signingAlgorithm: { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" },
    extensions: [...extensions]
  })
  return new Uint8Array(cert.rawData)
}

const rawExtension = (value: Uint8Array | string, critical = false): x509.Extension =>
  new x509.Extension(OID, critical, typeof value === "string" ? Buffer.from(value, "utf8") : value)

const clientSubject: NameSpec = [{ O: ["acme-org"] }, { OU: ["relay-client"] }, { CN: ["gw-id"] }]

const nameOf = async (value: Uint8Array | string, critical = false): Promise<GatewayNameField> =>
  parseClientIdentity(await fakeCert(clientSubject, [rawExtension(value, critical)])).gatewayName

/** Parse that must end in a result or a ClientIdentityError, nothing else. */
const parseOrTypedError = (der: Uint8Array): ClientIdentity | ClientIdentityError => {
  try {
    return parseClientIdentity(der)
  } catch (e) {
    if (e instanceof ClientIdentityError) return e
    throw e
  }
}

describe("minted certificates", () => {
  it("relay client: CN = gateway id, first O = org label, .100.3 name", () => {
    expect(parseClientIdentity(clientDer)).toEqual({
      gatewayId: GATEWAY_ID,
      orgLabel: `Acme, Inc.-${ORG_ID}`,
      gatewayName: { _tag: "Valid", name: "gw-one" }
    })
    expect(isHeartbeatProbe(parseClientIdentity(clientDer))).toBe(false)
  })

  it("heartbeat probe: zero-UUID CN, name heartbeat", () => {
    const id = parseClientIdentity(heartbeatDer)
    expect(id).toEqual({
      gatewayId: ZERO_UUID,
      orgLabel: `heartbeat-${ZERO_UUID}`,
      gatewayName: { _tag: "Valid", name: "heartbeat" }
    })
    expect(isHeartbeatProbe(id)).toBe(true)
  })

  it("a certificate without the extension: Absent", () => {
    expect(parseClientIdentity(serverDer)).toEqual({
      gatewayId: "127.0.0.1",
      orgLabel: "Infisical",
      gatewayName: { _tag: "Absent" }
    })
  })

  it("agrees with @peculiar/x509 and Node's X509Certificate on the minted certificates", () => {
    for (const der of [clientDer, heartbeatDer, serverDer]) {
      const id = parseClientIdentity(der)
      const cert = new x509.X509Certificate(der)
      expect(id.gatewayId).toBe(cert.subjectName.getField("CN").at(-1))
      expect(id.orgLabel).toBe(cert.subjectName.getField("O")[0])
      const ext = cert.getExtension(OID)
      if (ext) {
        expect(id.gatewayName).toEqual({ _tag: "Valid", name: JSON.parse(Buffer.from(ext.value).toString("utf8")).name })
      } else {
        expect(id.gatewayName).toEqual({ _tag: "Absent" })
      }
      expect(new X509Certificate(der).subject).toContain(`CN=${id.gatewayId}`)
    }
  })

  it("accepts a Buffer (what Node's getPeerX509Certificate().raw returns)", () => {
    expect(parseClientIdentity(Buffer.from(clientDer)).gatewayId).toBe(GATEWAY_ID)
  })

  it("costs a few microseconds per call", () => {
    for (let i = 0; i < 5_000; i++) parseClientIdentity(clientDer)
    const n = 50_000
    const start = process.hrtime.bigint()
    for (let i = 0; i < n; i++) parseClientIdentity(clientDer)
    const micros = Number(process.hrtime.bigint() - start) / n / 1000
    console.log(`parseClientIdentity: ${micros.toFixed(2)} µs/call (${clientDer.length}-byte certificate)`)
    expect(micros).toBeLessThan(100)
  })
})

describe("the .100.3 extension", () => {
  it.each<[string, string, GatewayNameField]>([
    ["a plain name", '{"name":"gw-one"}', { _tag: "Valid", name: "gw-one" }],
    ["extra members", '{"name":"gw","other":[1,{"x":null}]}', { _tag: "Valid", name: "gw" }],
    ["surrounding JSON whitespace", ' \t{"name":"gw"}\r\n', { _tag: "Valid", name: "gw" }],
    ["escaped unicode", '{"name":"g\\u00fcw\\ud83d\\ude00"}', { _tag: "Valid", name: "güw😀" }],
    ["an empty name", '{"name":""}', { _tag: "Valid", name: "" }],
    ["a duplicated key (last wins, as in Go)", '{"name":"a","name":"b"}', { _tag: "Valid", name: "b" }],
    ["not JSON", '{"name":', { _tag: "Invalid", reason: "not JSON" }],
    ["empty bytes", "", { _tag: "Invalid", reason: "not JSON" }],
    ["a BOM", '\ufeff{"name":"gw"}', { _tag: "Invalid", reason: "not JSON" }],
    ["an array", '["gw"]', { _tag: "Invalid", reason: "not a JSON object" }],
    ["null", "null", { _tag: "Invalid", reason: "not a JSON object" }],
    ["a string", '"gw"', { _tag: "Invalid", reason: "not a JSON object" }],
    ["a number name", '{"name":5}', { _tag: "Invalid", reason: "name is not a string" }],
    ["a null name", '{"name":null}', { _tag: "Invalid", reason: "name is not a string" }],
    ["no name", "{}", { _tag: "Invalid", reason: "name is not a string" }],
    ["another case", '{"NAME":"gw"}', { _tag: "Invalid", reason: "name is not a string" }],
    ["a __proto__ member only", '{"__proto__":{"name":"gw"}}', { _tag: "Invalid", reason: "name is not a string" }]
  ])("%s", async (_label, json, expected) => {
    expect(await nameOf(json)).toEqual(expected)
  })

  it("invalid UTF-8 inside the JSON string becomes U+FFFD (as Go's encoding/json)", async () => {
    const bytes = Buffer.concat([Buffer.from('{"name":"a'), Buffer.from([0xff, 0xc3]), Buffer.from('b"}')])
    expect(await nameOf(bytes)).toEqual({ _tag: "Valid", name: "a\ufffd\ufffdb" })
  })

  it("a DER-wrapped value (OCTET STRING inside extnValue) is not the profile: invalid", async () => {
    const json = Buffer.from('{"name":"gw"}')
    expect(await nameOf(Buffer.concat([Buffer.from([0x04, json.length]), json]))).toEqual({
      _tag: "Invalid",
      reason: "not JSON"
    })
  })

  it("marked critical: still read (the BOOLEAN is skipped)", async () => {
    expect(await nameOf('{"name":"gw"}', true)).toEqual({ _tag: "Valid", name: "gw" })
  })

  it("present twice: invalid", async () => {
    const der = await fakeCert(clientSubject, [rawExtension('{"name":"a"}'), rawExtension('{"name":"b"}')])
    expect(parseClientIdentity(der).gatewayName).toEqual({ _tag: "Invalid", reason: "duplicate extension" })
  })

  it("other extensions (including the gateway .100.1/.100.2) are ignored", async () => {
    const der = await fakeCert(clientSubject, [
      new x509.Extension("1.3.6.1.4.1.12345.100.1", false, Buffer.from('{"targetHost":"h","targetPort":1}')),
      new x509.Extension("1.3.6.1.4.1.12345.100.30", false, Buffer.from('{"name":"nope"}')),
      new x509.BasicConstraintsExtension(false)
    ])
    expect(parseClientIdentity(der).gatewayName).toEqual({ _tag: "Absent" })
  })

  it("property: the outcome is exactly JSON.parse's view of the extnValue octets", async () => {
    const model = (bytes: Uint8Array): GatewayNameField => {
      let v: unknown
      try {
        v = JSON.parse(Buffer.from(bytes).toString("utf8"))
      } catch {
        return { _tag: "Invalid", reason: "not JSON" }
      }
      if (typeof v !== "object" || v === null || Array.isArray(v)) return { _tag: "Invalid", reason: "not a JSON object" }
      const name: unknown = Object.hasOwn(v, "name") ? (v as { name: unknown }).name : undefined
      return typeof name === "string" ? { _tag: "Valid", name } : { _tag: "Invalid", reason: "name is not a string" }
    }
    const utf8 = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, "utf8"))
    const value = fc.oneof(
      fc.uint8Array({ maxLength: 64 }),
      fc.json().map(utf8),
      fc.record({ name: fc.string({ unit: "binary" }) }).map((o) => utf8(JSON.stringify(o))),
      fc.dictionary(fc.constantFrom("name", "Name", "x"), fc.jsonValue()).map((o) => utf8(JSON.stringify(o)))
    )
    await fc.assert(
      fc.asyncProperty(value, async (bytes) => {
        expect(await nameOf(bytes)).toEqual(model(bytes))
      }),
      { numRuns: 300 }
    )
  })

  it("property: any gateway name round-trips through a minted-style extension", async () => {
    await fc.assert(
      fc.asyncProperty(fc.string({ unit: "binary", maxLength: 40 }), async (name) => {
        const der = await fakeCert(clientSubject, [rawExtension(JSON.stringify({ name }))])
        expect(parseClientIdentity(der).gatewayName).toEqual({ _tag: "Valid", name })
      }),
      { numRuns: 200 }
    )
  })
})

describe("subject", () => {
  it("several CNs: the last wins (Go's pkix.Name); several Os: the first wins", async () => {
    const der = await fakeCert([{ O: ["first-org"] }, { CN: ["cn-1"] }, { O: ["second-org"] }, { CN: ["cn-2"] }])
    expect(parseClientIdentity(der)).toMatchObject({ gatewayId: "cn-2", orgLabel: "first-org" })
  })

  it("a multi-valued RDN is read like separate RDNs", async () => {
    const der = await fakeCert([{ O: ["org"], CN: ["gw"] }])
    expect(parseClientIdentity(der)).toMatchObject({ gatewayId: "gw", orgLabel: "org" })
  })

  it("no CN / no O / empty subject: undefined", async () => {
    expect(parseClientIdentity(await fakeCert([{ OU: ["relay-client"] }]))).toEqual({
      gatewayId: undefined,
      orgLabel: undefined,
      gatewayName: { _tag: "Absent" }
    })
    expect(parseClientIdentity(await fakeCert([]))).toMatchObject({ gatewayId: undefined, orgLabel: undefined })
    expect(parseClientIdentity(await fakeCert([{ CN: [""] }])).gatewayId).toBe("")
  })

  it("string types: UTF8String, PrintableString, IA5String, BMPString", async () => {
    const cases: ReadonlyArray<[NameSpec, string]> = [
      [[{ CN: [{ utf8String: "gw-é-😀" }] }], "gw-é-😀"],
      [[{ CN: [{ printableString: "gw 1" }] }], "gw 1"],
      [[{ CN: [{ ia5String: "gw@1" }] }], "gw@1"],
      [[{ CN: [{ bmpString: "gw-é" }] }], "gw-é"]
    ]
    for (const [subject, expected] of cases) {
      expect(parseClientIdentity(await fakeCert(subject)).gatewayId).toBe(expected)
    }
  })

  it("property: any CN and O (as Infisical's encoder picks the string type) round-trip", async () => {
    const printable = /^[A-Za-z0-9 '()+,\-./:=?]*$/
    const attr = (v: string) => (printable.test(v) ? { printableString: v } : { utf8String: v })
    await fc.assert(
      fc.asyncProperty(
        fc.string({ unit: "binary", maxLength: 40 }),
        fc.string({ unit: "binary", maxLength: 40 }),
        async (cn, o) => {
          const der = await fakeCert([{ O: [attr(o)] }, { OU: ["relay-client"] }, { CN: [attr(cn)] }])
          expect(parseClientIdentity(der)).toMatchObject({ gatewayId: cn, orgLabel: o })
        }
      ),
      { numRuns: 200 }
    )
  })

  /** Replaces the first occurrence of `from` (same length as `to`) in a copy of `der`. */
  const patch = (der: Uint8Array, from: Uint8Array, to: Uint8Array): Uint8Array => {
    const at = Buffer.from(der).indexOf(Buffer.from(from))
    expect(at).toBeGreaterThan(0)
    const out = Uint8Array.from(der)
    out.set(to, at)
    return out
  }

  it("invalid UTF-8 in a UTF8String CN: typed error", async () => {
    const der = await fakeCert([{ CN: [{ utf8String: "gw-\u00e9" }] }])
    const bad = patch(der, Uint8Array.of(0x67, 0x77, 0x2d, 0xc3, 0xa9), Uint8Array.of(0x67, 0x77, 0x2d, 0xc3, 0x28))
    expect(() => parseClientIdentity(bad)).toThrow(ClientIdentityError)
  })

  it("a non-ASCII byte in a PrintableString O: typed error", async () => {
    const der = await fakeCert([{ O: [{ printableString: "orgX" }] }, { CN: ["gw"] }])
    const bad = patch(der, Buffer.from("orgX"), Uint8Array.of(0x6f, 0x72, 0x67, 0xe9))
    expect(() => parseClientIdentity(bad)).toThrow(/non-ASCII/)
  })

  it("an unsupported string type (UniversalString) for the CN: typed error", async () => {
    const der = await fakeCert([{ CN: [{ universalString: "gw" }] }])
    expect(() => parseClientIdentity(der)).toThrow(/unsupported string type 0x1c/)
  })

  it("an unsupported type in an attribute we do not read is ignored", async () => {
    const der = await fakeCert([{ OU: [{ universalString: "x" }] }, { CN: ["gw"] }])
    expect(parseClientIdentity(der).gatewayId).toBe("gw")
  })
})

// ---------------------------------------------------------------------------------------------
// Hostile input

/** Offsets of every TLV header in a well-formed DER value (test-side, trusted input). */
const headerOffsets = (der: Uint8Array): Array<number> => {
  const out: Array<number> = []
  const stack: Array<DerCursor> = [DerCursor.over(der)]
  while (stack.length > 0) {
    const c = stack.pop()!
    while (c.hasMore()) {
      out.push(c.offset)
      c.next()
      if (c.tag & 0x20) stack.push(c.enter())
    }
  }
  return out
}

type Mutation =
  | { readonly kind: "set"; readonly at: number; readonly value: number }
  | { readonly kind: "truncate"; readonly at: number }
  | { readonly kind: "insert"; readonly at: number; readonly bytes: Uint8Array }
  | { readonly kind: "delete"; readonly at: number; readonly count: number }

const applyMutation = (der: Uint8Array, m: Mutation): Uint8Array => {
  const at = m.at % (der.length + 1)
  switch (m.kind) {
    case "set": {
      if (der.length === 0) return der
      const out = Uint8Array.from(der)
      out[at % der.length] = m.value
      return out
    }
    case "truncate":
      return der.subarray(0, at)
    case "insert":
      return Buffer.concat([der.subarray(0, at), m.bytes, der.subarray(at)])
    case "delete":
      return Buffer.concat([der.subarray(0, at), der.subarray(at + m.count)])
  }
}

const mutationArb = (headers: ReadonlyArray<number>): fc.Arbitrary<Mutation> => {
  const position = fc.oneof(fc.nat(), fc.constantFrom(...headers), fc.constantFrom(...headers).map((h) => h + 1))
  return fc.oneof(
    fc.record({ kind: fc.constant("set" as const), at: position, value: fc.integer({ min: 0, max: 255 }) }),
    fc.record({
      kind: fc.constant("set" as const),
      at: position,
      value: fc.constantFrom(0x00, 0x1f, 0x30, 0x31, 0x7f, 0x80, 0x81, 0x84, 0x85, 0xa0, 0xa3, 0xff)
    }),
    fc.record({ kind: fc.constant("truncate" as const), at: fc.nat() }),
    fc.record({
      kind: fc.constant("insert" as const),
      at: position,
      bytes: fc.uint8Array({ minLength: 1, maxLength: 8 })
    }),
    fc.record({ kind: fc.constant("delete" as const), at: position, count: fc.integer({ min: 1, max: 16 }) })
  )
}

describe("hostile input", () => {
  it("every strict prefix of a real certificate is a typed error", () => {
    for (let n = 0; n < clientDer.length; n++) {
      expect(parseOrTypedError(clientDer.subarray(0, n))).toBeInstanceOf(ClientIdentityError)
    }
  })

  it("trailing bytes after the certificate: typed error", () => {
    expect(() => parseClientIdentity(Buffer.concat([clientDer, Uint8Array.of(0)]))).toThrow(/trailing data/)
  })

  it.each<[string, Uint8Array]>([
    ["empty", new Uint8Array(0)],
    ["indefinite length", Uint8Array.of(0x30, 0x80, 0x00, 0x00)],
    ["a length beyond the input", Uint8Array.of(0x30, 0x84, 0xff, 0xff, 0xff, 0xff)],
    ["a five-byte length", Uint8Array.of(0x30, 0x85, 0, 0, 0, 0, 1, 0)],
    ["a non-minimal length", Uint8Array.of(0x30, 0x81, 0x01, 0x05)],
    ["a leading zero length byte", Uint8Array.of(0x30, 0x82, 0x00, 0x01, 0x05)],
    ["a high-tag-number tag", Uint8Array.of(0x1f, 0x81, 0x01, 0x00)],
    ["a bare INTEGER", Uint8Array.of(0x02, 0x01, 0x01)]
  ])("%s: typed error", (_label, der) => {
    expect(parseOrTypedError(der)).toBeInstanceOf(ClientIdentityError)
    expect(Either.isLeft(parseClientIdentityEither(der))).toBe(true)
  })

  it("a huge but well-formed subject (200k empty RDNs) is walked in linear time", () => {
    const tlv = (tag: number, ...parts: ReadonlyArray<Uint8Array>): Uint8Array => {
      const body = Buffer.concat(parts)
      const n = body.length
      const len =
        n < 0x80
          ? [n]
          : n < 0x100
            ? [0x81, n]
            : n < 0x10000
              ? [0x82, n >> 8, n & 0xff]
              : [0x83, n >> 16, (n >> 8) & 0xff, n & 0xff]
      return Buffer.concat([Uint8Array.of(tag, ...len), body])
    }
    const emptyRdns = new Uint8Array(400_000)
    for (let i = 0; i < emptyRdns.length; i += 2) emptyRdns[i] = 0x31
    const seq = (...parts: ReadonlyArray<Uint8Array>): Uint8Array => tlv(0x30, ...parts)
    const tbs = seq(
      tlv(0x02, Uint8Array.of(1)),
      seq(),
      seq(),
      seq(),
      seq(emptyRdns, tlv(0x31, seq(tlv(0x06, encodeOid("2.5.4.3")), tlv(0x13, Buffer.from("gw"))))),
      seq()
    )
    const der = seq(tbs, seq(), tlv(0x03, Uint8Array.of(0)))
    const start = performance.now()
    expect(parseClientIdentity(der)).toEqual({ gatewayId: "gw", orgLabel: undefined, gatewayName: { _tag: "Absent" } })
    expect(performance.now() - start).toBeLessThan(1_000)
  })

  it("deeply nested SEQUENCEs are not descended into: typed error, no stack growth", () => {
    const depth = 100_000
    const der = new Uint8Array(depth * 2)
    for (let i = 0; i < depth; i++) {
      der[2 * i] = 0x30
      der[2 * i + 1] = 0x00
    }
    // Each level claims an empty body; the walker reads a handful of headers and stops.
    expect(parseOrTypedError(der)).toBeInstanceOf(ClientIdentityError)
  })

  it("property: random bytes give a result or a ClientIdentityError, never another exception", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2048 }), (bytes) => {
        const r = parseOrTypedError(bytes)
        expect(r instanceof ClientIdentityError || typeof r === "object").toBe(true)
        const e = parseClientIdentityEither(bytes)
        expect(Either.isLeft(e) ? e.left : e.right).toEqual(r)
      }),
      { numRuns: 5_000 }
    )
  })

  it("property: random bytes behind a valid-looking SEQUENCE header", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), (body) => {
        const der = Buffer.concat([Uint8Array.of(0x30, 0x82, body.length >> 8, body.length & 0xff), body])
        parseOrTypedError(der)
      }),
      { numRuns: 5_000 }
    )
  })

  it("property: mutations of a real certificate give a result or a ClientIdentityError", () => {
    const headers = headerOffsets(clientDer)
    expect(headers.length).toBeGreaterThan(50)
    fc.assert(
      fc.property(fc.array(mutationArb(headers), { minLength: 1, maxLength: 6 }), (mutations) => {
        const der = mutations.reduce(applyMutation, clientDer)
        const r = parseOrTypedError(der)
        if (!(r instanceof ClientIdentityError)) {
          // Whatever survived is still shaped like an identity.
          expect(["Absent", "Valid", "Invalid"]).toContain(r.gatewayName._tag)
          expect(r.gatewayId === undefined || typeof r.gatewayId === "string").toBe(true)
        }
      }),
      { numRuns: 20_000 }
    )
  })

  it("single-byte mutations at every header byte of a real certificate", () => {
    for (const h of headerOffsets(clientDer)) {
      for (const at of [h, h + 1, h + 2]) {
        for (const value of [0x00, 0x01, 0x1f, 0x30, 0x7f, 0x80, 0x81, 0x82, 0x84, 0xff]) {
          parseOrTypedError(applyMutation(clientDer, { kind: "set", at, value }))
        }
      }
    }
  })
})

describe("der.ts", () => {
  it("encodes OIDs", () => {
    expect(Buffer.from(encodeOid(OID)).toString("hex")).toBe("2b06010401e0396403")
    expect(Buffer.from(encodeOid("2.5.4.3")).toString("hex")).toBe("550403")
    expect(Buffer.from(encodeOid("1.2.840.113549.1.1.11")).toString("hex")).toBe("2a864886f70d01010b")
  })

  it("reports malformed input as DerError", () => {
    const c = DerCursor.over(Uint8Array.of(0x30, 0x05, 0x00))
    expect(() => c.next()).toThrow(DerError)
    const p = DerCursor.over(Uint8Array.of(0x04, 0x00))
    p.expect(Tag.OCTET_STRING, "x")
    expect(() => p.enter()).toThrow(/not a constructed element/)
    expect(() => new DerCursor(new Uint8Array(2), 0, 3)).toThrow(DerError)
  })
})
