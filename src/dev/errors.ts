/**
 * Errors of the dev control plane, shaped like upstream's fastify error handler
 * (`backend/src/server/plugins/error-handler.ts`): every error body is
 * `{reqId, statusCode, message, error}`, where `error` is the upstream error class's `name`.
 */
import { randomBytes } from "node:crypto"
import { Data } from "effect"

/** One zod issue, as upstream's 422 `message` array carries them. */
export interface ValidationIssue {
  readonly code: string
  readonly message: string
  readonly path: ReadonlyArray<string | number>
  readonly [extra: string]: unknown
}

export class ApiError extends Data.TaggedError("ApiError")<{
  readonly statusCode: number
  /** Upstream's error name: `BadRequest`, `NotFound`, `UnauthorizedError`, `TokenError`, ... */
  readonly error: string
  /** A message, or the zod issues of a 422. */
  readonly detail: string | ReadonlyArray<ValidationIssue>
}> {
  override get message(): string {
    return typeof this.detail === "string" ? this.detail : `validation failed: ${JSON.stringify(this.detail)}`
  }
}

export const badRequest = (message: string) => new ApiError({ statusCode: 400, error: "BadRequest", detail: message })

/** `UnauthorizedError` (401). */
export const unauthorized = (message: string) =>
  new ApiError({ statusCode: 401, error: "UnauthorizedError", detail: message })

export const notFound = (message: string) => new ApiError({ statusCode: 404, error: "NotFound", detail: message })

/** `ForbiddenRequestError` (403): its name defaults to `ForbiddenError`; verifyAuth puts the URL there. */
export const forbidden = (message = "You are not allowed to access this resource", name = "ForbiddenError") =>
  new ApiError({ statusCode: 403, error: name, detail: message })

/** A failed `jsonwebtoken.verify`, as the error handler rewrites it (403 `TokenError`). */
export const tokenError = (jwtMessage: string) =>
  new ApiError({
    statusCode: 403,
    error: "TokenError",
    detail: jwtMessage === "jwt expired"
      ? "Your token has expired. Please re-authenticate."
      : jwtMessage === "jwt malformed"
      ? "The provided access token is malformed. Please use a valid token or generate a new one and try again."
      : jwtMessage === "invalid algorithm"
      ? "The access token is signed with an invalid algorithm. Please provide a valid token and try again."
      : jwtMessage
  })

export const validationFailure = (issues: ReadonlyArray<ValidationIssue>) =>
  new ApiError({ statusCode: 422, error: "ValidationFailure", detail: issues })

/** Anything upstream's handler does not recognise (including fastify's own body-parser errors). */
export const internalError = () =>
  new ApiError({ statusCode: 500, error: "InternalServerError", detail: "Something went wrong" })

/** The JSON body upstream sends for an error. */
export const errorBody = (reqId: string, e: ApiError) => ({
  reqId,
  statusCode: e.statusCode,
  message: e.detail,
  error: e.error
})

const ALPHANUMERIC = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

/** Upstream's request ids: `req-` + 14 random alphanumerics. */
export const newRequestId = (): string =>
  "req-" + Array.from(randomBytes(14), (b) => ALPHANUMERIC[b % ALPHANUMERIC.length]).join("")
