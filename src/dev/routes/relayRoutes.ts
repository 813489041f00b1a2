/**
 * `/api/v1/relays` (upstream `ee/routes/v1/relay-router.ts`) and the `/api/v2/relays` routes a
 * relay or its admin uses (`ee/routes/v2/relay-router.ts`). Order inside each handler follows
 * fastify's: auth (onRequest), then body parsing, then validation, then the service.
 */
import { HttpRouter } from "@effect/platform"
import { Effect } from "effect"
import { checkInstanceSecretForHeartbeat, checkInstanceSecretForRegistration } from "../auth.ts"
import { DevControlPlane } from "../DevControlPlane.ts"
import { authenticate, authorizationHeader, jsonBody, ok, optionalActor, SUCCESSFULLY_TRIGGERED_HEARTBEAT } from "../http.ts"
import { connectRelayV2, createRelayFromRequest, generateEnrollmentToken, loginRelay } from "../relayEnrollment.ts"
import {
  deleteRelay,
  heartbeatInstanceRelay,
  heartbeatOrgRelay,
  listRelays,
  probeRelay,
  registerInstanceRelay,
  registerOrgRelay
} from "../relays.ts"
import { BodyReader } from "../validate.ts"

const backend = Effect.map(DevControlPlane, (cp) => cp.backend)

/** `:relayId` must be a uuid (zod params schema). */
const relayIdParam = Effect.gen(function*() {
  const params = yield* HttpRouter.params
  const r = new BodyReader(params)
  const relayId = r.uuid("relayId")
  yield* r.done
  return relayId
})

export const relayRoutes = HttpRouter.empty.pipe(
  HttpRouter.post(
    "/api/v1/relays/register-instance-relay",
    Effect.gen(function*() {
      const be = yield* backend
      yield* checkInstanceSecretForRegistration(be, yield* authorizationHeader)
      return ok(yield* registerInstanceRelay(be, yield* jsonBody))
    })
  ),
  HttpRouter.post(
    "/api/v1/relays/register-org-relay",
    Effect.gen(function*() {
      const be = yield* backend
      const actor = yield* authenticate(be, ["Identity"])
      return ok(yield* registerOrgRelay(be, actor, yield* jsonBody))
    })
  ),
  HttpRouter.post(
    "/api/v1/relays/heartbeat-instance-relay",
    Effect.gen(function*() {
      const be = yield* backend
      yield* checkInstanceSecretForHeartbeat(be, yield* authorizationHeader)
      yield* heartbeatInstanceRelay(be, yield* jsonBody)
      return ok(SUCCESSFULLY_TRIGGERED_HEARTBEAT)
    })
  ),
  HttpRouter.post(
    "/api/v1/relays/heartbeat-org-relay",
    Effect.gen(function*() {
      const be = yield* backend
      const actor = yield* authenticate(be, ["Identity"])
      yield* heartbeatOrgRelay(be, actor, yield* jsonBody)
      return ok(SUCCESSFULLY_TRIGGERED_HEARTBEAT)
    })
  ),
  HttpRouter.get(
    "/api/v1/relays",
    Effect.gen(function*() {
      const be = yield* backend
      const actor = yield* authenticate(be, ["Identity"])
      return ok(listRelays(be, actor.org.id))
    })
  ),
  HttpRouter.del(
    "/api/v1/relays/:id",
    Effect.gen(function*() {
      const be = yield* backend
      const actor = yield* authenticate(be, ["Identity"])
      yield* jsonBody
      const { id } = yield* HttpRouter.params
      return ok(yield* deleteRelay(be, actor.org.id, id ?? ""))
    })
  ),

  // v2 relays
  HttpRouter.post(
    "/api/v2/relays",
    Effect.gen(function*() {
      const be = yield* backend
      const actor = yield* authenticate(be, ["Identity"])
      return ok(yield* createRelayFromRequest(be, actor, yield* jsonBody))
    })
  ),
  HttpRouter.post(
    "/api/v2/relays/:relayId/token-auth/generate-enrollment-token",
    Effect.gen(function*() {
      const be = yield* backend
      const actor = yield* authenticate(be, ["Identity"])
      yield* jsonBody
      const { expiresAt, token } = yield* generateEnrollmentToken(be, actor.org.id, yield* relayIdParam)
      return ok({ token, expiresAt: expiresAt.toISOString() })
    })
  ),
  HttpRouter.post(
    "/api/v2/relays/login",
    Effect.gen(function*() {
      const be = yield* backend
      yield* optionalActor(be)
      return ok(yield* loginRelay(be, yield* jsonBody))
    })
  ),
  HttpRouter.post(
    "/api/v2/relays/connect",
    Effect.gen(function*() {
      const be = yield* backend
      const actor = yield* authenticate(be, ["Relay"])
      yield* jsonBody
      return ok(yield* connectRelayV2(be, actor.relay))
    })
  ),
  HttpRouter.post(
    "/api/v2/relays/heartbeat",
    Effect.gen(function*() {
      const be = yield* backend
      const actor = yield* authenticate(be, ["Relay"])
      yield* jsonBody
      yield* probeRelay(be, actor.relay)
      return ok(SUCCESSFULLY_TRIGGERED_HEARTBEAT)
    })
  )
)
