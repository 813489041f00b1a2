/**
 * `INFISICAL_CUSTOM_HEADERS`: `key1=value1 key2="value 2" key3='v 3'`, added to every relay API call.
 * Pairs without `=` or with an empty key are skipped, as upstream does.
 */
export const parseCustomHeaders = (raw: string): ReadonlyArray<readonly [string, string]> => {
  const headers: Array<readonly [string, string]> = []
  const pair = /\s*([^\s=]+)=("([^"]*)"|'([^']*)'|(\S*))/y
  let rest = raw.trim()
  while (rest.length > 0) {
    pair.lastIndex = 0
    const m = pair.exec(rest)
    if (!m) {
      // Skip one malformed token and go on.
      rest = rest.replace(/^\S*\s*/, "")
      continue
    }
    headers.push([m[1]!, m[3] ?? m[4] ?? m[5] ?? ""])
    rest = rest.slice(pair.lastIndex).trimStart()
  }
  return headers
}
