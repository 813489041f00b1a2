/**
 * Credentials: the relay's current certificate bundle. Registration fills it at startup; renewal
 * swaps it atomically. Listeners read it per new connection, so live connections keep the bundle
 * they started with while new ones get the new one.
 */
import { constants, X509Certificate } from "node:crypto"
import * as tls from "node:tls"
import { Context, Effect, Layer, Redacted, Schema, Stream, SubscriptionRef } from "effect"
import type { RelayCredentialsResponse } from "./controlplane/Api.ts"
import { ControlPlane, type ControlPlaneError } from "./controlplane/ControlPlane.ts"
import { splitPemChain } from "./pki/pem.ts"
import { RelayConfig } from "./RelayConfig.ts"
import { parseCertificate, type SshCertificate } from "./ssh/certs.ts"
import { parseAuthorizedKeyLine, parseOpenSshPrivateKey, type SshPrivateKey } from "./ssh/keys.ts"

export class CredentialsError extends Schema.TaggedError<CredentialsError>()("CredentialsError", {
  detail: Schema.String
}) {
  override get message(): string {
    return `invalid relay credentials: ${this.detail}`
  }
}

export interface CredentialBundle {
  /** TLS server context: leaf certificate only, client CAs = every cert of clientCertificateChain. */
  readonly tls: tls.SecureContextOptions
  readonly tlsNotBefore: Date
  readonly tlsNotAfter: Date
  readonly ssh: {
    /** The OpenSSH host certificate blob and its key: the only host key the relay presents. */
    readonly hostKey: { readonly certificate: Buffer; readonly privateKey: SshPrivateKey }
    readonly hostCertificate: SshCertificate
    /** The SSH client CA public key blob every gateway certificate must be signed by. */
    readonly clientCaPublicKey: Buffer
  }
  readonly receivedAt: Date
}


/** Validate a registration response and turn it into a bundle; a bad bundle is never swapped in. */
export const toBundle = (response: RelayCredentialsResponse, now: Date) =>
  Effect.try({
    try: (): CredentialBundle => {
      const clientCas = splitPemChain(response.pki.clientCertificateChain)
      if (clientCas.length === 0) throw new Error("clientCertificateChain holds no certificate")
      const options: tls.SecureContextOptions = {
        cert: response.pki.serverCertificate,
        key: Redacted.value(response.pki.serverPrivateKey),
        ca: clientCas,
        minVersion: "TLSv1.2",
        // No resumption: Infisical's backend dials afresh every time, and OpenSSL 3.0 makes two
        // stateless TLS 1.3 tickets per handshake, each an encrypted encoding of the session
        // (client certificate included): ~20 % of the server's handshake CPU. With this option it
        // sends two stateful tickets instead, cheap, which no cache here will ever resolve. Every
        // session's client certificate is verified against the current chain, never a ticket.
        secureOptions: constants.SSL_OP_NO_TICKET
      }
      // Fails here, not on the first connection, if the key does not match the certificate.
      tls.createSecureContext(options)
      const leaf = new X509Certificate(response.pki.serverCertificate)
      const hostCertificateBlob = parseAuthorizedKeyLine(response.ssh.serverCertificate).blob
      const hostCertificate = parseCertificate(hostCertificateBlob)
      const privateKey = parseOpenSshPrivateKey(Redacted.value(response.ssh.serverPrivateKey))
      if (!privateKey.publicBlob.equals(hostCertificate.publicKey.blob)) {
        throw new Error("the SSH host private key does not match the host certificate")
      }
      return {
        tls: options,
        tlsNotBefore: new Date(leaf.validFrom),
        tlsNotAfter: new Date(leaf.validTo),
        ssh: {
          hostKey: { certificate: hostCertificateBlob, privateKey },
          hostCertificate,
          clientCaPublicKey: parseAuthorizedKeyLine(response.ssh.clientCAPublicKey).blob
        },
        receivedAt: now
      }
    },
    catch: (e) => new CredentialsError({ detail: e instanceof Error ? e.message : String(e) })
  })

export interface CredentialsShape {
  readonly current: Effect.Effect<CredentialBundle>
  /** Every bundle swapped in after the first. */
  readonly changes: Stream.Stream<CredentialBundle>
  /** Register again and swap the bundle in; on failure the old bundle stays. */
  readonly renew: Effect.Effect<CredentialBundle, ControlPlaneError | CredentialsError>
}

export class Credentials extends Context.Tag("relay/Credentials")<Credentials, CredentialsShape>() {}

export const CredentialsLive = Layer.effect(
  Credentials,
  Effect.gen(function* () {
    const config = yield* RelayConfig
    const controlPlane = yield* ControlPlane
    const fetch = controlPlane.register.pipe(
      Effect.flatMap((response) => toBundle(response, new Date())),
      Effect.tap((bundle) =>
        Effect.annotateCurrentSpan({
          "relay.mode": config.mode._tag,
          "relay.tls_not_after": bundle.tlsNotAfter.toISOString()
        })
      ),
      Effect.withSpan("relay.register", { attributes: { "relay.name": config.name } })
    )
    const first = yield* fetch
    yield* Effect.logInfo(
      config.mode._tag === "EnrolledToken" || config.mode._tag === "EnrolledAws"
        ? "Successfully connected relay and received certificates via v2 API"
        : "Successfully registered relay and received certificates from API"
    )
    const ref = yield* SubscriptionRef.make(first)
    return {
      current: SubscriptionRef.get(ref),
      changes: Stream.drop(ref.changes, 1),
      renew: fetch.pipe(Effect.tap((bundle) => SubscriptionRef.set(ref, bundle)))
    }
  })
)
