/**
 * Machine-identity logins and token renewal (protocol.md §7): `/api/v1/auth/<method>/login` and
 * `/api/v1/auth/token/renew`. None requires auth, but a bad bearer token still fails (upstream
 * verifies any Authorization header before routing).
 */
import { HttpRouter } from "@effect/platform"
import { Effect } from "effect"
import { DevControlPlane } from "../DevControlPlane.ts"
import { jsonBody, ok, optionalActor } from "../http.ts"
import { loginUniversalAuth, loginWithVerifier, renewAccessToken } from "../identities.ts"
import type { JwtLoginMethod } from "../options.ts"

const backend = Effect.map(DevControlPlane, (cp) => cp.backend)

const verifierLogin = (method: JwtLoginMethod | "aws") =>
  HttpRouter.post(
    `/api/v1/auth/${method}-auth/login`,
    Effect.gen(function*() {
      const be = yield* backend
      yield* optionalActor(be)
      return ok(yield* loginWithVerifier(be, method, yield* jsonBody))
    })
  )

export const identityAuthRoutes = HttpRouter.empty.pipe(
  HttpRouter.post(
    "/api/v1/auth/universal-auth/login",
    Effect.gen(function*() {
      const be = yield* backend
      yield* optionalActor(be)
      return ok(yield* loginUniversalAuth(be, yield* jsonBody))
    })
  ),
  HttpRouter.post(
    "/api/v1/auth/token/renew",
    Effect.gen(function*() {
      const be = yield* backend
      yield* optionalActor(be)
      return ok(yield* renewAccessToken(be, yield* jsonBody))
    })
  ),
  verifierLogin("kubernetes"),
  verifierLogin("azure"),
  verifierLogin("gcp"),
  verifierLogin("oidc"),
  verifierLogin("jwt"),
  verifierLogin("aws")
)
