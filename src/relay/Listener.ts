/**
 * Bind a Node server as a scoped resource: the scope's close stops accepting and destroys the
 * sockets still open, so shutdown never waits on a peer. A bind failure is a ListenError whose
 * message is upstream's (`Failed to start SSH server: ...`).
 */
import type * as net from "node:net"
import { Effect, Schema } from "effect"

export class ListenError extends Schema.TaggedError<ListenError>()("ListenError", {
  server: Schema.String,
  detail: Schema.String
}) {
  override get message(): string {
    return `Failed to start ${this.server} server: ${this.detail}`
  }
}

export interface BoundListener {
  readonly address: net.AddressInfo
  /** Sockets accepted and not yet closed. */
  readonly sockets: Set<net.Socket>
}

export const bindListener = (
  server: net.Server,
  options: { readonly label: string; readonly port: number; readonly host: string | undefined }
) =>
  Effect.acquireRelease(
    Effect.async<BoundListener, ListenError>((resume) => {
      const sockets = new Set<net.Socket>()
      server.on("connection", (socket: net.Socket) => {
        sockets.add(socket)
        socket.once("close", () => sockets.delete(socket))
      })
      const onError = (error: Error) => resume(Effect.fail(new ListenError({ server: options.label, detail: error.message })))
      server.once("error", onError)
      server.listen(options.host === undefined ? { port: options.port } : { port: options.port, host: options.host }, () => {
        server.off("error", onError)
        // A later server error (EMFILE on accept) must not crash the process.
        server.on("error", () => {})
        resume(Effect.succeed({ address: server.address() as net.AddressInfo, sockets }))
      })
    }),
    ({ sockets }) =>
      Effect.async<void>((resume) => {
        server.close(() => resume(Effect.void))
        for (const socket of sockets) socket.destroy()
      })
  )

/** `:2222` for a wildcard bind, `host:port` otherwise, as upstream logs it. */
export const displayAddress = (host: string | undefined, address: net.AddressInfo): string =>
  host === undefined ? `:${address.port}` : `${host.includes(":") ? `[${host}]` : host}:${address.port}`
