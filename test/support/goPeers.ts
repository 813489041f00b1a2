/**
 * Go peers for tests and benchmarks: the Go gateway peer (test/go/gateway)
 * and the Go reference relay (bench/go-relay), both built against Debian's
 * golang.org/x/crypto 0.4.0 in GOPATH mode.
 *
 * - buildGoPeer(): builds once into <repo>/.cache/go-bin/ (rebuilt when a .go
 *   source is newer than the binary; concurrent vitest workers each build to
 *   a private temp file and atomically rename it into place).
 * - spawnPeer()/PeerSet: spawn, wait for stdout lines (no sleeping: resolves on
 *   the line, rejects on exit or timeout), kill.
 * - mint*(): throw-away OpenSSH (ssh-keygen) and X.509 (openssl) material.
 * - dialRelay()/nestedTls(): a client that dials like Infisical's backend.
 *
 * Plain Node (promises), not Effect: this is test scaffolding around external
 * processes.
 */
import { execFile, spawn, type ChildProcess } from "node:child_process"
import { createCipheriv, randomBytes } from "node:crypto"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import * as readline from "node:readline"
import * as tls from "node:tls"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"

const execFileP = promisify(execFile)

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..")
export const goCacheDir = path.join(repoRoot, ".cache")
export const goBinDir = path.join(goCacheDir, "go-bin")

// ---------------------------------------------------------------------------
// building

export type GoPeerName = "gateway" | "go-relay"

const goSources: Record<GoPeerName, string> = {
  gateway: path.join(repoRoot, "test", "go", "gateway"),
  "go-relay": path.join(repoRoot, "bench", "go-relay")
}

/** Environment for `go build` in GOPATH mode against /usr/share/gocode. */
export const goBuildEnv = (): NodeJS.ProcessEnv => ({
  ...process.env,
  GO111MODULE: "off",
  GOPATH: `/usr/share/gocode:${path.join(goCacheDir, "gopath")}`,
  GOCACHE: path.join(goCacheDir, "go-build"),
  GOFLAGS: "",
  CGO_ENABLED: "0"
})

const newestSourceMtime = async (dir: string): Promise<number> => {
  const entries = await fs.readdir(dir)
  let newest = 0
  for (const entry of entries) {
    if (!entry.endsWith(".go")) continue
    const st = await fs.stat(path.join(dir, entry))
    newest = Math.max(newest, st.mtimeMs)
  }
  return newest
}

/**
 * Build the Go program in `srcDir` to `out` unless the binary is newer than every .go file. The
 * build goes to a private temp file renamed into place: rename(2) is atomic, so a parallel worker
 * sees either the old or the new complete binary, never a partial one.
 */
export const buildGoProgram = async (srcDir: string, out: string): Promise<string> => {
  const [srcMtime, binStat] = await Promise.all([
    newestSourceMtime(srcDir),
    fs.stat(out).catch(() => undefined)
  ])
  if (binStat !== undefined && binStat.mtimeMs >= srcMtime) return out

  await fs.mkdir(path.dirname(out), { recursive: true })
  const tmp = `${out}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`
  try {
    await execFileP("go", ["build", "-o", tmp, "."], {
      cwd: srcDir,
      env: goBuildEnv(),
      maxBuffer: 16 * 1024 * 1024
    })
    await fs.rename(tmp, out)
  } catch (err) {
    await fs.rm(tmp, { force: true })
    const e = err as { stderr?: string; message: string }
    throw new Error(`go build ${path.basename(srcDir)} failed: ${e.stderr ?? e.message}`)
  }
  return out
}

const buildOnce = (name: GoPeerName): Promise<string> => buildGoProgram(goSources[name], path.join(goBinDir, name))

const builds = new Map<GoPeerName, Promise<string>>()

/** Path of the built binary, building it first if needed (memoized per process). */
export const buildGoPeer = (name: GoPeerName): Promise<string> => {
  let p = builds.get(name)
  if (p === undefined) {
    p = buildOnce(name)
    builds.set(name, p)
    p.catch(() => builds.delete(name))
  }
  return p
}

export const buildGoPeers = async (): Promise<{ gateway: string; relay: string }> => {
  const [gateway, relay] = await Promise.all([buildGoPeer("gateway"), buildGoPeer("go-relay")])
  return { gateway, relay }
}

// ---------------------------------------------------------------------------
// processes

export interface PeerExit {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
}

export interface WaitOptions {
  /** Reject after this long (default 30 s). */
  readonly timeoutMs?: number
  /** Only consider stdout lines with index >= fromLine (default 0: every line seen so far). */
  readonly fromLine?: number
}

export interface PeerProcess {
  readonly label: string
  readonly child: ChildProcess
  /** Every stdout line so far. */
  readonly lines: ReadonlyArray<string>
  /** stderr so far. */
  stderr(): string
  /** Resolves once the process has exited and its stdio is closed. */
  readonly exited: Promise<PeerExit>
  /** Resolves with the first stdout line matching `re`; rejects on exit or timeout. */
  waitForLine(re: RegExp, opts?: WaitOptions): Promise<RegExpExecArray>
  /** Signals the process (default SIGTERM, SIGKILL after 5 s) and waits for it to exit. */
  kill(signal?: NodeJS.Signals): Promise<PeerExit>
}

export const spawnPeer = (bin: string, args: ReadonlyArray<string>, label = path.basename(bin)): PeerProcess => {
  const child = spawn(bin, [...args], { stdio: ["ignore", "pipe", "pipe"] })
  const lines: Array<string> = []
  let stderr = ""
  let exit: PeerExit | undefined
  const listeners = new Set<() => void>()
  const notify = () => {
    for (const l of [...listeners]) l()
  }

  child.stderr!.setEncoding("utf8")
  child.stderr!.on("data", (chunk: string) => {
    stderr += chunk
  })
  readline.createInterface({ input: child.stdout! }).on("line", (line) => {
    lines.push(line)
    notify()
  })

  const exited = new Promise<PeerExit>((resolve) => {
    child.on("error", (err) => {
      stderr += `\nspawn error: ${err.message}`
    })
    // "close" fires after stdout/stderr are drained, so no line is lost.
    child.on("close", (code, signal) => {
      exit = { code, signal }
      resolve(exit)
      notify()
    })
  })

  const describe = () =>
    `${label} (pid ${child.pid ?? "?"})` +
    (exit ? ` exited code=${exit.code} signal=${exit.signal}` : "") +
    `\n--- stdout ---\n${lines.slice(-20).join("\n")}\n--- stderr ---\n${stderr.slice(-2000)}`

  const waitForLine = (re: RegExp, opts: WaitOptions = {}): Promise<RegExpExecArray> =>
    new Promise((resolve, reject) => {
      let next = opts.fromLine ?? 0
      const check = (): boolean => {
        for (; next < lines.length; next++) {
          const m = re.exec(lines[next]!)
          if (m) {
            done()
            resolve(m)
            return true
          }
        }
        if (exit) {
          done()
          reject(new Error(`waiting for ${re}: ${describe()}`))
          return true
        }
        return false
      }
      const timer = setTimeout(() => {
        done()
        reject(new Error(`timed out waiting for ${re}: ${describe()}`))
      }, opts.timeoutMs ?? 30_000)
      const listener = () => {
        check()
      }
      const done = () => {
        clearTimeout(timer)
        listeners.delete(listener)
      }
      listeners.add(listener)
      check()
    })

  const kill = async (signal: NodeJS.Signals = "SIGTERM"): Promise<PeerExit> => {
    if (exit) return exit
    child.kill(signal)
    const guard = setTimeout(() => child.kill("SIGKILL"), 5_000)
    try {
      return await exited
    } finally {
      clearTimeout(guard)
    }
  }

  return {
    label,
    child,
    lines,
    stderr: () => stderr,
    exited,
    waitForLine,
    kill
  }
}

/** Tracks spawned peers so a test can kill them all in afterEach/afterAll. */
export class PeerSet {
  private readonly procs = new Set<PeerProcess>()

  spawn(bin: string, args: ReadonlyArray<string>, label?: string): PeerProcess {
    const p = spawnPeer(bin, args, label)
    this.procs.add(p)
    return p
  }

  async killAll(): Promise<void> {
    const all = [...this.procs]
    this.procs.clear()
    await Promise.all(all.map((p) => p.kill()))
  }
}

// ---------------------------------------------------------------------------
// starting the peers

export interface GoRelayOptions {
  readonly name: string
  readonly hostKey: string
  /** Required unless rawHostKey. */
  readonly hostCert?: string
  readonly rawHostKey?: boolean
  readonly clientCa?: string
  readonly tlsCert: string
  readonly tlsKey: string
  readonly tlsClientChain: string
  readonly sshAddr?: string
  readonly tlsAddr?: string
  readonly verbose?: boolean
}

export interface GoRelay {
  readonly proc: PeerProcess
  readonly sshAddr: string
  readonly sshPort: number
  readonly tlsPort: number
  /** Resolves once gateway `id` is registered in the relay's tunnel map. */
  waitForTunnel(id: string, opts?: WaitOptions): Promise<void>
}

const portOf = (addr: string): number => Number(addr.slice(addr.lastIndexOf(":") + 1))

export const startGoRelay = async (peers: PeerSet, o: GoRelayOptions): Promise<GoRelay> => {
  const bin = await buildGoPeer("go-relay")
  const args = [
    "-name", o.name,
    "-host-key", o.hostKey,
    "-tls-cert", o.tlsCert,
    "-tls-key", o.tlsKey,
    "-tls-client-chain", o.tlsClientChain,
    "-ssh-addr", o.sshAddr ?? "127.0.0.1:0",
    "-tls-addr", o.tlsAddr ?? "127.0.0.1:0"
  ]
  if (o.hostCert !== undefined) args.push("-host-cert", o.hostCert)
  if (o.rawHostKey === true) args.push("-raw-host-key")
  if (o.clientCa !== undefined) args.push("-client-ca", o.clientCa)
  if (o.verbose === true) args.push("-v")
  const proc = peers.spawn(bin, args, "go-relay")
  const m = await proc.waitForLine(/^LISTENING ssh=(\S+) tls=(\S+)$/)
  const sshAddr = m[1]!
  return {
    proc,
    sshAddr,
    sshPort: portOf(sshAddr),
    tlsPort: portOf(m[2]!),
    waitForTunnel: async (id, opts) => {
      await proc.waitForLine(new RegExp(`^TUNNEL UP ${escapeRe(id)}( |$)`), opts)
    }
  }
}

/**
 * Channel handlers of the Go gateway peer: echo; tls-ping (inner TLS, PONG); sink (answers
 * "<bytes> <sha256>" after EOF); source:N (N bytes of sourceStreamBytes, then EOF); duplex:N
 * (source:N while hashing the input, then "<bytes> <sha256>\n" and EOF); stats; reject (refuses
 * every channel open with code 1).
 */
export type GatewayMode = "echo" | "tls-ping" | "sink" | "stats" | "reject" | `source:${number}` | `duplex:${number}`

export interface GoGatewayOptions {
  readonly addr: string
  readonly user: string
  readonly cert: string
  readonly key: string
  readonly mode?: GatewayMode
  readonly hostPrincipal?: string
  readonly ca?: string
  readonly skipHostCertCheck?: boolean
  readonly kex?: string
  readonly ciphers?: string
  readonly macs?: string
  /** Comma list, or "default" for x/crypto's default list (the real gateway's). */
  readonly hostKeyAlgos?: string
  /** Go duration strings, e.g. "200ms". */
  readonly keepaliveInterval?: string
  readonly keepaliveTimeout?: string
  readonly rekeyThreshold?: number
  /** After READY, open a channel of each type and print `OPEN type=.. result=..` lines. */
  readonly openChannels?: ReadonlyArray<string>
  /** After READY, send each global request with want-reply and print `GLOBAL_REQUEST` lines. */
  readonly globalRequests?: ReadonlyArray<string>
  readonly tls?: { readonly cert: string; readonly key: string; readonly clientCa: string }
}

/** Spawns the Go gateway peer; does not wait for READY (use `proc.waitForLine(/^READY/)`). */
export const spawnGoGateway = async (peers: PeerSet, o: GoGatewayOptions, label = "gateway"): Promise<PeerProcess> => {
  const bin = await buildGoPeer("gateway")
  const args = ["-addr", o.addr, "-user", o.user, "-cert", o.cert, "-key", o.key, "-mode", o.mode ?? "echo"]
  const opt = (flag: string, v: string | number | undefined) => {
    if (v !== undefined) args.push(flag, String(v))
  }
  opt("-host-principal", o.hostPrincipal)
  opt("-ca", o.ca)
  opt("-kex", o.kex)
  opt("-ciphers", o.ciphers)
  opt("-macs", o.macs)
  opt("-host-key-algos", o.hostKeyAlgos)
  opt("-keepalive-interval", o.keepaliveInterval)
  opt("-keepalive-timeout", o.keepaliveTimeout)
  opt("-rekey-threshold", o.rekeyThreshold)
  opt("-open-channels", o.openChannels?.join(","))
  opt("-global-requests", o.globalRequests?.join(","))
  if (o.skipHostCertCheck === true) args.push("-skip-host-cert-check")
  if (o.tls !== undefined) args.push("-tls-cert", o.tls.cert, "-tls-key", o.tls.key, "-tls-client-ca", o.tls.clientCa)
  return peers.spawn(bin, args, label)
}

const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")

// ---------------------------------------------------------------------------
// OpenSSH material (ssh-keygen)

export const makeTempDir = (prefix = "go-peers-"): Promise<string> => fs.mkdtemp(path.join(os.tmpdir(), prefix))

export interface SshKeyPair {
  readonly privateKeyPath: string
  readonly publicKeyPath: string
  readonly publicKeyLine: string
}

/** RSA-2048 key pair in OpenSSH format, like the backend's `ssh-keygen` output. */
export const mintSshKeyPair = async (dir: string, name: string): Promise<SshKeyPair> => {
  const privateKeyPath = path.join(dir, name)
  await execFileP("ssh-keygen", ["-q", "-t", "rsa", "-b", "2048", "-N", "", "-C", `${name}@test`, "-f", privateKeyPath])
  const publicKeyPath = `${privateKeyPath}.pub`
  return { privateKeyPath, publicKeyPath, publicKeyLine: await fs.readFile(publicKeyPath, "utf8") }
}

export interface SshCertOptions {
  readonly keyId: string
  readonly principals: ReadonlyArray<string>
  readonly host?: boolean
  /** ssh-keygen -V value (default "-1m:+1d": backdated a little, like the backend). */
  readonly validity?: string
  /** Unique output name (several certs may be issued for one key). */
  readonly name: string
}

/** Signs `publicKeyPath` with `ca`; returns the path of the certificate line. */
export const signSshCert = async (dir: string, ca: SshKeyPair, publicKeyPath: string, o: SshCertOptions): Promise<string> => {
  const pub = path.join(dir, `${o.name}.pub`)
  if (path.resolve(pub) !== path.resolve(publicKeyPath)) await fs.copyFile(publicKeyPath, pub)
  const args = ["-q", "-s", ca.privateKeyPath, "-I", o.keyId, "-n", o.principals.join(","), "-V", o.validity ?? "-1m:+1d"]
  if (o.host === true) args.push("-h")
  await execFileP("ssh-keygen", [...args, pub])
  return path.join(dir, `${o.name}-cert.pub`)
}

export interface SshMaterial {
  readonly dir: string
  /** Signs gateway user certs (the relay's `ssh.clientCAPublicKey`). */
  readonly clientCa: SshKeyPair
  /** Signs relay host certs (the gateway's `ssh.serverCAPublicKey`). */
  readonly serverCa: SshKeyPair
  readonly gatewayKey: SshKeyPair
  readonly gatewayCert: string
  readonly hostKey: SshKeyPair
  readonly hostCert: string
  readonly hostPrincipal: string
  /** Issues another user cert for the same gateway key (e.g. a second gateway id). */
  userCert(gatewayId: string, gatewayName?: string, keyId?: string): Promise<string>
}

/**
 * CA key pairs, a gateway user cert (`-I client-<relayName> -n <id>,<name>`)
 * and a relay host cert (`-h -I relay-server -n <host>:<port>`). The host
 * principal defaults to `127.0.0.1:2222`, the production form; a gateway
 * dialing a random test port passes it as -host-principal.
 */
export const mintSshMaterial = async (o: {
  readonly dir: string
  readonly relayName: string
  readonly gatewayId: string
  readonly gatewayName?: string
  readonly host?: string
  readonly port?: number
}): Promise<SshMaterial> => {
  const { dir } = o
  const [clientCa, serverCa, gatewayKey, hostKey] = await Promise.all([
    mintSshKeyPair(dir, "ssh-client-ca"),
    mintSshKeyPair(dir, "ssh-server-ca"),
    mintSshKeyPair(dir, "gateway-key"),
    mintSshKeyPair(dir, "relay-host-key")
  ])
  const hostPrincipal = `${o.host ?? "127.0.0.1"}:${o.port ?? 2222}`
  let serial = 0
  const userCert = (gatewayId: string, gatewayName?: string, keyId = `client-${o.relayName}`) =>
    signSshCert(dir, clientCa, gatewayKey.publicKeyPath, {
      keyId,
      principals: gatewayName === undefined ? [gatewayId] : [gatewayId, gatewayName],
      name: `gateway-user-${serial++}`
    })
  const [gatewayCert, hostCert] = await Promise.all([
    userCert(o.gatewayId, o.gatewayName ?? "test-gateway"),
    signSshCert(dir, serverCa, hostKey.publicKeyPath, {
      keyId: "relay-server",
      principals: [hostPrincipal],
      host: true,
      name: "relay-host"
    })
  ])
  return { dir, clientCa, serverCa, gatewayKey, gatewayCert, hostKey, hostCert, hostPrincipal, userCert }
}

// ---------------------------------------------------------------------------
// X.509 material (openssl). Deliberately simple: one CA per side, no
// intermediates; the profile-exact minting lives elsewhere.

export interface X509Pair {
  readonly certPath: string
  readonly keyPath: string
  readonly certPem: string
  readonly keyPem: string
}

const openssl = (args: ReadonlyArray<string>) => execFileP("openssl", [...args])

const readPair = async (certPath: string, keyPath: string): Promise<X509Pair> => ({
  certPath,
  keyPath,
  certPem: await fs.readFile(certPath, "utf8"),
  keyPem: await fs.readFile(keyPath, "utf8")
})

const minimalReqConfig = async (dir: string, name: string, extensions = ""): Promise<string> => {
  const p = path.join(dir, `${name}.cnf`)
  await fs.writeFile(p, `[req]\ndistinguished_name = dn\n[dn]\n${extensions}`)
  return p
}

/** Self-signed RSA-2048 CA (PKCS#8 key). */
export const mintX509Ca = async (dir: string, name: string, subject: string): Promise<X509Pair> => {
  const cnf = await minimalReqConfig(
    dir,
    name,
    "[v3_ca]\nbasicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign\nsubjectKeyIdentifier = hash\n"
  )
  const certPath = path.join(dir, `${name}.crt`)
  const keyPath = path.join(dir, `${name}.key`)
  await openssl([
    "req", "-x509", "-config", cnf, "-extensions", "v3_ca", "-newkey", "rsa:2048", "-nodes",
    "-keyout", keyPath, "-out", certPath, "-subj", subject, "-days", "2", "-sha256"
  ])
  return readPair(certPath, keyPath)
}

export interface X509LeafOptions {
  readonly subject: string
  readonly eku: "serverAuth" | "clientAuth"
  /** e.g. "IP:127.0.0.1,DNS:localhost" */
  readonly san?: string
  /** Extra `openssl x509 -extfile` lines. */
  readonly extraExtensions?: ReadonlyArray<string>
  /** Reuse an existing PKCS#8 key (saves an RSA key generation). */
  readonly keyPath?: string
}

export const mintX509Leaf = async (dir: string, name: string, ca: X509Pair, o: X509LeafOptions): Promise<X509Pair> => {
  const keyPath = o.keyPath ?? path.join(dir, `${name}.key`)
  if (o.keyPath === undefined) {
    await openssl(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", keyPath])
  }
  const cnf = await minimalReqConfig(dir, name)
  const csr = path.join(dir, `${name}.csr`)
  await openssl(["req", "-new", "-config", cnf, "-key", keyPath, "-subj", o.subject, "-out", csr])
  const ext = path.join(dir, `${name}.ext`)
  const lines = [
    "basicConstraints = critical, CA:FALSE",
    `keyUsage = critical, digitalSignature, keyEncipherment${o.eku === "clientAuth" ? ", keyAgreement" : ""}`,
    `extendedKeyUsage = critical, ${o.eku}`,
    "subjectKeyIdentifier = hash",
    "authorityKeyIdentifier = keyid",
    ...(o.san === undefined ? [] : [`subjectAltName = ${o.san}`]),
    ...(o.extraExtensions ?? [])
  ]
  await fs.writeFile(ext, lines.join("\n") + "\n")
  const certPath = path.join(dir, `${name}.crt`)
  await openssl([
    "x509", "-req", "-in", csr, "-CA", ca.certPath, "-CAkey", ca.keyPath, "-set_serial",
    `0x${randomBytes(8).toString("hex")}`, "-days", "1", "-sha256", "-extfile", ext, "-out", certPath
  ])
  return readPair(certPath, keyPath)
}

/** `1.3.6.1.4.1.12345.100.3` with raw UTF-8 JSON `{"name":...}` as extnValue (not DER-wrapped). */
export const gatewayInfoExtension = (gatewayName: string): string =>
  `1.3.6.1.4.1.12345.100.3 = DER:${Buffer.from(JSON.stringify({ name: gatewayName })).toString("hex")}`

export interface TlsMaterial {
  readonly dir: string
  /** Relay-side CA: signs the relay server cert and relay client certs. */
  readonly relayCa: X509Pair
  /** SAN IP:<relayHost>, EKU serverAuth. */
  readonly relayServer: X509Pair
  /** CN = gateway id, EKU clientAuth, gateway-info extension. */
  readonly relayClient: X509Pair
  /** Gateway-side (inner TLS) CA. */
  readonly gatewayCa: X509Pair
  /** SAN DNS:localhost, IP:127.0.0.1, EKU serverAuth. */
  readonly gatewayServer: X509Pair
  /** CN platform:<gateway id>, EKU clientAuth. */
  readonly gatewayClient: X509Pair
  /** Another relay client cert (same key) for a different gateway id. */
  relayClientFor(gatewayId: string, gatewayName?: string): Promise<X509Pair>
}

export const mintTlsMaterial = async (o: {
  readonly dir: string
  readonly gatewayId: string
  readonly gatewayName?: string
  readonly relayHost?: string
}): Promise<TlsMaterial> => {
  const { dir } = o
  const relayHost = o.relayHost ?? "127.0.0.1"
  const hostSan = /^[\d.]+$/.test(relayHost) || relayHost.includes(":") ? `IP:${relayHost}` : `DNS:${relayHost}`
  const [relayCa, gatewayCa] = await Promise.all([
    mintX509Ca(dir, "relay-ca", "/O=Infisical/CN=Test Relay CA"),
    mintX509Ca(dir, "gateway-ca", "/O=test-org/CN=Test Gateway CA")
  ])
  let serial = 0
  const relayClientWithKey = (gatewayId: string, gatewayName: string, keyPath?: string) =>
    mintX509Leaf(dir, `relay-client-${serial++}`, relayCa, {
      subject: `/O=test-org/OU=relay-client/CN=${gatewayId}`,
      eku: "clientAuth",
      extraExtensions: [gatewayInfoExtension(gatewayName)],
      ...(keyPath === undefined ? {} : { keyPath })
    })
  const [relayServer, relayClient, gatewayServer, gatewayClient] = await Promise.all([
    mintX509Leaf(dir, "relay-server", relayCa, {
      subject: `/CN=${relayHost}/O=Infisical/OU=Relay`,
      eku: "serverAuth",
      san: hostSan
    }),
    relayClientWithKey(o.gatewayId, o.gatewayName ?? "test-gateway"),
    mintX509Leaf(dir, "gateway-server", gatewayCa, {
      subject: "/O=test-org/CN=Gateway",
      eku: "serverAuth",
      san: "DNS:localhost,IP:127.0.0.1,IP:::1"
    }),
    mintX509Leaf(dir, "gateway-client", gatewayCa, {
      subject: `/O=test-org/OU=gateway-client/CN=platform:${o.gatewayId}`,
      eku: "clientAuth"
    })
  ])
  return {
    dir,
    relayCa,
    relayServer,
    relayClient,
    gatewayCa,
    gatewayServer,
    gatewayClient,
    relayClientFor: (gatewayId, gatewayName = "test-gateway") =>
      relayClientWithKey(gatewayId, gatewayName, relayClient.keyPath)
  }
}

// ---------------------------------------------------------------------------
// backend-like client

/** Outer TLS to the relay, exactly as the backend's createRelayConnection dials. */
export const dialRelay = (o: {
  readonly port: number
  readonly ca: string
  readonly client: X509Pair
  readonly host?: string
}): Promise<tls.TLSSocket> =>
  new Promise((resolve, reject) => {
    const host = o.host ?? "127.0.0.1"
    const socket = tls.connect({
      host,
      port: o.port,
      servername: host,
      ca: o.ca,
      cert: o.client.certPem,
      key: o.client.keyPem,
      minVersion: "TLSv1.2",
      rejectUnauthorized: true
    })
    socket.once("secureConnect", () => {
      socket.off("error", reject)
      resolve(socket)
    })
    socket.once("error", reject)
  })

/** Inner TLS over an outer socket, as the backend's createGatewayConnection does. */
export const nestedTls = (
  outer: tls.TLSSocket,
  o: { readonly ca: string; readonly client: X509Pair; readonly alpn: string }
): Promise<tls.TLSSocket> =>
  new Promise((resolve, reject) => {
    const socket = tls.connect({
      socket: outer,
      cert: o.client.certPem,
      key: o.client.keyPem,
      ca: o.ca,
      ALPNProtocols: [o.alpn],
      servername: "localhost",
      minVersion: "TLSv1.2",
      maxVersion: "TLSv1.3"
    })
    socket.once("secureConnect", () => {
      socket.off("error", reject)
      if (!socket.authorized) reject(new Error(`inner TLS not authorized: ${String(socket.authorizationError)}`))
      else resolve(socket)
    })
    socket.once("error", reject)
  })

/** Reads a stream to its end. */
export const readAll = (stream: NodeJS.ReadableStream): Promise<Buffer> =>
  new Promise((resolve, reject) => {
    const chunks: Array<Buffer> = []
    stream.on("data", (c: Buffer) => chunks.push(c))
    stream.once("end", () => resolve(Buffer.concat(chunks)))
    stream.once("error", reject)
  })

/** The bytes the Go gateway's `source:N` mode writes: AES-128-CTR keystream, zero key and IV. */
export const sourceStreamBytes = (n: number): Buffer =>
  createCipheriv("aes-128-ctr", Buffer.alloc(16), Buffer.alloc(16)).update(Buffer.alloc(n))
