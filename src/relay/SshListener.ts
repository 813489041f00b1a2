/**
 * The gateway-facing SSH listener (protocol.md §4.1). Binds the port; each connection is handed to
 * the SSH layer (src/ssh) and, once authenticated, registered in Tunnels.
 */
import * as net from "node:net"
import { Effect, Layer } from "effect"
import { RelayConfig } from "../RelayConfig.ts"
import { bindListener, displayAddress } from "./Listener.ts"

export const SshListenerLive = Layer.scopedDiscard(
  Effect.gen(function* () {
    const config = yield* RelayConfig
    const server = net.createServer({ noDelay: true })
    server.on("connection", (socket) => {
      // The SSH layer is wired in by the SSH issue; until then connections are refused.
      socket.destroy()
    })
    const bound = yield* bindListener(server, { label: "SSH", port: config.sshPort, host: config.listenHost })
    yield* Effect.logInfo(`SSH server listening on ${displayAddress(config.listenHost, bound.address)} for gateways`)
  })
)
