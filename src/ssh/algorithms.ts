/**
 * Algorithm lists and negotiation (RFC 4253 §7.1).
 *
 * The KEXINIT message is parsed and built here; `negotiate` picks, for each category, the first
 * algorithm on the client's list that is also on the server's list. Pseudo-algorithms that only
 * signal extensions (ext-info, strict KEX) are never selected.
 */
import { randomBytes } from "node:crypto"
import { MSG } from "./constants.ts"
import { SshReader, SshWriter } from "./wire.ts"

export const KEX_CURVE25519 = "curve25519-sha256"
export const KEX_CURVE25519_LIBSSH = "curve25519-sha256@libssh.org"
export const KEX_DH14_SHA256 = "diffie-hellman-group14-sha256"
export const KEX_DH16_SHA512 = "diffie-hellman-group16-sha512"
export const KEX_DH18_SHA512 = "diffie-hellman-group18-sha512"

export const EXT_INFO_C = "ext-info-c"
export const EXT_INFO_S = "ext-info-s"
export const KEX_STRICT_C = "kex-strict-c-v00@openssh.com"
export const KEX_STRICT_S = "kex-strict-s-v00@openssh.com"

/** Names that may appear in a kex_algorithms list but are markers, never key exchanges. */
const PSEUDO_KEX = new Set([EXT_INFO_C, EXT_INFO_S, KEX_STRICT_C, KEX_STRICT_S])

/** Every key exchange we implement, in our order of preference. */
export const KEX_ALGORITHMS: ReadonlyArray<string> = [
  KEX_CURVE25519,
  KEX_CURVE25519_LIBSSH,
  KEX_DH16_SHA512,
  KEX_DH18_SHA512,
  KEX_DH14_SHA256
]

/** Every cipher we implement, in our order of preference. */
export const CIPHER_ALGORITHMS: ReadonlyArray<string> = [
  "aes128-gcm@openssh.com",
  "aes256-gcm@openssh.com",
  "aes128-ctr",
  "aes192-ctr",
  "aes256-ctr"
]

/** Every MAC we implement, in our order of preference. */
export const MAC_ALGORITHMS: ReadonlyArray<string> = [
  "hmac-sha2-256-etm@openssh.com",
  "hmac-sha2-512-etm@openssh.com",
  "hmac-sha2-256",
  "hmac-sha2-512"
]

export const CERT_RSA = "ssh-rsa-cert-v01@openssh.com"
export const CERT_RSA_SHA256 = "rsa-sha2-256-cert-v01@openssh.com"
export const CERT_RSA_SHA512 = "rsa-sha2-512-cert-v01@openssh.com"
export const CERT_ED25519 = "ssh-ed25519-cert-v01@openssh.com"

/** Host key algorithms we can offer for a certificate of the given type (blob type name). */
export const hostKeyAlgorithmsForCertificate = (certType: string): ReadonlyArray<string> => {
  switch (certType) {
    case CERT_RSA:
      return [CERT_RSA_SHA512, CERT_RSA_SHA256, CERT_RSA]
    case CERT_ED25519:
      return [CERT_ED25519]
    default:
      return []
  }
}

/** The certificate blob type that a (possibly rsa-sha2-*) certificate algorithm name uses. */
export const certificateBlobType = (algorithm: string): string | undefined => {
  switch (algorithm) {
    case CERT_RSA:
    case CERT_RSA_SHA256:
    case CERT_RSA_SHA512:
      return CERT_RSA
    case CERT_ED25519:
      return CERT_ED25519
    default:
      return undefined
  }
}

/** Every host key algorithm a client of ours can verify (certificates only). */
export const CLIENT_HOST_KEY_ALGORITHMS: ReadonlyArray<string> = [
  CERT_RSA_SHA512,
  CERT_RSA_SHA256,
  CERT_ED25519,
  CERT_RSA
]

/** Per-connection restriction of the algorithm lists (each list replaces ours, filtered to what we implement). */
export interface AlgorithmPreferences {
  readonly kex?: ReadonlyArray<string>
  readonly hostKey?: ReadonlyArray<string>
  readonly cipher?: ReadonlyArray<string>
  readonly mac?: ReadonlyArray<string>
}

export interface AlgorithmLists {
  readonly kex: ReadonlyArray<string>
  readonly hostKey: ReadonlyArray<string>
  readonly cipher: ReadonlyArray<string>
  readonly mac: ReadonlyArray<string>
}

const restrict = (
  supported: ReadonlyArray<string>,
  wanted: ReadonlyArray<string> | undefined
): ReadonlyArray<string> => (wanted === undefined ? supported : wanted.filter((a) => supported.includes(a)))

/** Our lists for one connection: the defaults, or the caller's restriction of them. */
export const algorithmLists = (
  hostKeyAlgorithms: ReadonlyArray<string>,
  prefs: AlgorithmPreferences | undefined
): AlgorithmLists => {
  const lists: AlgorithmLists = {
    kex: restrict(KEX_ALGORITHMS, prefs?.kex),
    hostKey: restrict(hostKeyAlgorithms, prefs?.hostKey),
    cipher: restrict(CIPHER_ALGORITHMS, prefs?.cipher),
    mac: restrict(MAC_ALGORITHMS, prefs?.mac)
  }
  for (const [k, v] of Object.entries(lists)) {
    if ((v as ReadonlyArray<string>).length === 0) throw new Error(`no supported ${k} algorithm left`)
  }
  return lists
}

export interface KexInit {
  readonly cookie: Uint8Array
  readonly kex: ReadonlyArray<string>
  readonly hostKey: ReadonlyArray<string>
  readonly cipherCS: ReadonlyArray<string>
  readonly cipherSC: ReadonlyArray<string>
  readonly macCS: ReadonlyArray<string>
  readonly macSC: ReadonlyArray<string>
  readonly compressionCS: ReadonlyArray<string>
  readonly compressionSC: ReadonlyArray<string>
  readonly languagesCS: ReadonlyArray<string>
  readonly languagesSC: ReadonlyArray<string>
  readonly firstKexFollows: boolean
}

/** Parse an SSH_MSG_KEXINIT payload (including the message number). */
export const parseKexInit = (payload: Uint8Array): KexInit => {
  const r = new SshReader(payload)
  r.byte()
  const cookie = r.raw(16)
  const kex = r.nameList()
  const hostKey = r.nameList()
  const cipherCS = r.nameList()
  const cipherSC = r.nameList()
  const macCS = r.nameList()
  const macSC = r.nameList()
  const compressionCS = r.nameList()
  const compressionSC = r.nameList()
  const languagesCS = r.nameList()
  const languagesSC = r.nameList()
  const firstKexFollows = r.boolean()
  r.uint32() // reserved
  // RFC 4253 allows nothing after `reserved`; be lenient like OpenSSH and ignore trailing bytes.
  return {
    cookie,
    kex,
    hostKey,
    cipherCS,
    cipherSC,
    macCS,
    macSC,
    compressionCS,
    compressionSC,
    languagesCS,
    languagesSC,
    firstKexFollows
  }
}

/** Build our SSH_MSG_KEXINIT payload. `markers` are appended to the kex list (ext-info, strict KEX). */
export const encodeKexInit = (lists: AlgorithmLists, markers: ReadonlyArray<string>): Buffer => {
  const w = new SshWriter(512)
  w.byte(MSG.KEXINIT)
  w.raw(randomBytes(16))
  w.nameList([...lists.kex, ...markers])
  w.nameList(lists.hostKey)
  w.nameList(lists.cipher)
  w.nameList(lists.cipher)
  w.nameList(lists.mac)
  w.nameList(lists.mac)
  w.nameList(["none"])
  w.nameList(["none"])
  w.nameList([])
  w.nameList([])
  w.boolean(false)
  w.uint32(0)
  return Buffer.from(w.toBuffer())
}

export class NegotiationError extends Error {
  override readonly name = "NegotiationError"
}

export interface Negotiated {
  readonly kex: string
  readonly hostKey: string
  readonly cipherCS: string
  readonly cipherSC: string
  /** undefined when the cipher is an AEAD (the MAC is implicit) */
  readonly macCS: string | undefined
  readonly macSC: string | undefined
}

const AEAD = new Set(["aes128-gcm@openssh.com", "aes256-gcm@openssh.com"])
export const isAeadCipher = (name: string): boolean => AEAD.has(name)

const pick = (
  what: string,
  client: ReadonlyArray<string>,
  server: ReadonlyArray<string>,
  skip?: ReadonlySet<string>
): string => {
  for (const c of client) {
    if (skip?.has(c)) continue
    if (server.includes(c)) return c
  }
  throw new NegotiationError(`no matching ${what} algorithm (client: ${client.join(",")}; server: ${server.join(",")})`)
}

/** RFC 4253 §7.1: the first algorithm on the client's list that the server also supports. */
export const negotiate = (client: KexInit, server: KexInit): Negotiated => {
  const kex = pick("key exchange", client.kex, server.kex, PSEUDO_KEX)
  const hostKey = pick("host key", client.hostKey, server.hostKey)
  const cipherCS = pick("client->server cipher", client.cipherCS, server.cipherCS)
  const cipherSC = pick("server->client cipher", client.cipherSC, server.cipherSC)
  const macCS = AEAD.has(cipherCS) ? undefined : pick("client->server MAC", client.macCS, server.macCS)
  const macSC = AEAD.has(cipherSC) ? undefined : pick("server->client MAC", client.macSC, server.macSC)
  pick("client->server compression", client.compressionCS, server.compressionCS)
  pick("server->client compression", client.compressionSC, server.compressionSC)
  return { kex, hostKey, cipherCS, cipherSC, macCS, macSC }
}

/**
 * Whether the peer's optimistic first key-exchange packet (first_kex_packet_follows) used the
 * right guess: its preferred kex and host key algorithms must be the ones negotiated.
 */
export const guessWasRight = (peer: KexInit, negotiated: Negotiated): boolean =>
  peer.kex.find((k) => !PSEUDO_KEX.has(k)) === negotiated.kex && peer.hostKey[0] === negotiated.hostKey
