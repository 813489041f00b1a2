/**
 * Starting what is measured: our relay (a `relay start` subprocess registering with the
 * in-process control plane), the Go reference relay, gateways (test/go/gateway), the delay
 * proxy and the two SSH-layer servers. Every process is a Proc, so it dies with the run.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { HOST_PRINCIPAL, type Material, RELAY_HOST, RELAY_NAME, RELAY_SECRET } from "./material.ts"
import { Proc } from "./procs.ts"
import { repoRoot } from "./build.ts"

export interface Relay {
  readonly kind: "ours" | "go"
  readonly proc: Proc
  readonly sshPort: number
  readonly tlsPort: number
  /** Resolves once `total` gateway tunnels have been registered since the relay started. */
  waitTunnels(total: number, timeoutMs?: number): Promise<void>
  stop(): Promise<void>
}

export interface OurRelayOptions {
  /** `dist`: node <compiled bin.js>; `tsx`: node bin/infisical.js (tsx when dist/ is absent). */
  readonly runner: { readonly kind: "dist"; readonly bin: string } | { readonly kind: "tsx" }
  readonly cpuProfDir?: string
}

let relaySerial = 0

export const startOurRelay = async (m: Material, o: OurRelayOptions): Promise<Relay> => {
  const home = path.join(m.dir, `ours-home-${relaySerial++}`)
  fs.mkdirSync(home, { recursive: true })
  const bin = o.runner.kind === "dist" ? o.runner.bin : path.join(repoRoot, "bin", "infisical.js")
  const nodeFlags = o.cpuProfDir === undefined ? [] : ["--cpu-prof", "--cpu-prof-dir", o.cpuProfDir]
  const proc = new Proc("our relay", process.execPath, [
    ...nodeFlags,
    bin,
    "relay",
    "start",
    "--type=instance",
    `--host=${RELAY_HOST}`,
    `--name=${RELAY_NAME}`,
    `--domain=${m.controlPlaneUrl}`,
    "--ssh-port=0",
    "--tls-port=0",
    `--listen-host=${RELAY_HOST}`
  ], {
    cwd: repoRoot,
    env: {
      PATH: process.env["PATH"] ?? "",
      HOME: home,
      INFISICAL_RELAY_STATE_DIR: path.join(home, "state"),
      INFISICAL_RELAY_AUTH_SECRET: RELAY_SECRET,
      // Every benchmark peer dials from 127.0.0.1: per-address accept rates would refuse the 500
      // idle gateways (env, not flags, so that a --relay-bin of an older build still starts).
      INFISICAL_RELAY_SSH_ACCEPT_RATE: "0",
      INFISICAL_RELAY_TLS_ACCEPT_RATE: "0"
    }
  })
  const tls = proc.waitFor(/TLS server listening on 127\.0\.0\.1:(\d+) for clients/, { timeoutMs: 60_000 })
  const ssh = proc.waitFor(/SSH server listening on 127\.0\.0\.1:(\d+) for gateways/, { timeoutMs: 60_000 })
  await proc.waitFor(/Relay server started successfully/, { timeoutMs: 60_000 })
  const tlsPort = Number((await tls)[1])
  m.setRelayTlsPort(tlsPort)
  return {
    kind: "ours",
    proc,
    sshPort: Number((await ssh)[1]),
    tlsPort,
    waitTunnels: async (total, timeoutMs = 120_000) => {
      await proc.waitFor(/Gateway .*\) connected/, { count: total, timeoutMs })
    },
    stop: async () => {
      await proc.stop("SIGTERM", 10_000)
    }
  }
}

export const startGoRelay = async (m: Material, bin: string): Promise<Relay> => {
  const f = m.goRelay
  const proc = new Proc("go relay", bin, [
    "-name", RELAY_NAME,
    "-host-cert", f.hostCert,
    "-host-key", f.hostKey,
    "-client-ca", f.clientCa,
    "-tls-cert", f.tlsCert,
    "-tls-key", f.tlsKey,
    "-tls-client-chain", f.tlsClientChain,
    "-ssh-addr", `${RELAY_HOST}:0`,
    "-tls-addr", `${RELAY_HOST}:0`
  ])
  const match = await proc.waitFor(/^LISTENING ssh=\S+:(\d+) tls=\S+:(\d+)$/)
  return {
    kind: "go",
    proc,
    sshPort: Number(match[1]),
    tlsPort: Number(match[2]),
    waitTunnels: async (total, timeoutMs = 120_000) => {
      await proc.waitFor(/^TUNNEL UP /, { count: total, timeoutMs })
    },
    stop: async () => {
      await proc.stop()
    }
  }
}

export interface Gateway {
  readonly proc: Proc
  /** the gateway ids, in connection order */
  readonly ids: ReadonlyArray<string>
  /** with `listen`: the plain TCP port serving the same handler */
  readonly directPort: number | undefined
}

/**
 * The gateway peer (test/go/gateway) in `-mode bench`: `connections` SSH connections to `sshAddr`
 * (each its own gateway id), and/or a plain TCP listener for the direct baseline.
 */
export const startGateway = async (
  m: Pick<Material, "gateway" | "certFile">,
  bin: string,
  o: { readonly label: string; readonly sshAddr?: string; readonly connections: number; readonly listen?: boolean }
): Promise<Gateway> => {
  const g = m.gateway
  const args = [
    "-mode", "bench",
    "-quiet",
    "-key", g.key,
    "-ca", g.serverCa,
    "-host-principal", HOST_PRINCIPAL,
    "-tls-cert", g.tlsCert,
    "-tls-key", g.tlsKey,
    "-tls-client-ca", g.tlsClientCa,
    "-connections", String(o.connections)
  ]
  let ids: ReadonlyArray<string> = []
  if (o.connections > 0) {
    if (o.sshAddr === undefined) throw new Error("startGateway: connections need sshAddr")
    const certs = m.certFile(o.label, o.connections)
    ids = certs.ids
    args.push("-addr", o.sshAddr, "-certs", certs.path)
  }
  if (o.listen === true) args.push("-listen", "127.0.0.1:0")
  const proc = new Proc(o.label, bin, args)
  let directPort: number | undefined
  if (o.listen === true) directPort = Number((await proc.waitFor(/^LISTENING \S+:(\d+)$/))[1])
  const ready = await proc.waitFor(/^ALL READY ok=(\d+) failed=(\d+)$/, { timeoutMs: 180_000 })
  if (Number(ready[1]) !== o.connections) {
    await proc.stop()
    throw new Error(`${o.label}: ${ready[1]} of ${o.connections} connections up\n${proc.tail()}`)
  }
  return { proc, ids, directPort }
}

const tsxArgs = (script: string, args: ReadonlyArray<string>) => ["--import", "tsx", path.join(repoRoot, "bench", script), ...args]

/** The delay proxy in its own process: `delayMs` each way in front of `targetPort`. */
export const startDelayProxy = async (targetPort: number, delayMs: number): Promise<{ proc: Proc; port: number }> => {
  const proc = new Proc("delay proxy", process.execPath, tsxArgs("delayProxy.ts", [
    "--target", `127.0.0.1:${targetPort}`,
    "--delay-ms", String(delayMs)
  ]), { cwd: repoRoot })
  const m = await proc.waitFor(/^LISTENING \S+:(\d+)$/)
  return { proc, port: Number(m[1]) }
}

export interface SshServer {
  readonly kind: "ours" | "go"
  readonly proc: Proc
  readonly port: number
}

/** The SSH-layer servers: ours (bench/sshServer.ts on src/ssh) or Go's (bench/go-ssh-server). */
export const startSshServer = async (m: Material, kind: "ours" | "go", goBin: string): Promise<SshServer> => {
  const files = ["--host-cert", m.goRelay.hostCert, "--host-key", m.goRelay.hostKey]
  const proc = kind === "ours"
    ? new Proc("our ssh server", process.execPath, tsxArgs("sshServer.ts", files), { cwd: repoRoot, stdin: true })
    : new Proc("go ssh server", goBin, ["-host-cert", m.goRelay.hostCert, "-host-key", m.goRelay.hostKey], { stdin: true })
  const match = await proc.waitFor(/^LISTENING \S+:(\d+)$/)
  return { kind, proc, port: Number(match[1]) }
}
