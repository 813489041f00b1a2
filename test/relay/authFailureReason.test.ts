import { describe, expect, it } from "vitest"
import { authFailureLabel } from "../../src/relay/authFailureReason.ts"

describe("SSH auth failure labels", () => {
  it("map every certPolicy and userauth reason onto a fixed label, never echoing the username", () => {
    expect(authFailureLabel('certificate check failed: ssh: principal "evil\\nuser" not in the set of valid principals for given certificate: ["a"]')).toBe("principal_mismatch")
    expect(authFailureLabel("certificate check failed: ssh: cert has expired")).toBe("validity")
    expect(authFailureLabel("certificate check failed: ssh: cert is not yet valid")).toBe("validity")
    expect(authFailureLabel("certificate check failed: ssh: certificate signed by unrecognized authority")).toBe("unknown_ca")
    expect(authFailureLabel('certificate check failed: ssh: unsupported critical option "force-command" in certificate')).toBe("critical_option")
    expect(authFailureLabel("certificate Key ID does not match expected value")).toBe("key_id_mismatch")
    expect(authFailureLabel("gateway id is required")).toBe("missing_gateway_id")
    expect(authFailureLabel("certificates required, raw public keys not allowed")).toBe("raw_key")
    expect(authFailureLabel("bad signature")).toBe("bad_signature")
    expect(authFailureLabel("only publickey authentication is allowed")).toBe("method_not_allowed")
    expect(authFailureLabel("something new")).toBe("other")
    expect(authFailureLabel(undefined)).toBe("other")
  })
})
