/** Test helpers: decode certificates with the openssl CLI and read its text output. */
import { spawnSync } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"

export interface OpensslResult {
  readonly status: number | null
  readonly stdout: string
  readonly stderr: string
}

export const openssl = (args: ReadonlyArray<string>, input?: string): OpensslResult => {
  const r = spawnSync("openssl", [...args], { input: input ?? "", encoding: "utf8" })
  if (r.error) throw r.error
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

export interface DecodedExtension {
  readonly critical: boolean
  /** Value lines, trimmed, joined by `\n`. */
  readonly value: string
}

export interface DecodedCertificate {
  readonly text: string
  readonly version: string
  readonly signatureAlgorithm: string
  readonly publicKeyBits: number
  readonly subject: string
  readonly issuer: string
  readonly notBefore: Date
  readonly notAfter: Date
  /** Extension names in certificate order. */
  readonly extensionNames: ReadonlyArray<string>
  readonly extensions: ReadonlyMap<string, DecodedExtension>
}

const field = (text: string, re: RegExp): string => {
  const m = re.exec(text)
  if (!m) throw new Error(`openssl output has no match for ${re}:\n${text}`)
  return m[1]!
}

/** `openssl x509 -text -noout` of a PEM certificate, parsed into its fields. */
export const decodeCertificate = (pem: string): DecodedCertificate => {
  const r = openssl(["x509", "-text", "-noout"], pem)
  if (r.status !== 0) throw new Error(`openssl x509 failed: ${r.stderr}`)
  const text = r.stdout
  const lines = text.split("\n")
  const extensions = new Map<string, DecodedExtension>()
  const extensionNames: Array<string> = []
  const start = lines.findIndex((l) => l.trim() === "X509v3 extensions:")
  if (start >= 0) {
    let current: { name: string; critical: boolean; value: Array<string> } | undefined
    const flush = (): void => {
      if (current) {
        extensionNames.push(current.name)
        extensions.set(current.name, { critical: current.critical, value: current.value.join("\n") })
      }
    }
    for (const line of lines.slice(start + 1)) {
      if (/^ {12}\S/.test(line)) {
        flush()
        const m = /^ {12}(.+?):\s*(critical)?\s*$/.exec(line)
        if (!m) throw new Error(`unexpected extension header: ${line}`)
        current = { name: m[1]!, critical: m[2] === "critical", value: [] }
      } else if (/^ {16}/.test(line)) {
        current?.value.push(line.trim())
      } else {
        break
      }
    }
    flush()
  }
  return {
    text,
    version: field(text, /^\s+Version: (.+)$/m),
    signatureAlgorithm: field(text, /^\s+Signature Algorithm: (.+)$/m),
    publicKeyBits: Number(field(text, /Public-Key: \((\d+) bit\)/)),
    subject: field(text, /^\s+Subject: (.*)$/m),
    issuer: field(text, /^\s+Issuer: (.*)$/m),
    notBefore: new Date(field(text, /Not Before: (.+)$/m)),
    notAfter: new Date(field(text, /Not After : (.+)$/m)),
    extensionNames,
    extensions
  }
}

/** A scratch directory for files openssl needs; `dispose` removes it. */
export interface ScratchDir {
  readonly write: (name: string, content: string) => string
  readonly dispose: () => void
}

export const scratchDir = (): ScratchDir => {
  const dir = mkdtempSync(join(tmpdir(), "pki-test-"))
  return {
    write: (name, content) => {
      const path = join(dir, name)
      writeFileSync(path, content)
      return path
    },
    dispose: () => rmSync(dir, { recursive: true, force: true })
  }
}
