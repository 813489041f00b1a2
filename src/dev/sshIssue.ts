/**
 * SSH material exactly as upstream's backend produces it by shelling out to `ssh-keygen`
 * (`ssh-certificate-authority-fns.ts`): RSA keys written as `ssh-keygen -t rsa -N ''` files (with
 * the `user@host` default comment), certificates from `ssh-keygen -s ca -I id -n p1,p2 -V +Ns -z serial`:
 * rsa-sha2-512 signatures, a random 63-bit serial, valid from a minute-aligned backdate to now + TTL.
 */
import { generateKeyPair, randomBytes } from "node:crypto"
import os from "node:os"
import { CERT_TYPE_HOST, CERT_TYPE_USER, signCertificate } from "../ssh/certs.ts"
import {
  encodeOpenSshPrivateKey,
  formatAuthorizedKeyLine,
  publicBlobOf,
  publicKeyOf,
  type SshPrivateKey
} from "../ssh/keys.ts"

export const RELAY_HOST_CERT_KEY_ID = "relay-server"
export const RELAY_SSH_PORT = 2222
export const RELAY_HOST_CERT_TTL_SECONDS = 30 * 24 * 60 * 60
export const GATEWAY_USER_CERT_TTL_SECONDS = 24 * 60 * 60

/** `ssh-keygen -s` without `-O`: the five default user-certificate extensions, all flags. */
export const DEFAULT_USER_EXTENSIONS = [
  "permit-X11-forwarding",
  "permit-agent-forwarding",
  "permit-port-forwarding",
  "permit-pty",
  "permit-user-rc"
] as const

/** ssh-keygen's default key comment: `<login>@<hostname>` of the machine that generated the key. */
export const keygenComment = (): string => {
  let user = process.env["USER"] ?? "root"
  try {
    user = os.userInfo().username
  } catch {
    // No passwd entry (containers): keep the env fallback.
  }
  return `${user}@${os.hostname()}`
}

/** A new RSA key, off the event loop (key generation takes tens of milliseconds). */
export const generateRsaSshKey = (bits: number): Promise<SshPrivateKey> =>
  new Promise((resolve, reject) =>
    generateKeyPair("rsa", { modulusLength: bits, publicExponent: 65537 }, (err, _publicKey, privateKey) => {
      if (err) return reject(err)
      resolve({ type: "ssh-rsa", publicBlob: publicBlobOf(privateKey).blob, key: privateKey })
    })
  )

/** The two files `ssh-keygen -t rsa -N ''` writes: OpenSSH private key and `.pub` line, both ending in `\n`. */
export interface SshKeyFiles {
  readonly privateKey: string
  readonly publicKey: string
}

export const sshKeyFiles = (key: SshPrivateKey, comment: string): SshKeyFiles => ({
  privateKey: encodeOpenSshPrivateKey(key, comment),
  publicKey: formatAuthorizedKeyLine(key.type, key.publicBlob, comment) + "\n"
})

/** upstream `createSshCertSerialNumber`: 8 random bytes, top bit cleared. */
export const sshCertSerial = (): bigint => {
  const bytes = randomBytes(8)
  bytes[0] = bytes[0]! & 0x7f
  return bytes.readBigUInt64BE(0)
}

/** `ssh-keygen -V +<ttl>s`: from ((now - 59) / 60) * 60 ("backdate one minute"), to now + ttl. */
export const relativeValidity = (ttlSeconds: number, nowMs = Date.now()) => {
  const now = Math.floor(nowMs / 1000)
  return {
    validAfter: BigInt(Math.floor((now - 59) / 60) * 60),
    validBefore: BigInt(now + ttlSeconds)
  }
}

export interface IssuedSshCertificate {
  /** The `-cert.pub` file: `ssh-rsa-cert-v01@openssh.com <b64> <comment>\n`. */
  readonly certificate: string
  /** The key's OpenSSH private key file. */
  readonly privateKey: string
}

/** A fresh key plus a certificate for it, as `createSshKeyPair` + `createSshCert` return them. */
export const issueSshCertificate = async (params: {
  readonly ca: SshPrivateKey
  readonly certType: typeof CERT_TYPE_HOST | typeof CERT_TYPE_USER
  readonly keyId: string
  readonly principals: ReadonlyArray<string>
  readonly ttlSeconds: number
  readonly keyBits: number
  readonly comment: string
}): Promise<IssuedSshCertificate> => {
  const key = await generateRsaSshKey(params.keyBits)
  const blob = signCertificate(
    publicKeyOf(key),
    {
      certType: params.certType,
      keyId: params.keyId,
      principals: params.principals,
      ...relativeValidity(params.ttlSeconds),
      serial: sshCertSerial(),
      extensions: params.certType === CERT_TYPE_USER
        ? DEFAULT_USER_EXTENSIONS.map((name) => [name, new Uint8Array(0)] as const)
        : []
    },
    params.ca,
    "rsa-sha2-512"
  )
  return {
    certificate: formatAuthorizedKeyLine("ssh-rsa-cert-v01@openssh.com", blob, params.comment) + "\n",
    privateKey: encodeOpenSshPrivateKey(key, params.comment)
  }
}

/** The relay's host certificate: key id `relay-server`, principal `<host>:2222`, 30 days. */
export const issueRelayHostCertificate = (ca: SshPrivateKey, host: string, keyBits: number, comment: string) =>
  issueSshCertificate({
    ca,
    certType: CERT_TYPE_HOST,
    keyId: RELAY_HOST_CERT_KEY_ID,
    principals: [`${host}:${RELAY_SSH_PORT}`],
    ttlSeconds: RELAY_HOST_CERT_TTL_SECONDS,
    keyBits,
    comment
  })

/** A gateway's user certificate for one relay: key id `client-<relayName>`, 1 day. */
export const issueGatewayUserCertificate = (
  ca: SshPrivateKey,
  relayName: string,
  principals: ReadonlyArray<string>,
  keyBits: number,
  comment: string
) =>
  issueSshCertificate({
    ca,
    certType: CERT_TYPE_USER,
    keyId: `client-${relayName}`,
    principals,
    ttlSeconds: GATEWAY_USER_CERT_TTL_SECONDS,
    keyBits,
    comment
  })
