/**
 * HS256 JWTs, enough of `jsonwebtoken` to mint and check the tokens upstream hands out (identity
 * access tokens, relay access tokens), with the same verify error messages, so a bad token gets
 * upstream's 403 `TokenError` answers (see errors.ts `tokenError`).
 */
import { createHmac, timingSafeEqual } from "node:crypto"
import { Either } from "effect"

export type JwtPayload = Readonly<Record<string, unknown>>

const encode = (value: unknown): string => Buffer.from(JSON.stringify(value), "utf8").toString("base64url")

const signature = (signingInput: string, secret: string): Buffer =>
  createHmac("sha256", secret).update(signingInput).digest()

/** `jwt.sign(payload, secret, expiresInSeconds ? { expiresIn } : undefined)`: adds `iat` (and `exp`). */
export const signJwt = (
  payload: JwtPayload,
  secret: string,
  options: { readonly nowMs: number; readonly expiresInSeconds?: number | undefined }
): string => {
  const iat = Math.floor(options.nowMs / 1000)
  const claims = options.expiresInSeconds === undefined
    ? { ...payload, iat }
    : { ...payload, iat, exp: iat + options.expiresInSeconds }
  const input = `${encode({ alg: "HS256", typ: "JWT" })}.${encode(claims)}`
  return `${input}.${signature(input, secret).toString("base64url")}`
}

const decodeJson = (part: string): unknown => JSON.parse(Buffer.from(part, "base64url").toString("utf8"))

/** `jwt.verify`: Left carries jsonwebtoken's message (`jwt malformed`, `invalid signature`, `jwt expired`, ...). */
export const verifyJwt = (token: string, secret: string, nowMs: number): Either.Either<JwtPayload, string> => {
  if (token.length === 0) return Either.left("jwt must be provided")
  const parts = token.split(".")
  if (parts.length !== 3) return Either.left("jwt malformed")
  const [header, body, sig] = parts as [string, string, string]
  let decodedHeader: unknown
  let payload: unknown
  try {
    decodedHeader = decodeJson(header)
    payload = decodeJson(body)
  } catch {
    return Either.left("invalid token")
  }
  if (typeof decodedHeader !== "object" || decodedHeader === null || typeof payload !== "object" || payload === null) {
    return Either.left("invalid token")
  }
  if ((decodedHeader as { alg?: unknown }).alg !== "HS256") return Either.left("invalid algorithm")
  if (sig.length === 0) return Either.left("jwt signature is required")
  const expected = signature(`${header}.${body}`, secret)
  const given = Buffer.from(sig, "base64url")
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return Either.left("invalid signature")
  const exp = (payload as { exp?: unknown }).exp
  if (typeof exp === "number" && Math.floor(nowMs / 1000) >= exp) return Either.left("jwt expired")
  return Either.right(payload as JwtPayload)
}
