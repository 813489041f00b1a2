/**
 * The control plane's certificate authorities, created lazily on first use and then reused, like
 * upstream's `$getInstanceCAs` / `$getOrgCAs` (relay PKI and SSH CAs per scope) and the gateway
 * service's per-org `$getOrgCAs`. One `Authorities` can be shared by several control planes (a
 * test file creates it once: RSA key generation is the slow part).
 */
import { createRelayHierarchy, makeGatewayPki, type GatewayPki, type RelayHierarchy, type RelayPki, type RelayScope } from "../pki/mint.ts"
import type { SshPrivateKey } from "../ssh/keys.ts"
import { generateRsaSshKey, keygenComment, sshKeyFiles } from "./sshIssue.ts"

export interface SshCa {
  readonly key: SshPrivateKey
  /** The CA's `.pub` file (`ssh-rsa <b64> user@host\n`): what relays and gateways receive. */
  readonly publicKey: string
}

/** Per scope: the server CA signs relay host certificates, the client CA signs gateway user certificates. */
export interface SshCas {
  readonly server: SshCa
  readonly client: SshCa
}

export interface Authorities {
  /** RSA modulus length of every key minted here (CAs, leaves, SSH keys). */
  readonly keyBits: number
  /** `user@host` comment of every SSH key, as `ssh-keygen` on the backend host writes it. */
  readonly sshComment: string
  readonly relayPki: (scope: RelayScope) => Promise<RelayPki>
  readonly sshCas: (scope: RelayScope) => Promise<SshCas>
  readonly gatewayPki: (orgId: string) => Promise<GatewayPki>
}

export interface AuthoritiesOptions {
  /** Default 2048 (Infisical's). */
  readonly keyBits?: number
}

/** Caches a promise per key; a failed creation is forgotten so the next call retries. */
const memoize = <A>(create: (key: string) => Promise<A>) => {
  const cache = new Map<string, Promise<A>>()
  return (key: string): Promise<A> => {
    const existing = cache.get(key)
    if (existing) return existing
    const created = create(key)
    cache.set(key, created)
    created.catch(() => cache.delete(key))
    return created
  }
}

const scopeKey = (scope: RelayScope): string => (scope.kind === "instance" ? "instance" : `org:${scope.orgId}`)

export const makeAuthorities = (options: AuthoritiesOptions = {}): Authorities => {
  const keyBits = options.keyBits ?? 2048
  const sshComment = keygenComment()
  const keyOptions = { modulusLength: keyBits }

  const hierarchy = memoize((): Promise<RelayHierarchy> => createRelayHierarchy(keyOptions))
  const newSshCa = async (): Promise<SshCa> => {
    const key = await generateRsaSshKey(keyBits)
    return { key, publicKey: sshKeyFiles(key, sshComment).publicKey }
  }
  const sshCasByScope = memoize(async (): Promise<SshCas> => {
    const [server, client] = await Promise.all([newSshCa(), newSshCa()])
    return { server, client }
  })
  const gatewayPkis = memoize((orgId: string) => makeGatewayPki(orgId, keyOptions))

  return {
    keyBits,
    sshComment,
    relayPki: async (scope) => (await hierarchy("relay")).pki(scope),
    sshCas: (scope) => sshCasByScope(scopeKey(scope)),
    gatewayPki: gatewayPkis
  }
}
