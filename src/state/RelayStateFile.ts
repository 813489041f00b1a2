/**
 * The per-relay state file of enrolled (v2) relays (protocol.md §1.3): `KEY=value` lines in
 * `/etc/infisical/relays/<name>.conf` for root, `~/.infisical/relays/<name>.conf` otherwise.
 * Directory 0700, file 0600, whole-file rewrite; the reader takes the first `KEY=` line.
 */
import * as FileSystem from "@effect/platform/FileSystem"
import * as Path from "@effect/platform/Path"
import { Effect } from "effect"

export const StateKeys = {
  accessToken: "INFISICAL_RELAY_ACCESS_TOKEN",
  enrollmentToken: "INFISICAL_RELAY_ENROLLMENT_TOKEN",
  domain: "INFISICAL_RELAY_DOMAIN",
  relayId: "INFISICAL_RELAY_ID"
} as const

/**
 * Where the state of relay `name` lives. `stateDir` (our `INFISICAL_RELAY_STATE_DIR`) overrides the
 * upstream location, so tests and unprivileged deployments can keep state elsewhere.
 */
export const relayStatePath = (
  name: string,
  where: { readonly euid: number; readonly home: string; readonly stateDir: string | undefined }
): string => {
  const dir =
    where.stateDir ?? (where.euid === 0 ? "/etc/infisical/relays" : `${where.home}/.infisical/relays`)
  return `${dir}/${name}.conf`
}

/** Parse the file's text: first `KEY=` line wins, lines are trimmed. */
export const parseStateText = (text: string): ReadonlyMap<string, string> => {
  const values = new Map<string, string>()
  for (const raw of text.split("\n")) {
    const line = raw.trim()
    const eq = line.indexOf("=")
    if (eq <= 0) continue
    const key = line.slice(0, eq)
    if (!values.has(key)) values.set(key, line.slice(eq + 1))
  }
  return values
}

/** Replace `key` in the file's text: blank lines and older lines for the key go, the new one is appended. */
export const setStateValue = (text: string, key: string, value: string): string => {
  const kept = text
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith(`${key}=`))
  return [...kept, `${key}=${value}`].join("\n") + "\n"
}

/** Read the state file; a missing or unreadable file is empty state. */
export const readRelayState = (path: string) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const text = yield* fs.readFileString(path).pipe(Effect.orElseSucceed(() => ""))
    return parseStateText(text)
  })

/** Write some keys, creating the directory 0700 and the file 0600. */
export const writeRelayState = (path: string, entries: ReadonlyArray<readonly [string, string]>) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const paths = yield* Path.Path
    yield* fs.makeDirectory(paths.dirname(path), { recursive: true, mode: 0o700 })
    let text = yield* fs.readFileString(path).pipe(Effect.orElseSucceed(() => ""))
    for (const [key, value] of entries) text = setStateValue(text, key, value)
    yield* fs.writeFileString(path, text, { mode: 0o600 })
    yield* fs.chmod(path, 0o600)
  })
