/**
 * A demo gateway for `infisical relay dev`, on our SSH client role: it connects to the relay like
 * Infisical's gateway (user certificate, host certificate checked against the server CA and the
 * `<relayHost>:2222` principal, keepalives) and serves every `direct-tcpip` channel the relay
 * opens with an inner TLS server, as the real gateway does: `infisical-ping` answers `PONG`,
 * `infisical-health` its JSON, `infisical-tcp-proxy` proxies to the target named in the client
 * certificate's routing extension (loopback targets only: this is a demo).
 */
import * as net from "node:net"
import * as tls from "node:tls"
import { Effect, Schema } from "effect"
import { GATEWAY_ROUTING_INFO_OID, x509 } from "../pki/mint.ts"
import { CERT_TYPE_HOST, verifyCertificateSignature } from "../ssh/certs.ts"
import { connectSsh, type SshClientConnection } from "../ssh/client.ts"
import type { SshChannel } from "../ssh/channel.ts"
import { parseAuthorizedKeyLine, parseOpenSshPrivateKey } from "../ssh/keys.ts"
import type { GatewayRegistration } from "./gateways.ts"

export class DemoGatewayError extends Schema.TaggedError<DemoGatewayError>()("DemoGatewayError", {
  detail: Schema.String
}) {
  override get message(): string {
    return `demo gateway: ${this.detail}`
  }
}

const ALPN = ["infisical-ping", "infisical-health", "infisical-tcp-proxy"]

const isLoopback = (host: string) => host === "localhost" || host === "::1" || /^127\./.test(host)

/** The routing extension `{"targetHost","targetPort"}` of the inner client certificate. */
const routingOf = (der: Buffer): { targetHost: string; targetPort: number } | undefined => {
  try {
    const ext = new x509.X509Certificate(der).getExtension(GATEWAY_ROUTING_INFO_OID)
    if (!ext) return undefined
    const value: unknown = JSON.parse(Buffer.from(ext.value).toString("utf8"))
    if (typeof value !== "object" || value === null) return undefined
    const { targetHost, targetPort } = value as Record<string, unknown>
    return typeof targetHost === "string" && typeof targetPort === "number" ? { targetHost, targetPort } : undefined
  } catch {
    return undefined
  }
}

/** Serve one relay channel: the gateway's inner TLS, then the mode the client asked for by ALPN. */
const serveChannel = (channel: SshChannel, context: tls.SecureContext) => {
  const inner = new tls.TLSSocket(channel, {
    isServer: true,
    secureContext: context,
    requestCert: true,
    rejectUnauthorized: true,
    ALPNProtocols: ALPN
  })
  inner.on("error", () => inner.destroy())
  inner.once("secure", () => {
    switch (inner.alpnProtocol) {
      case "infisical-ping":
        inner.end("PONG\n")
        return
      case "infisical-health":
        inner.end(`${JSON.stringify({ status: "ok", heartbeatTTL: 180 })}\n`)
        return
      case "infisical-tcp-proxy": {
        const der = inner.getPeerX509Certificate()?.raw
        const route = der ? routingOf(der) : undefined
        if (!route || !isLoopback(route.targetHost)) {
          inner.destroy()
          return
        }
        const upstream = net.connect({ port: route.targetPort, host: route.targetHost, allowHalfOpen: true })
        upstream.on("error", () => inner.destroy())
        inner.on("close", () => upstream.destroy())
        // After the target's EOF, pipe() ends the TLS side once it has written everything out.
        upstream.on("close", () => {
          if (!upstream.readableEnded) inner.destroy()
        })
        inner.pipe(upstream).pipe(inner)
        return
      }
      default:
        inner.destroy()
    }
  })
}

export interface DemoGateway {
  readonly gatewayId: string
  readonly connection: SshClientConnection
}

/** Connect the demo gateway to the relay's SSH port; it disconnects when the scope closes. */
export const connectDemoGateway = (registration: GatewayRegistration, relaySsh: { host: string; port: number }) =>
  Effect.acquireRelease(
    Effect.tryPromise({
      try: async (): Promise<DemoGateway> => {
        const serverCa = parseAuthorizedKeyLine(registration.ssh.serverCAPublicKey).blob
        const principal = `${registration.relayHost}:2222`
        const context = tls.createSecureContext({
          cert: registration.pki.serverCertificate,
          key: registration.pki.serverPrivateKey,
          ca: registration.pki.clientCertificateChain,
          minVersion: "TLSv1.2"
        })
        const socket = net.connect(relaySsh.port, relaySsh.host)
        socket.setNoDelay(true)
        const connection = connectSsh(socket, {
          username: registration.gatewayId,
          certificate: parseAuthorizedKeyLine(registration.ssh.clientCertificate).blob,
          privateKey: parseOpenSshPrivateKey(registration.ssh.clientPrivateKey),
          hostKeyCheck: (cert) => {
            const now = BigInt(Math.floor(Date.now() / 1000))
            if (cert.certType !== CERT_TYPE_HOST) return "not a host certificate"
            if (!cert.principals.includes(principal)) return `host certificate is not valid for ${principal}`
            if (now < cert.validAfter || now >= cert.validBefore) return "host certificate is not valid now"
            if (!cert.signatureKey.equals(serverCa)) return "host certificate signed by an unknown authority"
            return verifyCertificateSignature(cert) || "bad host certificate signature"
          },
          onDirectTcpip: (channel) => serveChannel(channel, context),
          keepalive: { intervalMs: 30_000, timeoutMs: 15_000 }
        })
        await connection.authenticated
        return { gatewayId: registration.gatewayId, connection }
      },
      catch: (e) => new DemoGatewayError({ detail: e instanceof Error ? e.message : String(e) })
    }),
    ({ connection }) => Effect.sync(() => connection.close("demo gateway stopping"))
  )
