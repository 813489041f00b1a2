/**
 * `/api/v2/gateways` as an identity-registered gateway uses it (upstream
 * `ee/routes/v2/gateway-router.ts`): register, heartbeat, list.
 */
import { HttpRouter } from "@effect/platform"
import { Effect } from "effect"
import { DevControlPlane } from "../DevControlPlane.ts"
import { heartbeatGateway, listGateways, registerGateway } from "../gateways.ts"
import { authenticate, jsonBody, ok, SUCCESSFULLY_TRIGGERED_HEARTBEAT } from "../http.ts"

const backend = Effect.map(DevControlPlane, (cp) => cp.backend)

export const gatewayRoutes = HttpRouter.empty.pipe(
  HttpRouter.post(
    "/api/v2/gateways",
    Effect.gen(function*() {
      const be = yield* backend
      const actor = yield* authenticate(be, ["Identity"])
      return ok(yield* registerGateway(be, actor, yield* jsonBody))
    })
  ),
  HttpRouter.post(
    "/api/v2/gateways/heartbeat",
    Effect.gen(function*() {
      const be = yield* backend
      const actor = yield* authenticate(be, ["Identity"])
      yield* jsonBody
      yield* heartbeatGateway(be, actor)
      return ok(SUCCESSFULLY_TRIGGERED_HEARTBEAT)
    })
  ),
  HttpRouter.get(
    "/api/v2/gateways",
    Effect.gen(function*() {
      const be = yield* backend
      const actor = yield* authenticate(be, ["Identity"])
      return ok(listGateways(be, actor.org.id))
    })
  )
)
