/**
 * Interop with an independent implementation: the OpenSSH client (Debian's openssh-client 9.2)
 * against our server. Keys and certificates are made by ssh-keygen; user certificates are checked
 * by the relay's policy (certPolicy.ts).
 *
 * Data path: OpenSSH never accepts a server-opened direct-tcpip channel, but with
 * `ForwardAgent=<socket path>` it accepts server-opened `auth-agent@openssh.com` channels and
 * connects them to that Unix socket, which gives a real bidirectional byte stream through
 * OpenSSH's channel code (windows, packet sizes, rekeying).
 */
import { execFileSync, spawn } from "node:child_process"
import { createHash, randomBytes } from "node:crypto"
import { chmodSync, copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { createServer, type Server } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { checkGatewayCertificate, type CertificateVerdict } from "../../src/ssh/certPolicy.ts"
import { DISCONNECT } from "../../src/ssh/constants.ts"
import { parseAuthorizedKeyLine, parseOpenSshPrivateKey } from "../../src/ssh/keys.ts"
import type { AuthAttempt, ConnectionInfo, SshServerConnection } from "../../src/ssh/server.ts"
import { startTestServer, type TestServer } from "../../src/ssh/testkit.ts"

const RELAY_NAME = "relay1"

interface Record {
  readonly attempts: Array<AuthAttempt>
  conn?: SshServerConnection<CertificateVerdict>
  info?: ConnectionInfo
  username?: string
  close?: { by: string; code: number | undefined; reason: string }
}

type Mode = "close-after-auth" | "stay" | { echo: number }

interface SshResult {
  readonly code: number | null
  readonly log: string
}

describe("OpenSSH client -> our server", () => {
  let dir: string
  let srv: TestServer<CertificateVerdict>
  let agent: Server
  let agentPath: string
  const records: Array<Record> = []
  let mode: Mode = "close-after-auth"
  const echoResults: Array<{ ok: boolean; bytes: number; kexCount: number }> = []

  const keygen = (...args: Array<string>) => execFileSync("ssh-keygen", ["-q", ...args], { cwd: dir })

  /**
   * An identity `name` (a copy of the user key) with `name-cert.pub` issued by ssh-keygen next to
   * it, as OpenSSH expects (ssh pairs a key with <key>-cert.pub).
   */
  const certify = (name: string, ca: string, ...args: Array<string>): void => {
    copyFileSync(join(dir, "user.pub"), join(dir, `${name}.pub`))
    copyFileSync(join(dir, "user"), join(dir, name))
    chmodSync(join(dir, name), 0o600)
    keygen("-s", ca, ...args, `${name}.pub`)
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "ssh-interop-"))
    for (const k of ["ca", "otherca", "host", "user", "user2"]) keygen("-t", "rsa", "-b", "2048", "-N", "", "-f", k, "-C", k)
    keygen("-s", "ca", "-h", "-I", "relay-server", "-n", "127.0.0.1", "host.pub")
    writeFileSync(join(dir, "known_hosts"), `@cert-authority * ${readFileSync(join(dir, "ca.pub"), "utf8")}`)
    certify("good", "ca", "-I", `client-${RELAY_NAME}`, "-n", "gateway-1,gateway-name")
    certify("instance", "ca", "-I", `client-${RELAY_NAME}`, "-n", "gateway-1")
    certify("sha256ca", "ca", "-t", "rsa-sha2-256", "-I", `client-${RELAY_NAME}`, "-n", "gateway-1")
    certify("sha1ca", "ca", "-t", "ssh-rsa", "-I", `client-${RELAY_NAME}`, "-n", "gateway-1")
    certify("expired", "ca", "-I", `client-${RELAY_NAME}`, "-n", "gateway-1", "-V", "20200101:20200102")
    certify("future", "ca", "-I", `client-${RELAY_NAME}`, "-n", "gateway-1", "-V", "+1d:+2d")
    certify("principal", "ca", "-I", `client-${RELAY_NAME}`, "-n", "gateway-2")
    certify("keyid", "ca", "-I", "client-other-relay", "-n", "gateway-1")
    certify("critical", "ca", "-I", `client-${RELAY_NAME}`, "-n", "gateway-1", "-O", "force-command=/bin/true")
    certify("otherca", "otherca", "-I", `client-${RELAY_NAME}`, "-n", "gateway-1")
    // two more identities with certificates from the wrong CA, for the MaxAuthTries test
    for (const k of ["user", "user2"]) {
      copyFileSync(join(dir, `${k}.pub`), join(dir, `bad-${k}.pub`))
      copyFileSync(join(dir, k), join(dir, `bad-${k}`))
      chmodSync(join(dir, `bad-${k}`), 0o600)
      keygen("-s", "otherca", "-I", "x", "-n", "gateway-1", `bad-${k}.pub`)
    }

    const clientCa = parseAuthorizedKeyLine(readFileSync(join(dir, "ca.pub"), "utf8")).blob
    agentPath = join(dir, "agent.sock")
    agent = createServer((s) => {
      s.on("error", () => {})
      s.pipe(s) // echo: whatever the relay sends through OpenSSH comes back
    })
    await new Promise<void>((r) => agent.listen(agentPath, r))

    srv = await startTestServer<CertificateVerdict>(
      () => {
        const rec: Record = { attempts: [] }
        records.push(rec)
        return {
          hostKey: {
            certificate: readFileSync(join(dir, "host-cert.pub"), "utf8"),
            privateKey: parseOpenSshPrivateKey(readFileSync(join(dir, "host"), "utf8"))
          },
          authenticate: ({ username, certificate }) =>
            checkGatewayCertificate({
              username,
              certificate,
              relayName: RELAY_NAME,
              clientCaPublicKey: clientCa,
              now: new Date()
            }),
          onAuthAttempt: (a) => rec.attempts.push(a)
        }
      },
      (conn) => {
        const rec = records.at(-1)!
        rec.conn = conn
        const currentMode = mode
        conn.closed.then((c) => (rec.close = c))
        conn.authenticated.then(
          async (a) => {
            rec.username = a.username
            rec.info = conn.info
            if (currentMode === "stay") return
            if (currentMode === "close-after-auth") {
              await conn.ping(5000)
              conn.close("closed by relay")
              return
            }
            echoResults.push(await echoThroughAgent(conn, currentMode.echo))
            conn.close("closed by relay")
          },
          () => {}
        )
      }
    )
  })

  afterAll(async () => {
    await srv?.close()
    agent?.close()
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true })
  })

  /** Send `size` bytes through an auth-agent@openssh.com channel (echoed back), rekeying on the way. */
  const echoThroughAgent = async (conn: SshServerConnection<CertificateVerdict>, size: number) => {
    const ch = await conn.openChannel("auth-agent@openssh.com")
    const sent = createHash("sha256")
    const got = createHash("sha256")
    let received = 0
    const done = new Promise<void>((resolve, reject) => {
      ch.on("data", (d: Buffer) => {
        got.update(d)
        received += d.length
        if (received >= size) resolve()
      })
      ch.on("error", reject)
      ch.on("close", () => resolve())
    })
    const base = randomBytes(1 << 20)
    for (let i = 0; i * base.length < size; i++) {
      const b = Buffer.from(base)
      b.writeUInt32LE(i, 0)
      sent.update(b)
      if (i % 5 === 2) conn.rekey() // server-initiated rekeys mid-transfer
      if (!ch.write(b)) await new Promise((r) => ch.once("drain", r))
    }
    await done
    ch.destroy()
    return { ok: sent.digest("hex") === got.digest("hex"), bytes: received, kexCount: conn.info.kexCount }
  }

  const ssh = (args: Array<string>, options: { identity?: string; timeoutMs?: number } = {}) =>
    new Promise<SshResult>((resolve) => {
      const identity = options.identity ?? "good"
      const base = [
        "-v",
        "-F",
        "/dev/null",
        "-p",
        String(srv.port),
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "IdentityAgent=none",
        "-o",
        `UserKnownHostsFile=${join(dir, "known_hosts")}`,
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "CheckHostIP=no",
        "-o",
        "ConnectTimeout=10",
        "-i",
        join(dir, identity),
        "-l",
        "gateway-1"
      ]
      const child = spawn("ssh", [...base, ...args], { stdio: ["ignore", "ignore", "pipe"] })
      let log = ""
      child.stderr.on("data", (d: Buffer) => (log += d.toString()))
      const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 20_000)
      child.on("close", (code) => {
        clearTimeout(timer)
        resolve({ code, log })
      })
    })

  /** Run tasks with bounded concurrency. */
  const pool = async <T, R>(items: ReadonlyArray<T>, n: number, f: (t: T) => Promise<R>): Promise<Array<R>> => {
    const out: Array<R> = new Array(items.length)
    let next = 0
    await Promise.all(
      Array.from({ length: n }, async () => {
        while (next < items.length) {
          const i = next++
          out[i] = await f(items[i]!)
        }
      })
    )
    return out
  }

  const KEX = [
    "diffie-hellman-group14-sha256",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org"
  ]
  const CTR = ["aes128-ctr", "aes192-ctr", "aes256-ctr"]
  const GCM = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com"]
  const MACS = ["hmac-sha2-256", "hmac-sha2-512", "hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com"]

  it("handshake, host certificate and user-certificate login for every kex x cipher x MAC", async () => {
    mode = "close-after-auth"
    const combos: Array<[string, string, string]> = []
    for (const kex of KEX) {
      for (const c of CTR) for (const m of MACS) combos.push([kex, c, m])
      for (const c of GCM) combos.push([kex, c, MACS[0]!])
    }
    const first = records.length
    const results = await pool(combos, 4, ([kex, cipher, mac]) =>
      ssh(
        [
          "-o",
          `KexAlgorithms=${kex}`,
          "-o",
          `Ciphers=${cipher}`,
          "-o",
          `MACs=${mac}`,
          "-o",
          "HostKeyAlgorithms=rsa-sha2-256-cert-v01@openssh.com",
          "-N",
          "127.0.0.1"
        ]
      )
    )
    const failures: Array<string> = []
    results.forEach((r, i) => {
      const [kex, cipher, mac] = combos[i]!
      const macShown = GCM.includes(cipher) ? "<implicit>" : mac
      const ok =
        r.log.includes(`kex: algorithm: ${kex}`) &&
        r.log.includes("kex: host key algorithm: rsa-sha2-256-cert-v01@openssh.com") &&
        r.log.includes(`kex: client->server cipher: ${cipher} MAC: ${macShown}`) &&
        r.log.includes(`kex: server->client cipher: ${cipher} MAC: ${macShown}`) &&
        /is known and matches the RSA-CERT host certificate/.test(r.log) &&
        r.log.includes('Authenticated to 127.0.0.1 ([127.0.0.1]') &&
        r.log.includes("resetting send seqnr") && // strict KEX in effect
        r.log.includes("closed by relay") // our DISCONNECT after a keepalive round trip
      if (!ok) failures.push(`${kex} ${cipher} ${mac}:\n${r.log.split("\n").slice(-15).join("\n")}`)
    })
    expect(failures).toEqual([])
    const recs = records.slice(first)
    expect(recs.length).toBe(combos.length)
    const seen = new Set(recs.map((r) => `${r.info?.kex} ${r.info?.cipherCS} ${r.info?.macCS}`))
    for (const [kex, cipher, mac] of combos) {
      expect(seen.has(`${kex} ${cipher} ${GCM.includes(cipher) ? "<implicit>" : mac}`)).toBe(true)
    }
    expect(recs.every((r) => r.username === "gateway-1" && r.info?.strictKex === true)).toBe(true)
  })

  it("every RSA certificate host key algorithm and publickey algorithm (incl. SHA-1 ssh-rsa-cert)", async () => {
    mode = "close-after-auth"
    const hostAlgs = ["rsa-sha2-512-cert-v01@openssh.com", "rsa-sha2-256-cert-v01@openssh.com", "ssh-rsa-cert-v01@openssh.com"]
    const userAlgs = ["rsa-sha2-512-cert-v01@openssh.com", "rsa-sha2-256-cert-v01@openssh.com", "ssh-rsa-cert-v01@openssh.com"]
    const combos = hostAlgs.flatMap((h) => userAlgs.map((u) => [h, u] as const))
    const first = records.length
    const results = await pool(combos, 4, ([h, u]) =>
      ssh(["-o", `HostKeyAlgorithms=${h}`, "-o", `PubkeyAcceptedAlgorithms=${u}`, "-N", "127.0.0.1"], {})
    )
    results.forEach((r, i) => {
      const [h] = combos[i]!
      expect(r.log).toContain(`kex: host key algorithm: ${h}`)
      expect(r.log).toContain("Authenticated to 127.0.0.1")
    })
    const used = records
      .slice(first)
      .flatMap((r) => r.attempts.filter((a) => a.outcome === "success").map((a) => a.publicKeyAlgorithm))
    expect(new Set(used)).toEqual(new Set(userAlgs))
  })

  it("OpenSSH defaults: negotiates, strict KEX on, ext-info seen; CA signatures rsa-sha2-256 and ssh-rsa accepted", async () => {
    mode = "close-after-auth"
    for (const identity of ["good", "instance", "sha256ca", "sha1ca"]) {
      const first = records.length
      const r = await ssh(["-N", "127.0.0.1"], { identity })
      expect(r.log).toContain("Authenticated to 127.0.0.1")
      expect(r.log).toContain("kex_input_ext_info: server-sig-algs=<rsa-sha2-256,rsa-sha2-512,ssh-rsa,ssh-ed25519>")
      expect(r.log).toContain("resetting read seqnr")
      const rec = records[first]!
      expect(rec.info?.strictKex).toBe(true)
      expect(rec.info?.remoteVersion).toMatch(/^SSH-2\.0-OpenSSH_9\.2/)
      const decision = rec.conn !== undefined ? (await rec.conn.authenticated).decision : undefined
      expect(decision).toEqual({
        ok: true,
        identity: { gatewayId: "gateway-1", gatewayName: identity === "good" ? "gateway-name" : "" }
      })
    }
  })

  it("bulk data through OpenSSH's channel code with rekeys from both sides", async () => {
    const combos: Array<Array<string>> = [
      ["diffie-hellman-group14-sha256", "aes128-ctr", "hmac-sha2-256"], // what Infisical's gateway pins
      ["diffie-hellman-group16-sha512", "aes256-ctr", "hmac-sha2-512"],
      ["curve25519-sha256", "aes256-gcm@openssh.com", "hmac-sha2-256"],
      ["diffie-hellman-group18-sha512", "aes192-ctr", "hmac-sha2-512-etm@openssh.com"]
    ]
    const size = 24 * 1024 * 1024
    mode = { echo: size }
    echoResults.length = 0
    for (const [kex, cipher, mac] of combos) {
      const r = await ssh(
        [
          "-o",
          `KexAlgorithms=${kex}`,
          "-o",
          `Ciphers=${cipher}`,
          "-o",
          `MACs=${mac}`,
          "-o",
          `ForwardAgent=${agentPath}`,
          "-o",
          "RekeyLimit=4M", // client-initiated rekeys too
          "-N",
          "127.0.0.1"
        ],
        { timeoutMs: 60_000 }
      )
      expect(r.log).toContain("Authenticated to 127.0.0.1")
      expect(r.log).toContain("closed by relay")
    }
    expect(echoResults.length).toBe(combos.length)
    for (const e of echoResults) {
      expect(e).toMatchObject({ ok: true, bytes: size })
      expect(e.kexCount).toBeGreaterThan(6) // 48 MiB moved with RekeyLimit=4M plus our own rekeys
    }
  })

  it("rejects a raw key and every bad certificate (CA, validity, principal, type, key id, critical option)", async () => {
    mode = "close-after-auth"
    // (A host certificate cannot be tried this way: OpenSSH will not offer one for user auth; see
    // server-auth.test.ts and transport.test.ts for that case.)
    const cases: Array<[string, RegExp]> = [
      ["user", /certificates required, raw public keys not allowed/],
      ["otherca", /unrecognized authority/],
      ["expired", /cert has expired/],
      ["future", /cert is not yet valid/],
      ["principal", /not in the set of valid principals/],
      ["keyid", /Key ID does not match/],
      ["critical", /unsupported critical option "force-command"/]
    ]
    for (const [identity, reason] of cases) {
      const first = records.length
      const r = await ssh(["-N", "127.0.0.1"], { identity })
      expect(r.code).toBe(255)
      expect(r.log).toContain("Permission denied (publickey)")
      expect(r.log).not.toContain("Authenticated to")
      const rec = records[first]!
      expect(rec.username).toBeUndefined()
      expect(rec.attempts.some((a) => a.outcome === "failure" && reason.test(a.reason ?? ""))).toBe(true)
      expect(rec.attempts.some((a) => a.outcome !== "failure")).toBe(false)
    }
  })

  it("none and password/keyboard-interactive are refused with only publickey listed", async () => {
    mode = "close-after-auth"
    const first = records.length
    const r = await ssh(
      ["-o", "PreferredAuthentications=password,keyboard-interactive", "-N", "127.0.0.1"]
    )
    expect(r.log).toMatch(/Authentications that can continue: publickey\r?\n/)
    expect(r.log).toContain("Permission denied (publickey)")
    expect(records[first]!.attempts.map((a) => a.method)).toEqual(["none"])
  })

  it("disconnects after 3 failed authentication attempts", async () => {
    mode = "close-after-auth"
    const first = records.length
    // bad-user offers its bad cert and its raw key, bad-user2 likewise: the third failure disconnects
    const r = await ssh(["-i", join(dir, "bad-user2"), "-N", "127.0.0.1"], { identity: "bad-user" })
    expect(r.log).toMatch(/Received disconnect from 127\.0\.0\.1 port \d+:14: too many authentication failures/)
    const rec = records[first]!
    expect(rec.attempts.map((a) => a.outcome)).toEqual(["failure", "failure", "failure", "failure"]) // none + 3
    expect(rec.close?.code).toBe(DISCONNECT.NO_MORE_AUTH_METHODS_AVAILABLE)
  })

  it("refuses client-opened channels: -W (direct-tcpip) code 3, a session code 1; tcpip-forward fails", async () => {
    mode = "stay"
    const w = await ssh(["-W", "127.0.0.1:80", "127.0.0.1"])
    expect(w.log).toContain("Authenticated to 127.0.0.1")
    expect(w.log).toMatch(/channel 0: open failed: unknown channel type: unknown channel type/)
    const s = await ssh(["127.0.0.1", "true"])
    expect(s.log).toMatch(/channel 0: open failed: administratively prohibited: no shell access/)
    const f = await ssh(["-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:80", "-N", "127.0.0.1"], {})
    expect(f.log).toMatch(/remote port forwarding failed/)
  })

  it("answers OpenSSH's keepalives (ServerAliveInterval) so the client keeps the connection", async () => {
    mode = "stay"
    const first = records.length
    const run = ssh(
      ["-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=1", "-N", "127.0.0.1"]
    )
    for (let i = 0; i < 200 && records[first]?.username === undefined; i++) await new Promise((r) => setTimeout(r, 20))
    await new Promise((r) => setTimeout(r, 3500))
    const rec = records[first]!
    expect(rec.close).toBeUndefined() // still up after 3 keepalive rounds with CountMax=1
    rec.conn!.close("closed by relay")
    const r = await run
    expect(r.log).not.toContain("Timeout, server")
    expect(r.log).toContain("closed by relay")
  })
})
