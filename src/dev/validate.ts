/**
 * Request validation that fails the way upstream's zod route schemas do: a 422 `ValidationFailure`
 * whose `message` is the array of zod issues (code, message, path, ...), so clients see the same
 * shapes. Only the few zod checks the relay and gateway routes use are reproduced.
 */
import { Effect } from "effect"
import { type ApiError, validationFailure, type ValidationIssue } from "./errors.ts"

const typeName = (value: unknown): string =>
  value === null ? "null" : Array.isArray(value) ? "array" : typeof value === "number" && Number.isNaN(value) ? "nan" : typeof value

const invalidType = (expected: string, value: unknown, path: ReadonlyArray<string | number>): ValidationIssue => {
  const received = typeName(value)
  return {
    code: "invalid_type",
    expected,
    received,
    path,
    message: received === "undefined" ? "Required" : `Expected ${expected}, received ${received}`
  }
}

/** Upstream `slugSchema`'s rule: what `slugify(v, { lowercase: true })` leaves unchanged. */
export const isSlug = (value: string): boolean => value === "" || /^[a-z0-9]+(?:-[a-z0-9]+)*$/.test(value)

const UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/

export interface StringRule {
  readonly trim?: boolean
  readonly min?: number
  readonly minMessage?: string
  readonly max?: number
  readonly maxMessage?: string
}

/** Reads fields of one JSON object body, collecting zod-style issues; `done` fails with all of them. */
export class BodyReader {
  private readonly fields: Readonly<Record<string, unknown>>

  constructor(
    body: unknown,
    private readonly prefix: ReadonlyArray<string | number> = [],
    /** Shared with nested readers, so one `done` reports every issue. */
    private readonly issues: Array<ValidationIssue> = []
  ) {
    if (typeof body === "object" && body !== null && !Array.isArray(body)) {
      this.fields = body as Record<string, unknown>
    } else {
      this.fields = {}
      this.issues.push(invalidType("object", body, prefix))
    }
  }

  get raw(): Readonly<Record<string, unknown>> {
    return this.fields
  }

  has(key: string): boolean {
    return this.fields[key] !== undefined
  }

  /** `z.string()` with optional `.trim().min().max()`; returns "" after an issue. */
  string(key: string, rule: StringRule = {}): string {
    const value = this.fields[key]
    const path = [...this.prefix, key]
    if (typeof value !== "string") {
      this.issues.push(invalidType("string", value, path))
      return ""
    }
    const s = rule.trim ? value.trim() : value
    if (rule.min !== undefined && s.length < rule.min) {
      this.issues.push({
        code: "too_small",
        minimum: rule.min,
        type: "string",
        inclusive: true,
        exact: false,
        message: rule.minMessage ?? `String must contain at least ${rule.min} character(s)`,
        path
      })
    }
    if (rule.max !== undefined && s.length > rule.max) {
      this.issues.push({
        code: "too_big",
        maximum: rule.max,
        type: "string",
        inclusive: true,
        exact: false,
        message: rule.maxMessage ?? `String must contain at most ${rule.max} character(s)`,
        path
      })
    }
    return s
  }

  /** `z.string().default(fallback)` plus the given rule. */
  optionalString(key: string, fallback: string, rule: StringRule = {}): string {
    return this.fields[key] === undefined ? fallback : this.string(key, rule)
  }

  /** upstream `slugSchema({ min, max, field })`. */
  slug(key: string, options: { readonly min: number; readonly max: number; readonly field: string }): string {
    const { field, max, min } = options
    const s = this.string(key, {
      trim: true,
      min,
      minMessage: `${field} field must be at least ${min} lowercase character${min === 1 ? "" : "s"}`,
      max,
      maxMessage: `${field} field must be at most ${max} lowercase character${max === 1 ? "" : "s"}`
    })
    if (typeof this.fields[key] === "string" && !isSlug(s)) {
      this.custom(key, `${field} field can only contain lowercase letters, numbers, and hyphens`)
    }
    return s
  }

  /** `z.string().uuid()`. */
  uuid(key: string): string {
    const s = this.string(key)
    if (typeof this.fields[key] === "string" && !UUID.test(s)) {
      this.issues.push({ validation: "uuid", code: "invalid_string", message: "Invalid uuid", path: [...this.prefix, key] })
    }
    return s
  }

  custom(key: string | undefined, message: string): void {
    this.issues.push({ code: "custom", message, path: key === undefined ? this.prefix : [...this.prefix, key] })
  }

  issue(issue: ValidationIssue): void {
    this.issues.push(issue)
  }

  /** Nested object reader sharing this reader's issue list. */
  nested(key: string): BodyReader {
    return new BodyReader(this.fields[key], [...this.prefix, key], this.issues)
  }

  get done(): Effect.Effect<void, ApiError> {
    return this.issues.length === 0 ? Effect.void : Effect.fail(validationFailure([...this.issues]))
  }
}
