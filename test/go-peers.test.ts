/**
 * The Go peers against each other: the Go gateway peer (configured like
 * Infisical's gateway) connected to the Go reference relay (Infisical's relay
 * data path), driven by a Node client that dials like Infisical's backend.
 * These tests validate the peers themselves, so that the same peers can later
 * be pointed at our TypeScript relay.
 */
import { createHash, randomBytes, randomUUID } from "node:crypto"
import * as fs from "node:fs/promises"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import {
  buildGoPeers,
  dialRelay,
  type GatewayMode,
  type GoGatewayOptions,
  type GoRelay,
  makeTempDir,
  mintSshMaterial,
  mintTlsMaterial,
  nestedTls,
  PeerSet,
  readAll,
  type SshMaterial,
  sourceStreamBytes,
  spawnGoGateway,
  startGoRelay,
  type TlsMaterial,
  type X509Pair
} from "./support/goPeers.ts"

const RELAY_NAME = "test-relay"
const MiB = 1024 * 1024
const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex")

let dir: string
let ssh: SshMaterial
let x509: TlsMaterial
let relay: GoRelay
const relayPeers = new PeerSet()
const peers = new PeerSet()

beforeAll(async () => {
  dir = await makeTempDir()
  const firstId = randomUUID()
  const [, sshMaterial, tlsMaterial] = await Promise.all([
    buildGoPeers(),
    mintSshMaterial({ dir, relayName: RELAY_NAME, gatewayId: firstId }),
    mintTlsMaterial({ dir, gatewayId: firstId })
  ])
  ssh = sshMaterial
  x509 = tlsMaterial
  relay = await startGoRelay(relayPeers, {
    name: RELAY_NAME,
    hostCert: ssh.hostCert,
    hostKey: ssh.hostKey.privateKeyPath,
    clientCa: ssh.clientCa.publicKeyPath,
    tlsCert: x509.relayServer.certPath,
    tlsKey: x509.relayServer.keyPath,
    tlsClientChain: x509.relayCa.certPath
  })
})

afterEach(() => peers.killAll())

afterAll(async () => {
  await peers.killAll()
  await relayPeers.killAll()
  if (dir !== undefined) await fs.rm(dir, { recursive: true, force: true })
})

interface ConnectedGateway {
  readonly id: string
  readonly proc: Awaited<ReturnType<typeof spawnGoGateway>>
  /** Relay client cert whose CN routes to this gateway. */
  readonly client: X509Pair
}

/** Starts a gateway with a fresh id and waits until the relay has its tunnel. */
const connectGateway = async (
  mode: GatewayMode,
  extra: Partial<GoGatewayOptions> = {},
  id: string = randomUUID()
): Promise<ConnectedGateway> => {
  const [cert, client] = await Promise.all([ssh.userCert(id, `gw-${id.slice(0, 8)}`), x509.relayClientFor(id)])
  const proc = await spawnGoGateway(peers, {
    addr: relay.sshAddr,
    user: id,
    cert,
    key: ssh.gatewayKey.privateKeyPath,
    hostPrincipal: ssh.hostPrincipal,
    ca: ssh.serverCa.publicKeyPath,
    mode,
    ...extra
  })
  await proc.waitForLine(/^READY /)
  await relay.waitForTunnel(id)
  return { id, proc, client }
}

const dial = (client: X509Pair) => dialRelay({ port: relay.tlsPort, ca: x509.relayCa.certPem, client })

const innerTls = {
  cert: "",
  key: "",
  clientCa: ""
}

describe("Go gateway peer <-> Go reference relay", () => {
  beforeAll(() => {
    innerTls.cert = x509.gatewayServer.certPath
    innerTls.key = x509.gatewayServer.keyPath
    innerTls.clientCa = x509.gatewayCa.certPath
  })

  it("pins the gateway's algorithms, filtered to what x/crypto 0.4.0 implements", async () => {
    const gw = await connectGateway("echo")
    const algos = await gw.proc.waitForLine(/^ALGOS .*$/)
    expect(algos[0]).toBe(
      "ALGOS kex=diffie-hellman-group14-sha256 ciphers=aes128-ctr,aes192-ctr,aes256-ctr macs=hmac-sha2-256 " +
        "hostkeys=rsa-sha2-512-cert-v01@openssh.com,rsa-sha2-256-cert-v01@openssh.com,ssh-rsa-cert-v01@openssh.com"
    )
  })

  it("a backend-style nested TLS client gets PONG (infisical-ping) and health JSON (infisical-health)", async () => {
    const gw = await connectGateway("tls-ping", { tls: innerTls, keepaliveInterval: "100ms" })

    const outer = await dial(gw.client)
    const inner = await nestedTls(outer, { ca: x509.gatewayCa.certPem, client: x509.gatewayClient, alpn: "infisical-ping" })
    expect(inner.alpnProtocol).toBe("infisical-ping")
    expect((await readAll(inner)).toString()).toBe("PONG\n")
    // The relay opened exactly one direct-tcpip channel with no type-specific data.
    await gw.proc.waitForLine(/^CHANNEL 1 type=direct-tcpip extra=0$/)

    const outer2 = await dial(gw.client)
    const health = await nestedTls(outer2, {
      ca: x509.gatewayCa.certPem,
      client: x509.gatewayClient,
      alpn: "infisical-health"
    })
    expect(JSON.parse((await readAll(health)).toString())).toEqual({ status: "ok", heartbeatTTL: 180 })

    // The relay answers keepalive@openssh.com with a failure reply, which
    // the gateway counts as proof of life.
    await gw.proc.waitForLine(/^KEEPALIVE reply=false /)
  })

  it("multiplexes concurrent sessions as channels of one SSH connection", async () => {
    const gw = await connectGateway("tls-ping", { tls: innerTls })
    const ping = async () => {
      const outer = await dial(gw.client)
      const inner = await nestedTls(outer, { ca: x509.gatewayCa.certPem, client: x509.gatewayClient, alpn: "infisical-ping" })
      return (await readAll(inner)).toString()
    }
    expect(await Promise.all(Array.from({ length: 8 }, ping))).toEqual(Array(8).fill("PONG\n"))
    await gw.proc.waitForLine(/^CHANNEL 8 /)
  })

  it("echo: 16 MiB come back unchanged", async () => {
    const gw = await connectGateway("echo")
    const data = randomBytes(16 * MiB)
    const sock = await dial(gw.client)
    const received = readAll(sock)
    sock.end(data)
    const out = await received
    expect(out.length).toBe(data.length)
    expect(sha256(out)).toBe(sha256(data))
  })

  it("sink: 16 MiB arrive intact, with client-initiated rekeys every MiB", async () => {
    const gw = await connectGateway("sink", { rekeyThreshold: MiB })
    const data = randomBytes(16 * MiB)
    const sock = await dial(gw.client)
    const received = readAll(sock)
    sock.end(data)
    expect((await received).toString()).toBe(`${data.length} ${sha256(data)}\n`)
  })

  it("source: 16 MiB of the deterministic stream arrive intact", async () => {
    const n = 16 * MiB
    const gw = await connectGateway(`source:${n}`)
    const sock = await dial(gw.client)
    const received = readAll(sock)
    sock.end() // half-close right away: the gateway keeps writing
    const out = await received
    expect(out.length).toBe(n)
    expect(sha256(out)).toBe(sha256(sourceStreamBytes(n)))
  })

  it("stats mode reports the gateway's counters", async () => {
    const gw = await connectGateway("stats")
    const stats = JSON.parse((await readAll((await dial(gw.client)).end())).toString()) as Record<string, number>
    expect(stats["channelsOpened"]).toBe(1)
    expect(stats["channelsActive"]).toBe(1)
  })

  it("a client cert for a gateway that is not connected is closed with nothing written", async () => {
    const sock = await dial(await x509.relayClientFor(randomUUID()))
    expect((await readAll(sock)).length).toBe(0)
  })

  it("a second connection for the same gateway id is closed; the first keeps working", async () => {
    const first = await connectGateway("echo")
    const cert = await ssh.userCert(first.id, "dup")
    const dup = await spawnGoGateway(
      peers,
      {
        addr: relay.sshAddr,
        user: first.id,
        cert,
        key: ssh.gatewayKey.privateKeyPath,
        hostPrincipal: ssh.hostPrincipal
      },
      "gateway-dup"
    )
    await relay.proc.waitForLine(new RegExp(`^TUNNEL DUPLICATE ${first.id}$`))
    await dup.waitForLine(/^CLOSED /)
    expect((await dup.exited).code).toBe(0)

    const sock = await dial(first.client)
    const received = readAll(sock)
    sock.end("still here")
    expect((await received).toString()).toBe("still here")
  })
})

describe("Go gateway peer keepalive", () => {
  it("closes and exits 3 when a keepalive gets no reply in time", async () => {
    // A dedicated relay, frozen with SIGSTOP once the tunnel is up: the TCP
    // connection stays open but nothing answers.
    const frozen = await startGoRelay(peers, {
      name: RELAY_NAME,
      hostCert: ssh.hostCert,
      hostKey: ssh.hostKey.privateKeyPath,
      tlsCert: x509.relayServer.certPath,
      tlsKey: x509.relayServer.keyPath,
      tlsClientChain: x509.relayCa.certPath
    })
    const id = randomUUID()
    const gw = await spawnGoGateway(peers, {
      addr: frozen.sshAddr,
      user: id,
      cert: await ssh.userCert(id),
      key: ssh.gatewayKey.privateKeyPath,
      hostPrincipal: ssh.hostPrincipal,
      keepaliveInterval: "100ms",
      keepaliveTimeout: "300ms"
    })
    await frozen.waitForTunnel(id)
    await gw.waitForLine(/^KEEPALIVE reply=false /)
    frozen.proc.child.kill("SIGSTOP")
    try {
      await gw.waitForLine(/^CLOSED keepalive-timeout$/)
      expect((await gw.exited).code).toBe(3)
    } finally {
      frozen.proc.child.kill("SIGCONT")
    }
  })
})

describe("Go gateway peer host-key checks", () => {
  const expectHandshakeFailure = async (opts: Partial<GoGatewayOptions> & { addr: string }, stderr: RegExp) => {
    const id = randomUUID()
    const gw = await spawnGoGateway(peers, {
      user: id,
      cert: await ssh.userCert(id),
      key: ssh.gatewayKey.privateKeyPath,
      hostPrincipal: ssh.hostPrincipal,
      ...opts
    })
    const exit = await gw.exited
    expect(exit.code).toBe(2)
    expect(gw.lines.some((l) => l.startsWith("READY"))).toBe(false)
    expect(gw.stderr()).toMatch(stderr)
  }

  it("rejects a raw (non-certificate) host key", async () => {
    const rawRelay = await startGoRelay(peers, {
      name: RELAY_NAME,
      rawHostKey: true,
      hostKey: ssh.hostKey.privateKeyPath,
      tlsCert: x509.relayServer.certPath,
      tlsKey: x509.relayServer.keyPath,
      tlsClientChain: x509.relayCa.certPath
    })
    // With x/crypto's default host-key algorithms (the real gateway's
    // setting) the raw key reaches the callback and is refused there.
    await expectHandshakeFailure(
      { addr: rawRelay.sshAddr, hostKeyAlgos: "default" },
      /ssh: handshake failed: host certificates required, raw host keys not allowed/
    )
    // With the certificate-only list the negotiation itself fails.
    await expectHandshakeFailure({ addr: rawRelay.sshAddr }, /ssh: handshake failed: .*no common algorithm for host key/)
  })

  it("rejects a host certificate whose principal is not the dial address", async () => {
    await expectHandshakeFailure(
      { addr: relay.sshAddr, hostPrincipal: "relay.example.com:2222" },
      /host certificate check failed: ssh: principal "relay\.example\.com:2222" not in the set of valid principals/
    )
    // Without -host-principal the principal is the dial address itself
    // (127.0.0.1:<random port>), which the 127.0.0.1:2222 cert does not carry.
    const id = randomUUID()
    const gw = await spawnGoGateway(peers, {
      addr: relay.sshAddr,
      user: id,
      cert: await ssh.userCert(id),
      key: ssh.gatewayKey.privateKeyPath
    })
    expect((await gw.exited).code).toBe(2)
    expect(gw.stderr()).toMatch(/not in the set of valid principals/)
  })

  it("with -ca, rejects a host certificate signed by another CA", async () => {
    await expectHandshakeFailure(
      { addr: relay.sshAddr, ca: ssh.clientCa.publicKeyPath },
      /host certificate check failed: not signed by the expected CA/
    )
  })
})
