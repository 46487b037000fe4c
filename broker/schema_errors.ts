/**
 * One-line messages for zod validation failures, shared by every place
 * that validates input: the syscall ABI, images, the HTTP API and JIT tool
 * arguments. Pass {@link issueMessage} as the error map and give the first
 * issue to {@link describeIssue}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { z } from "zod";
 * import { describeIssue, issueMessage } from "./schema_errors.ts";
 * const result = z.strictObject({ a: z.string() }).safeParse({ a: 1 }, { error: issueMessage });
 * assert(!result.success && describeIssue(result.error.issues[0]) === "a: expected string, got number");
 * ```
 *
 * @module
 */

import type { z } from "zod";

/** A zod error map: plainer messages for the common issues, zod's own for the rest. */
export function issueMessage(issue: z.core.$ZodRawIssue): string | undefined {
  switch (issue.code) {
    case "invalid_type":
      return issue.input === undefined
        ? "is required"
        : `expected ${issue.expected}, got ${kindOf(issue.input)}`;
    case "unrecognized_keys":
      return `unknown field${issue.keys.length > 1 ? "s" : ""} ${
        issue.keys.map((k) => `"${k.slice(0, 100)}"`).join(", ")
      }`;
    case "invalid_value":
      return `expected one of ${issue.values.map((v) => JSON.stringify(v)).join(", ")}`;
    case "too_big":
      return issue.origin === "array"
        ? `must have at most ${issue.maximum} items`
        : issue.origin === "string"
        ? `must be at most ${issue.maximum} characters`
        : undefined;
    default:
      return undefined;
  }
}

/** One line for an issue (of zod, or of `json_schema.ts`): its path (`a.b[2]`), then its message. */
export function describeIssue(issue: { path: readonly PropertyKey[]; message: string }): string {
  let path = "";
  for (const key of issue.path) {
    if (typeof key === "number") path += `[${key}]`;
    else if (/^[A-Za-z_$][\w$]*$/.test(String(key))) path += path ? `.${String(key)}` : String(key);
    else path += `[${JSON.stringify(String(key))}]`;
  }
  return path ? `${path}: ${issue.message}` : issue.message;
}

/** The JSON kind of a value, as messages name it. */
function kindOf(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  return typeof value;
}
