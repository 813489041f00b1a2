/**
 * The minted material matches Infisical's certificate profile (control-plane.md "Certificate
 * profile", protocol.md §3), as decoded by openssl, and works with Node's TLS the way the backend
 * and the reference relay use it (protocol.md §4.2, §4.5).
 */
import { createPublicKey, X509Certificate } from "node:crypto"
import type { AddressInfo } from "node:net"
import * as tls from "node:tls"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { parseClientIdentity } from "../../src/pki/clientIdentity.ts"
import { contextTag, DerCursor, Tag } from "../../src/pki/der.ts"
import {
  createRelayHierarchy,
  createSerialNumber,
  exportCa,
  extensions as ext,
  generateRsaKeyPair,
  importCa,
  issueCertificate,
  makeGatewayPki,
  makeRelayPki,
  privateKeyToPem,
  relayPkiFromCas,
  splitPemChain,
  validityFromNow,
  x509,
  ZERO_UUID,
  type CertifiedKey,
  type GatewayClientCredentials,
  type GatewayPki,
  type GatewayServerPkiResponse,
  type RelayClientCredentials,
  type RelayHierarchy,
  type RelayPki,
  type RelayServerPkiResponse
} from "../../src/pki/mint.ts"
import { decodeCertificate, openssl, scratchDir, type DecodedCertificate } from "./openssl.ts"

const ORG_ID = "7d3e0c4a-1b2c-4d5e-8f90-a1b2c3d4e5f6"
const GATEWAY_ID = "2b8e6c1d-3f4a-4b5c-9d6e-7f8091a2b3c4"
const CA_KU = "Digital Signature, Key Encipherment, Certificate Sign, CRL Sign"

interface Minted {
  readonly hierarchy: RelayHierarchy
  readonly instance: RelayPki
  readonly org: RelayPki
  readonly gateway: GatewayPki
  readonly foreign: RelayPki
  readonly serverIp: RelayServerPkiResponse
  readonly serverIpAgain: RelayServerPkiResponse
  readonly serverIpv6: RelayServerPkiResponse
  readonly serverDns: RelayServerPkiResponse
  readonly client: RelayClientCredentials
  readonly orgClient: RelayClientCredentials
  readonly heartbeat: RelayClientCredentials
  readonly orgHeartbeat: RelayClientCredentials
  readonly foreignClient: RelayClientCredentials
  readonly serverAuthOnlyClient: { readonly cert: string; readonly key: string }
  readonly gatewayServer: GatewayServerPkiResponse
  readonly platformClient: GatewayClientCredentials
  /** Wall-clock window around the leaf issuance, for the "no backdating" checks. */
  readonly issuedFrom: number
  readonly issuedTo: number
}

let m: Minted
const scratch = scratchDir()

beforeAll(async () => {
  const [hierarchy, foreignHierarchy, gateway] = await Promise.all([
    createRelayHierarchy(),
    createRelayHierarchy(),
    makeGatewayPki(ORG_ID)
  ])
  const [instance, org, foreign] = await Promise.all([
    hierarchy.instance(),
    hierarchy.org(ORG_ID),
    foreignHierarchy.instance()
  ])
  const issuedFrom = Date.now()
  const [serverIp, serverIpAgain, serverIpv6, serverDns, client, orgClient, heartbeat, orgHeartbeat, foreignClient] =
    await Promise.all([
      instance.issueRelayServer("127.0.0.1"),
      instance.issueRelayServer("127.0.0.1"),
      org.issueRelayServer("::1"),
      instance.issueRelayServer("relay.test"),
      instance.issueRelayClient({ gatewayId: GATEWAY_ID, gatewayName: "gw-one", orgName: "acme", orgId: ORG_ID }),
      org.issueRelayClient({
        gatewayId: GATEWAY_ID,
        gatewayName: "gw-one",
        orgName: "acme",
        orgId: ORG_ID,
        validitySeconds: 3600
      }),
      instance.issueHeartbeatClient(),
      org.issueHeartbeatClient(),
      foreign.issueRelayClient({ gatewayId: GATEWAY_ID, gatewayName: "gw-one", orgName: "acme", orgId: ORG_ID })
    ])
  const [gatewayServer, platformClient, serverAuthOnlyClient] = await Promise.all([
    gateway.issueGatewayServer(),
    gateway.issuePlatformClient(GATEWAY_ID),
    mintServerAuthOnlyClient(instance.clientCa)
  ])
  const issuedTo = Date.now()
  m = {
    hierarchy,
    instance,
    org,
    gateway,
    foreign,
    serverIp,
    serverIpAgain,
    serverIpv6,
    serverDns,
    client,
    orgClient,
    heartbeat,
    orgHeartbeat,
    foreignClient,
    serverAuthOnlyClient,
    gatewayServer,
    platformClient,
    issuedFrom,
    issuedTo
  }
})

afterAll(() => scratch.dispose())

/** A leaf shaped like a relay client certificate but with EKU serverAuth only. */
async function mintServerAuthOnlyClient(clientCa: CertifiedKey): Promise<{ cert: string; key: string }> {
  const keys = await generateRsaKeyPair(2048)
  const leaf = await issueCertificate({
    subject: [
      ["O", `acme-${ORG_ID}`],
      ["OU", "relay-client"],
      ["CN", GATEWAY_ID]
    ],
    issuer: clientCa,
    keys,
    ...validityFromNow(300),
    extensions: [
      ext.leafBasicConstraints(),
      await ext.authorityKeyIdentifier(clientCa.certificate),
      await ext.subjectKeyIdentifier(keys.publicKey),
      ext.anyPolicy(),
      ext.keyUsageExtension(ext.keyUsage.clientLeaf),
      ext.serverAuth(),
      ext.jsonExtension("1.3.6.1.4.1.12345.100.3", { name: "gw-one" })
    ]
  })
  return { cert: leaf.certificatePem, key: privateKeyToPem(leaf.privateKey) }
}

const keyIds = (d: DecodedCertificate): { aki: string | undefined; ski: string | undefined } => ({
  aki: d.extensions.get("X509v3 Authority Key Identifier")?.value,
  ski: d.extensions.get("X509v3 Subject Key Identifier")?.value
})

const seconds = (d: DecodedCertificate): number => (d.notAfter.getTime() - d.notBefore.getTime()) / 1000

/** The serialNumber INTEGER's content octets, exactly as encoded. */
const serialOf = (pem: string): Uint8Array => {
  const der = new X509Certificate(pem).raw
  const top = DerCursor.over(der)
  top.expect(Tag.SEQUENCE, "Certificate")
  const cert = top.enter()
  cert.expect(Tag.SEQUENCE, "tbsCertificate")
  const tbs = cert.enter()
  tbs.expect(contextTag(0), "version")
  tbs.expect(Tag.INTEGER, "serialNumber")
  return der.subarray(tbs.start, tbs.end)
}

const expectCommon = (pem: string, d: DecodedCertificate): void => {
  expect(d.version).toBe("3 (0x2)")
  expect(d.signatureAlgorithm).toBe("sha256WithRSAEncryption")
  expect(d.publicKeyBits).toBe(2048)
  const serial = serialOf(pem)
  expect(serial.length).toBeGreaterThan(0)
  expect(serial.length).toBeLessThanOrEqual(20)
  // A positive, minimally encoded INTEGER of at most 20 octets (the 20 random bytes, top bit
  // cleared, with leading zero octets dropped by the encoder).
  expect(serial[0]! & 0x80).toBe(0)
  if (serial.length > 1) expect(serial[0] === 0 && serial[1]! < 0x80).toBe(false)
  const ids = keyIds(d)
  expect(ids.ski).toMatch(/^([0-9A-F]{2}:){19}[0-9A-F]{2}$/)
  expect(pem).not.toContain("\r")
  expect(pem.startsWith("-----BEGIN CERTIFICATE-----\n")).toBe(true)
  expect(pem.endsWith("\n-----END CERTIFICATE-----")).toBe(true)
}

/** CA validity: from creation to the same date and time in 2045. */
const expectCaValidity = (d: DecodedCertificate): void => {
  const expected = new Date(d.notBefore.getTime())
  expected.setUTCFullYear(2045)
  expect(d.notAfter.getTime()).toBe(expected.getTime())
  expect(d.notAfter.getUTCFullYear()).toBe(2045)
}

/** Leaf validity: starts at issuance (second precision, no backdating), lasts exactly `secs`. */
const expectLeafValidity = (d: DecodedCertificate, secs: number): void => {
  expect(seconds(d)).toBe(secs)
  expect(d.notBefore.getTime()).toBeGreaterThanOrEqual(Math.floor(m.issuedFrom / 1000) * 1000)
  expect(d.notBefore.getTime()).toBeLessThanOrEqual(m.issuedTo)
}

describe("relay CA hierarchy", () => {
  it("root: O=Infisical, CN=Infisical Instance Root Relay CA, self-signed, KU only, no basicConstraints, no AKI", () => {
    const pem = m.hierarchy.root.certificatePem
    const d = decodeCertificate(pem)
    expectCommon(pem, d)
    expect(d.subject).toBe("O = Infisical, CN = Infisical Instance Root Relay CA")
    expect(d.issuer).toBe(d.subject)
    expect(d.extensionNames).toEqual(["X509v3 Key Usage", "X509v3 Subject Key Identifier"])
    expect(d.extensions.get("X509v3 Key Usage")).toEqual({ critical: true, value: "Certificate Sign, CRL Sign" })
    expect(d.extensions.get("X509v3 Subject Key Identifier")?.critical).toBe(false)
    expectCaValidity(d)
  })

  const intermediates = (): ReadonlyArray<{
    name: string
    pem: string
    issuer: string
    subject: string
    pathlen: number
  }> => [
    {
      name: "Organization Relay CA",
      pem: m.hierarchy.organizationRelayCa.certificatePem,
      issuer: m.hierarchy.root.certificatePem,
      subject: "O = Infisical, CN = Infisical Organization Relay CA",
      pathlen: 2
    },
    {
      name: "Instance Relay CA",
      pem: m.hierarchy.instanceRelayCa.certificatePem,
      issuer: m.hierarchy.root.certificatePem,
      subject: "O = Infisical, CN = Infisical Instance Relay CA",
      pathlen: 1
    },
    {
      name: "Instance Relay Client CA",
      pem: m.instance.clientCa.certificatePem,
      issuer: m.hierarchy.instanceRelayCa.certificatePem,
      subject: "O = Infisical, CN = Infisical Instance Relay Client CA",
      pathlen: 0
    },
    {
      name: "Instance Relay Server CA",
      pem: m.instance.serverCa.certificatePem,
      issuer: m.hierarchy.instanceRelayCa.certificatePem,
      subject: "O = Infisical, CN = Infisical Instance Relay Server CA",
      pathlen: 0
    },
    {
      name: "Org Relay Client CA",
      pem: m.org.clientCa.certificatePem,
      issuer: m.hierarchy.organizationRelayCa.certificatePem,
      subject: `O = ${ORG_ID}, CN = Infisical Org Relay Client CA`,
      pathlen: 0
    },
    {
      name: "Org Relay Server CA",
      pem: m.org.serverCa.certificatePem,
      issuer: m.hierarchy.organizationRelayCa.certificatePem,
      subject: `O = ${ORG_ID}, CN = Infisical Org Relay Server CA`,
      pathlen: 0
    }
  ]

  it("intermediate CAs: subject, issuer, critical KU and basicConstraints with pathlen, AKI = issuer SKI, SKI", () => {
    for (const ca of intermediates()) {
      const d = decodeCertificate(ca.pem)
      const issuer = decodeCertificate(ca.issuer)
      expectCommon(ca.pem, d)
      expect(d.subject, ca.name).toBe(ca.subject)
      expect(d.issuer, ca.name).toBe(issuer.subject)
      expect(d.extensionNames, ca.name).toEqual([
        "X509v3 Key Usage",
        "X509v3 Basic Constraints",
        "X509v3 Authority Key Identifier",
        "X509v3 Subject Key Identifier"
      ])
      expect(d.extensions.get("X509v3 Key Usage"), ca.name).toEqual({ critical: true, value: CA_KU })
      expect(d.extensions.get("X509v3 Basic Constraints"), ca.name).toEqual({
        critical: true,
        value: `CA:TRUE, pathlen:${ca.pathlen}`
      })
      expect(d.extensions.get("X509v3 Authority Key Identifier")?.critical, ca.name).toBe(false)
      // keyid only: a single line of hex, no issuer name or serial.
      expect(keyIds(d).aki, ca.name).toBe(keyIds(issuer).ski)
      expectCaValidity(d)
    }
  })

  it("org PKIs share the root and the Organization Relay CA; the same org gets the same CAs", async () => {
    expect(m.org.root).toBe(m.hierarchy.root)
    expect(m.org.relayCa).toBe(m.hierarchy.organizationRelayCa)
    expect(m.instance.relayCa).toBe(m.hierarchy.instanceRelayCa)
    expect(await m.hierarchy.org(ORG_ID)).toBe(m.org)
    expect(await m.hierarchy.instance()).toBe(m.instance)
  })

  it("serials: 20 random bytes with the top bit cleared", () => {
    for (let i = 0; i < 2000; i++) {
      const hex = createSerialNumber()
      expect(hex).toMatch(/^[0-7][0-9a-f]{39}$/)
    }
  })
})

describe("relay server certificate (registration pki)", () => {
  it("IP host: subject CN, O=Infisical, OU=Relay in that order; extensions in upstream order", () => {
    const pem = m.serverIp.serverCertificate
    const d = decodeCertificate(pem)
    expectCommon(pem, d)
    expect(d.subject).toBe("CN = 127.0.0.1, O = Infisical, OU = Relay")
    expect(d.issuer).toBe("O = Infisical, CN = Infisical Instance Relay Server CA")
    expect(d.extensionNames).toEqual([
      "X509v3 Basic Constraints",
      "X509v3 Authority Key Identifier",
      "X509v3 Subject Key Identifier",
      "X509v3 Certificate Policies",
      "X509v3 Key Usage",
      "X509v3 Extended Key Usage",
      "X509v3 Subject Alternative Name"
    ])
    expect(d.extensions.get("X509v3 Basic Constraints")).toEqual({ critical: false, value: "CA:FALSE" })
    expect(d.extensions.get("X509v3 Key Usage")).toEqual({ critical: true, value: "Digital Signature, Key Encipherment" })
    expect(d.extensions.get("X509v3 Extended Key Usage")).toEqual({
      critical: true,
      value: "TLS Web Server Authentication"
    })
    expect(d.extensions.get("X509v3 Subject Alternative Name")).toEqual({ critical: false, value: "IP Address:127.0.0.1" })
    expect(d.extensions.get("X509v3 Certificate Policies")).toEqual({
      critical: false,
      value: "Policy: X509v3 Any Policy"
    })
    expect(keyIds(d).aki).toBe(keyIds(decodeCertificate(m.instance.serverCa.certificatePem)).ski)
    expectLeafValidity(d, 24 * 60 * 60)
  })

  it("IPv6 host on an org relay: SAN IP:::1, O=<orgId>, issued by the Org Relay Server CA", () => {
    const d = decodeCertificate(m.serverIpv6.serverCertificate)
    expect(d.subject).toBe(`CN = ::1, O = ${ORG_ID}, OU = Relay`)
    expect(d.issuer).toBe(`O = ${ORG_ID}, CN = Infisical Org Relay Server CA`)
    expect(d.extensions.get("X509v3 Subject Alternative Name")).toEqual({
      critical: false,
      value: "IP Address:0:0:0:0:0:0:0:1"
    })
    expect(keyIds(d).aki).toBe(keyIds(decodeCertificate(m.org.serverCa.certificatePem)).ski)
  })

  it("DNS host: SAN is exactly DNS:<host>", () => {
    const d = decodeCertificate(m.serverDns.serverCertificate)
    expect(d.subject).toBe("CN = relay.test, O = Infisical, OU = Relay")
    expect(d.extensions.get("X509v3 Subject Alternative Name")).toEqual({ critical: false, value: "DNS:relay.test" })
  })

  it("private key: unencrypted PKCS#8 RSA-2048 PEM ending in a newline, matching the certificate", () => {
    const key = m.serverIp.serverPrivateKey
    expect(key.startsWith("-----BEGIN PRIVATE KEY-----\n")).toBe(true)
    expect(key.endsWith("\n-----END PRIVATE KEY-----\n")).toBe(true)
    expect(key).not.toContain("\r")
    const r = openssl(["pkey", "-noout", "-text"], key)
    expect(r.status).toBe(0)
    expect(r.stdout).toContain("Private-Key: (2048 bit")
    const fromKey = createPublicKey(key).export({ format: "der", type: "spki" })
    const fromCert = new X509Certificate(m.serverIp.serverCertificate).publicKey.export({ format: "der", type: "spki" })
    expect(Buffer.compare(fromKey, fromCert)).toBe(0)
  })

  it("a new key on every registration, same CAs", () => {
    expect(m.serverIpAgain.serverPrivateKey).not.toBe(m.serverIp.serverPrivateKey)
    expect(m.serverIpAgain.clientCertificateChain).toBe(m.serverIp.clientCertificateChain)
  })

  it("string formats: no trailing newline; chains are [leaf CA, relay CA, root] joined by \\n", () => {
    expect(m.serverIp.serverCertificate.endsWith("-----END CERTIFICATE-----")).toBe(true)
    expect(m.serverIp.clientCertificateChain).toBe(
      [m.instance.clientCa, m.hierarchy.instanceRelayCa, m.hierarchy.root].map((c) => c.certificatePem).join("\n")
    )
    expect(m.serverIpv6.clientCertificateChain).toBe(
      [m.org.clientCa, m.hierarchy.organizationRelayCa, m.hierarchy.root].map((c) => c.certificatePem).join("\n")
    )
    expect(m.serverIp.clientCertificateChain.endsWith("-----END CERTIFICATE-----")).toBe(true)
    expect(splitPemChain(m.serverIp.clientCertificateChain)).toHaveLength(3)
    // What a client trusts: [server CA, relay CA, root].
    expect(m.client.serverCertificateChain).toBe(
      [m.instance.serverCa, m.hierarchy.instanceRelayCa, m.hierarchy.root].map((c) => c.certificatePem).join("\n")
    )
    expect(m.orgClient.serverCertificateChain).toBe(m.org.serverCertificateChain)
    expect(m.org.serverCertificateChain).toBe(
      [m.org.serverCa, m.hierarchy.organizationRelayCa, m.hierarchy.root].map((c) => c.certificatePem).join("\n")
    )
  })

  it("openssl verifies it for sslserver against serverCertificateChain", () => {
    const ca = scratch.write("server-chain.pem", m.instance.serverCertificateChain)
    const leaf = scratch.write("server.pem", m.serverIp.serverCertificate)
    const r = openssl(["verify", "-purpose", "sslserver", "-CAfile", ca, leaf])
    expect(r.stdout.trim()).toBe(`${leaf}: OK`)
  })
})

describe("relay client certificate (backend → relay)", () => {
  it("subject O=<orgName>-<orgId>, OU=relay-client, CN=<gatewayId>; clientAuth; anyPolicy; .100.3 not critical", () => {
    const pem = m.client.clientCertificate
    const d = decodeCertificate(pem)
    expectCommon(pem, d)
    expect(d.subject).toBe(`O = acme-${ORG_ID}, OU = relay-client, CN = ${GATEWAY_ID}`)
    expect(d.issuer).toBe("O = Infisical, CN = Infisical Instance Relay Client CA")
    expect(d.extensionNames).toEqual([
      "X509v3 Basic Constraints",
      "X509v3 Authority Key Identifier",
      "X509v3 Subject Key Identifier",
      "X509v3 Certificate Policies",
      "X509v3 Key Usage",
      "X509v3 Extended Key Usage",
      "1.3.6.1.4.1.12345.100.3"
    ])
    expect(d.extensions.get("X509v3 Basic Constraints")).toEqual({ critical: false, value: "CA:FALSE" })
    expect(d.extensions.get("X509v3 Key Usage")).toEqual({
      critical: true,
      value: "Digital Signature, Key Encipherment, Key Agreement"
    })
    expect(d.extensions.get("X509v3 Extended Key Usage")).toEqual({
      critical: true,
      value: "TLS Web Client Authentication"
    })
    expect(d.extensions.get("X509v3 Certificate Policies")?.value).toBe("Policy: X509v3 Any Policy")
    expect(d.extensions.get("1.3.6.1.4.1.12345.100.3")).toEqual({ critical: false, value: '{"name":"gw-one"}' })
    expect(keyIds(d).aki).toBe(keyIds(decodeCertificate(m.instance.clientCa.certificatePem)).ski)
    expectLeafValidity(d, 5 * 60)
  })

  it("the .100.3 extnValue octets are the raw UTF-8 JSON, with no inner DER", () => {
    const pem = m.client.clientCertificate
    const json = Buffer.from('{"name":"gw-one"}', "utf8")
    // openssl asn1parse: the OID is followed directly by the OCTET STRING (no BOOLEAN), whose
    // content is the JSON text.
    const r = openssl(["asn1parse"], pem)
    const lines = r.stdout.split("\n")
    const at = lines.findIndex((l) => l.includes(":1.3.6.1.4.1.12345.100.3"))
    expect(at).toBeGreaterThan(0)
    expect(lines[at + 1]).toMatch(new RegExp(`hl=2 l= *${json.length} prim: OCTET STRING +:\\{"name":"gw-one"\\}$`))
    // Byte level: OID TLV, then 04 <len> <json>.
    const der = new X509Certificate(pem).raw
    const needle = Buffer.concat([
      Buffer.from("06092b06010401e0396403", "hex"),
      Buffer.from([0x04, json.length]),
      json
    ])
    expect(der.indexOf(needle)).toBeGreaterThan(0)
    expect(Buffer.from(new x509.X509Certificate(pem).getExtension("1.3.6.1.4.1.12345.100.3")!.value)).toEqual(json)
  })

  it("org relay: issued by the Org Relay Client CA with the caller's org in O; validity is configurable", () => {
    const d = decodeCertificate(m.orgClient.clientCertificate)
    expect(d.subject).toBe(`O = acme-${ORG_ID}, OU = relay-client, CN = ${GATEWAY_ID}`)
    expect(d.issuer).toBe(`O = ${ORG_ID}, CN = Infisical Org Relay Client CA`)
    expectLeafValidity(d, 3600)
  })

  it("heartbeat variants: CN zero UUID, name heartbeat, 60 s, O per relay kind", () => {
    const inst = decodeCertificate(m.heartbeat.clientCertificate)
    expect(inst.subject).toBe(`O = heartbeat-${ZERO_UUID}, OU = relay-client, CN = ${ZERO_UUID}`)
    expect(inst.extensions.get("1.3.6.1.4.1.12345.100.3")).toEqual({ critical: false, value: '{"name":"heartbeat"}' })
    expectLeafValidity(inst, 60)
    const org = decodeCertificate(m.orgHeartbeat.clientCertificate)
    expect(org.subject).toBe(`O = ${ORG_ID}-${ORG_ID}, OU = relay-client, CN = ${ZERO_UUID}`)
    expect(org.issuer).toBe(`O = ${ORG_ID}, CN = Infisical Org Relay Client CA`)
    expect(org.extensions.get("1.3.6.1.4.1.12345.100.3")?.value).toBe('{"name":"heartbeat"}')
    expectLeafValidity(org, 60)
  })

  it("openssl verify -purpose sslclient: OK against clientCertificateChain; -x509_strict rejects the root (79, 82)", () => {
    const ca = scratch.write("client-chain.pem", m.serverIp.clientCertificateChain)
    const leaf = scratch.write("client.pem", m.client.clientCertificate)
    const ok = openssl(["verify", "-purpose", "sslclient", "-CAfile", ca, leaf])
    expect(ok.status).toBe(0)
    expect(ok.stdout.trim()).toBe(`${leaf}: OK`)

    const strict = openssl(["verify", "-x509_strict", "-purpose", "sslclient", "-CAfile", ca, leaf])
    expect(strict.status).not.toBe(0)
    const out = strict.stdout + strict.stderr
    expect(out).toMatch(/error 79 at 3 depth lookup: invalid CA certificate/)
    expect(out).toMatch(/error 82 at 3 depth lookup: Key usage keyCertSign invalid for non-CA cert/)
    expect(out).toContain("O = Infisical, CN = Infisical Instance Root Relay CA")

    // Not usable as a server certificate.
    const asServer = openssl(["verify", "-purpose", "sslserver", "-CAfile", ca, leaf])
    expect(asServer.status).not.toBe(0)
  })
})

describe("gateway PKI", () => {
  it("root without basicConstraints; server and client CAs with pathlen 0", () => {
    const root = decodeCertificate(m.gateway.root.certificatePem)
    expectCommon(m.gateway.root.certificatePem, root)
    expect(root.subject).toBe(`O = ${ORG_ID}, CN = Infisical Gateway Root CA`)
    expect(root.issuer).toBe(root.subject)
    expect(root.extensionNames).toEqual(["X509v3 Key Usage", "X509v3 Subject Key Identifier"])
    expect(root.extensions.get("X509v3 Key Usage")).toEqual({ critical: true, value: "Certificate Sign, CRL Sign" })
    expectCaValidity(root)
    for (const [ca, cn] of [
      [m.gateway.serverCa, "Infisical Gateway Server CA"],
      [m.gateway.clientCa, "Infisical Gateway Client CA"]
    ] as const) {
      const d = decodeCertificate(ca.certificatePem)
      expectCommon(ca.certificatePem, d)
      expect(d.subject).toBe(`O = ${ORG_ID}, CN = ${cn}`)
      expect(d.issuer).toBe(root.subject)
      expect(d.extensions.get("X509v3 Basic Constraints")).toEqual({ critical: true, value: "CA:TRUE, pathlen:0" })
      expect(d.extensions.get("X509v3 Key Usage")).toEqual({ critical: true, value: CA_KU })
      expect(keyIds(d).aki).toBe(keyIds(root).ski)
      expectCaValidity(d)
    }
  })

  it("gateway server certificate: O=<orgId>, CN=Gateway; SAN localhost, 127.0.0.1, ::1; serverAuth; 24 h", () => {
    const pem = m.gatewayServer.serverCertificate
    const d = decodeCertificate(pem)
    expectCommon(pem, d)
    expect(d.subject).toBe(`O = ${ORG_ID}, CN = Gateway`)
    expect(d.issuer).toBe(`O = ${ORG_ID}, CN = Infisical Gateway Server CA`)
    expect(d.extensions.get("X509v3 Subject Alternative Name")).toEqual({
      critical: false,
      value: "DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1"
    })
    expect(d.extensions.get("X509v3 Extended Key Usage")).toEqual({
      critical: true,
      value: "TLS Web Server Authentication"
    })
    expect(d.extensions.get("X509v3 Key Usage")).toEqual({ critical: true, value: "Digital Signature, Key Encipherment" })
    expect(d.extensions.get("X509v3 Basic Constraints")).toEqual({ critical: false, value: "CA:FALSE" })
    expectLeafValidity(d, 24 * 60 * 60)
    expect(m.gatewayServer.clientCertificateChain).toBe(
      [m.gateway.clientCa, m.gateway.root].map((c) => c.certificatePem).join("\n")
    )
    expect(m.gatewayServer.serverPrivateKey.endsWith("-----END PRIVATE KEY-----\n")).toBe(true)
  })

  it("platform client certificate: O, OU=gateway-client, CN=platform:<id>; routing and actor JSON; 5 min", () => {
    const pem = m.platformClient.clientCertificate
    const d = decodeCertificate(pem)
    expectCommon(pem, d)
    expect(d.subject).toBe(`O = ${ORG_ID}, OU = gateway-client, CN = platform:${GATEWAY_ID}`)
    expect(d.issuer).toBe(`O = ${ORG_ID}, CN = Infisical Gateway Client CA`)
    expect(d.extensions.get("X509v3 Extended Key Usage")).toEqual({
      critical: true,
      value: "TLS Web Client Authentication"
    })
    const cert = new x509.X509Certificate(pem)
    expect(Buffer.from(cert.getExtension("1.3.6.1.4.1.12345.100.1")!.value).toString("utf8")).toBe(
      '{"targetHost":"health-check","targetPort":443}'
    )
    expect(Buffer.from(cert.getExtension("1.3.6.1.4.1.12345.100.2")!.value).toString("utf8")).toBe('{"type":"platform"}')
    expect(d.extensions.get("1.3.6.1.4.1.12345.100.1")?.critical).toBe(false)
    expectLeafValidity(d, 5 * 60)
    expect(m.platformClient.serverCertificateChain).toBe(
      [m.gateway.serverCa, m.gateway.root].map((c) => c.certificatePem).join("\n")
    )
  })

  it("openssl verifies both gateway leaves against their chains", () => {
    const serverChain = scratch.write("gw-server-chain.pem", m.gateway.serverCertificateChain)
    const clientChain = scratch.write("gw-client-chain.pem", m.gateway.clientCertificateChain)
    const server = scratch.write("gw-server.pem", m.gatewayServer.serverCertificate)
    const client = scratch.write("gw-client.pem", m.platformClient.clientCertificate)
    expect(openssl(["verify", "-purpose", "sslserver", "-CAfile", serverChain, server]).stdout.trim()).toBe(`${server}: OK`)
    expect(openssl(["verify", "-purpose", "sslclient", "-CAfile", clientChain, client]).stdout.trim()).toBe(`${client}: OK`)
  })
})

// ---------------------------------------------------------------------------------------------
// Node TLS end to end: a relay-style listener and a backend-style dialer (protocol.md §4.2, §4.5)

interface HandshakeOutcome {
  /**
   * Server side: accepted (with the gateway id read from the verified peer certificate), or not.
   * A Node server with `rejectUnauthorized: true` drops a client whose certificate fails
   * verification without an event, so "not accepted" is "the connection closed before
   * secureConnection". `authorizationError` is only known in inspect mode.
   */
  readonly server:
    | { readonly accepted: true; readonly authorized: boolean; readonly gatewayId: string | undefined }
    | { readonly accepted: false; readonly authorizationError?: string }
  /** Client side: whether secureConnect fired with `authorized`, or the client error. */
  readonly client: { readonly ok: true; readonly authorized: boolean } | { readonly ok: false; readonly error: string }
}

interface Dial {
  readonly servername: string
  readonly ca: string
  readonly cert: string
  readonly key: string
}

/**
 * One TLS connection between a relay-style listener and a backend-style dialer. In inspect mode the
 * listener uses `rejectUnauthorized: false` so the verification verdict can be read from the
 * socket (`authorizationError`); otherwise it is configured exactly like the relay.
 */
const handshake = (
  relay: RelayServerPkiResponse,
  dial: Dial,
  mode: "relay" | "inspect" = "relay"
): Promise<HandshakeOutcome> =>
  new Promise((resolve, reject) => {
    let serverResult: HandshakeOutcome["server"] | undefined
    let clientResult: HandshakeOutcome["client"] | undefined
    let client: tls.TLSSocket | undefined
    let done = false
    const server = tls.createServer({
      cert: relay.serverCertificate,
      key: relay.serverPrivateKey,
      requestCert: true,
      rejectUnauthorized: mode === "relay",
      ca: splitPemChain(relay.clientCertificateChain)
    })
    const finish = (): void => {
      if (done || !serverResult || !clientResult) return
      done = true
      client?.destroy()
      server.close()
      resolve({ server: serverResult, client: clientResult })
    }
    server.on("connection", (raw: import("node:net").Socket) => {
      raw.on("close", () => {
        serverResult ??= { accepted: false }
        finish()
      })
    })
    server.on("secureConnection", (socket) => {
      if (mode === "inspect" && !socket.authorized) {
        serverResult = { accepted: false, authorizationError: String(socket.authorizationError) }
      } else {
        const peer = socket.getPeerX509Certificate()
        serverResult = {
          accepted: true,
          authorized: socket.authorized,
          gatewayId: peer ? parseClientIdentity(peer.raw).gatewayId : undefined
        }
      }
      socket.end()
      finish()
    })
    server.on("tlsClientError", () => {})
    server.on("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as AddressInfo
      const socket = tls.connect({
        host: "127.0.0.1",
        port,
        servername: dial.servername,
        ca: splitPemChain(dial.ca),
        cert: dial.cert,
        key: dial.key,
        minVersion: "TLSv1.2",
        rejectUnauthorized: true
      })
      client = socket
      // TLS 1.3: the client completes before the server has judged its certificate.
      socket.on("secureConnect", () => {
        clientResult ??= { ok: true, authorized: socket.authorized }
        finish()
      })
      socket.on("error", (err: NodeJS.ErrnoException) => {
        clientResult ??= { ok: false, error: String(err.code ?? err.message) }
        finish()
      })
      socket.on("data", () => {})
      socket.on("close", () => {
        clientResult ??= { ok: false, error: "closed" }
        finish()
      })
    })
  })

describe("Node TLS: relay listener × backend dialer", () => {
  it("accepts a backend-style client dialing an IP host (servername = the IP)", async () => {
    const r = await handshake(m.serverIp, {
      servername: "127.0.0.1",
      ca: m.client.serverCertificateChain,
      cert: m.client.clientCertificate,
      key: m.client.clientPrivateKey
    })
    expect(r.client).toEqual({ ok: true, authorized: true })
    expect(r.server).toEqual({ accepted: true, authorized: true, gatewayId: GATEWAY_ID })
  })

  it("accepts a backend-style client dialing a DNS host (servername relay.test, connect to 127.0.0.1)", async () => {
    const r = await handshake(m.serverDns, {
      servername: "relay.test",
      ca: m.client.serverCertificateChain,
      cert: m.client.clientCertificate,
      key: m.client.clientPrivateKey
    })
    expect(r.client).toEqual({ ok: true, authorized: true })
    expect(r.server).toEqual({ accepted: true, authorized: true, gatewayId: GATEWAY_ID })
  })

  it("accepts the heartbeat client certificate", async () => {
    const r = await handshake(m.serverIp, {
      servername: "127.0.0.1",
      ca: m.heartbeat.serverCertificateChain,
      cert: m.heartbeat.clientCertificate,
      key: m.heartbeat.clientPrivateKey
    })
    expect(r.server).toEqual({ accepted: true, authorized: true, gatewayId: ZERO_UUID })
  })

  it("org relay: accepts an org client certificate, dialed with the org server chain", async () => {
    const orgServer = await m.org.issueRelayServer("127.0.0.1")
    const r = await handshake(orgServer, {
      servername: "127.0.0.1",
      ca: m.orgClient.serverCertificateChain,
      cert: m.orgClient.clientCertificate,
      key: m.orgClient.clientPrivateKey
    })
    expect(r.client).toEqual({ ok: true, authorized: true })
    expect(r.server).toEqual({ accepted: true, authorized: true, gatewayId: GATEWAY_ID })
  })

  it("the client rejects a relay certificate for another host name", async () => {
    const r = await handshake(m.serverDns, {
      servername: "other.test",
      ca: m.client.serverCertificateChain,
      cert: m.client.clientCertificate,
      key: m.client.clientPrivateKey
    })
    expect(r.client).toEqual({ ok: false, error: "ERR_TLS_CERT_ALTNAME_INVALID" })
  })

  /** The relay-configured listener drops it; an inspecting listener shows why. */
  const expectRejected = async (cert: string, key: string): Promise<string | undefined> => {
    const dial = { servername: "127.0.0.1", ca: m.client.serverCertificateChain, cert, key }
    const r = await handshake(m.serverIp, dial)
    expect(r.server).toEqual({ accepted: false })
    const inspected = await handshake(m.serverIp, dial, "inspect")
    expect(inspected.server.accepted).toBe(false)
    return inspected.server.accepted ? undefined : inspected.server.authorizationError
  }

  it("rejects a client certificate from a foreign PKI", async () => {
    expect(await expectRejected(m.foreignClient.clientCertificate, m.foreignClient.clientPrivateKey)).toBe(
      "UNABLE_TO_VERIFY_LEAF_SIGNATURE"
    )
  })

  it("rejects an org client certificate at an instance relay (other client CA)", async () => {
    expect(await expectRejected(m.orgClient.clientCertificate, m.orgClient.clientPrivateKey)).toBe(
      "UNABLE_TO_VERIFY_LEAF_SIGNATURE"
    )
  })

  it("rejects a client certificate whose EKU is serverAuth only", async () => {
    expect(await expectRejected(m.serverAuthOnlyClient.cert, m.serverAuthOnlyClient.key)).toBe("INVALID_PURPOSE")
  })
})

describe("options and persistence", () => {
  it("modulusLength applies to every key; generateKeyPair can supply pooled keys", async () => {
    const pki = await makeRelayPki({ kind: "org", orgId: ORG_ID }, { modulusLength: 1024 })
    const leaf = await pki.issueRelayServer("relay.test")
    expect(decodeCertificate(pki.root.certificatePem).publicKeyBits).toBe(1024)
    expect(decodeCertificate(leaf.serverCertificate).publicKeyBits).toBe(1024)

    const pooled = await generateRsaKeyPair(1024)
    let calls = 0
    const gateway = await makeGatewayPki(ORG_ID, {
      generateKeyPair: async (bits) => {
        calls++
        expect(bits).toBe(2048)
        return pooled
      }
    })
    const a = await gateway.issuePlatformClient(GATEWAY_ID)
    const b = await gateway.issuePlatformClient(GATEWAY_ID, {
      targetHost: "db.internal",
      targetPort: 5432,
      validitySeconds: 60
    })
    expect(calls).toBe(5)
    expect(a.clientPrivateKey).toBe(b.clientPrivateKey)
    const cert = new x509.X509Certificate(b.clientCertificate)
    expect(Buffer.from(cert.getExtension("1.3.6.1.4.1.12345.100.1")!.value).toString()).toBe(
      '{"targetHost":"db.internal","targetPort":5432}'
    )
    expect(seconds(decodeCertificate(b.clientCertificate))).toBe(60)
  })

  it("exported CAs re-imported keep issuing certificates that chain to the original hierarchy", async () => {
    const source = await makeRelayPki({ kind: "instance" }, { modulusLength: 1024 })
    const [root, relayCa, clientCa, serverCa] = await Promise.all(
      [source.root, source.relayCa, source.clientCa, source.serverCa].map((ca) => importCa(exportCa(ca)))
    )
    const restored = relayPkiFromCas(
      { scope: { kind: "instance" }, root: root!, relayCa: relayCa!, clientCa: clientCa!, serverCa: serverCa! },
      { modulusLength: 1024 }
    )
    expect(restored.clientCertificateChain).toBe(source.clientCertificateChain)
    const client = await restored.issueHeartbeatClient()
    const ca = scratch.write("restored-chain.pem", source.clientCertificateChain)
    const leaf = scratch.write("restored-client.pem", client.clientCertificate)
    expect(openssl(["verify", "-purpose", "sslclient", "-CAfile", ca, leaf]).stdout.trim()).toBe(`${leaf}: OK`)
    expect(exportCa(source.root).privateKey.endsWith("-----END PRIVATE KEY-----\n")).toBe(true)
  })
})
