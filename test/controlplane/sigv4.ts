/**
 * An independent SigV4 check of what the relay sends for AWS auth (written from AWS's published
 * algorithm, not from the signer the relay uses): rebuild the canonical request from the header
 * map the control plane receives, and compare signatures.
 */
import { createHash, createHmac } from "node:crypto"

const sha256 = (data: string) => createHash("sha256").update(data).digest("hex")
const hmac = (key: Buffer | string, data: string) => createHmac("sha256", key).update(data).digest()

export interface SigV4Check {
  readonly ok: boolean
  readonly reason?: string
  readonly accessKeyId?: string
  readonly region?: string
  readonly signedHeaders?: ReadonlyArray<string>
}

/** Verify a signed STS request as the backend replays it (POST https://<Host>/ with the body). */
export const verifySigV4 = (
  headers: Readonly<Record<string, string>>,
  body: string,
  secretAccessKey: string
): SigV4Check => {
  const lower = new Map(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]))
  const auth = lower.get("authorization") ?? ""
  const m = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/sts\/aws4_request, SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$/.exec(auth)
  if (!m) return { ok: false, reason: `malformed Authorization: ${auth}` }
  const [, accessKeyId, date, region, signedHeadersText, signature] = m as unknown as [string, string, string, string, string, string]
  const signedHeaders = signedHeadersText.split(";")
  const amzDate = lower.get("x-amz-date") ?? ""
  // The backend's HTTP client adds Content-Length itself when the map leaves it out.
  const value = (name: string) => (name === "content-length" ? lower.get(name) ?? String(Buffer.byteLength(body)) : lower.get(name))
  const canonicalHeaders = signedHeaders.map((h) => `${h}:${(value(h) ?? "").trim()}\n`).join("")
  const canonicalRequest = ["POST", "/", "", canonicalHeaders, signedHeadersText, sha256(body)].join("\n")
  const scope = `${date}/${region}/sts/aws4_request`
  const stringToSign = ["AWS4-HMAC-SHA256", amzDate, scope, sha256(canonicalRequest)].join("\n")
  const key = hmac(hmac(hmac(hmac(`AWS4${secretAccessKey}`, date), region), "sts"), "aws4_request")
  const expected = createHmac("sha256", key).update(stringToSign).digest("hex")
  return expected === signature
    ? { ok: true, accessKeyId, region, signedHeaders }
    : { ok: false, reason: "signature mismatch", accessKeyId, region, signedHeaders }
}
