/**
 * Backend: everything the dev control plane's services share (options, the in-memory store, the
 * CAs, the JWT secret, the backend's open sockets). The service modules (identities.ts,
 * relays.ts, gateways.ts) are functions over it; the HTTP routes and the programmatic API call them.
 */
import { randomBytes } from "node:crypto"
import { Effect } from "effect"
import { type Authorities, makeAuthorities } from "./authorities.ts"
import { type ControlPlaneOptions, resolveOptions, type ResolvedOptions } from "./options.ts"
import { SocketRegistry } from "./probes.ts"
import { type Org, Store } from "./store.ts"

export interface Backend {
  readonly options: ResolvedOptions
  readonly store: Store
  readonly authorities: Authorities
  /** upstream `AUTH_SECRET`: signs identity and relay access tokens. */
  readonly authSecret: string
  readonly sockets: SocketRegistry
  /** The organisation created at start; identities go there unless told otherwise. */
  readonly defaultOrg: Org
}

/** A backend whose sockets are destroyed when the scope closes. */
export const makeBackend = (options: ControlPlaneOptions = {}) =>
  Effect.acquireRelease(
    Effect.sync((): Backend => {
      const store = new Store()
      const defaultOrg: Org = { id: options.org?.id ?? Store.newId(), name: options.org?.name ?? "Dev Organization" }
      store.orgs.set(defaultOrg.id, defaultOrg)
      return {
        options: resolveOptions(options),
        store,
        authorities: options.authorities ?? makeAuthorities(options.keyBits === undefined ? {} : { keyBits: options.keyBits }),
        authSecret: randomBytes(32).toString("hex"),
        sockets: new SocketRegistry(),
        defaultOrg
      }
    }),
    (backend) => Effect.sync(() => backend.sockets.destroyAll())
  )

/** Runs a minting promise; its failures are bugs (bad CA state), not client errors. */
export const mint = <A>(f: () => Promise<A>): Effect.Effect<A> => Effect.promise(f)
