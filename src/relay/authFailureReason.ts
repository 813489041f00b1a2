/**
 * Stable metric labels for SSH authentication failures. The reasons the SSH layer and certPolicy
 * give are sentences that can carry the attacker-chosen username, so they would make unbounded
 * label values; this maps them onto a fixed set.
 */
const rules: ReadonlyArray<readonly [RegExp, string]> = [
  [/only publickey/, "method_not_allowed"],
  [/raw public keys not allowed/, "raw_key"],
  [/malformed certificate|does not match certificate type/, "malformed_certificate"],
  [/unsupported critical option/, "critical_option"],
  [/not in the set of valid principals/, "principal_mismatch"],
  [/not yet valid|has expired/, "validity"],
  [/signature does not verify|bad signature/, "bad_signature"],
  [/unrecognized authority/, "unknown_ca"],
  [/gateway id is required/, "missing_gateway_id"],
  [/Key ID does not match/, "key_id_mismatch"]
]

export const authFailureLabel = (reason: string | undefined): string =>
  reason === undefined ? "other" : (rules.find(([pattern]) => pattern.test(reason))?.[1] ?? "other")
