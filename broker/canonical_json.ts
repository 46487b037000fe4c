/**
 * Canonical JSON: one text for equal values. The argument digest of a
 * syscall, the links of the audit chain, the content address of images and
 * JIT tools, and the digest of an agent's conversation are all taken over
 * it. It imports nothing, so the code inside a Worker can use it too.
 *
 * @module
 */

/**
 * Serializes a JSON value with object keys sorted at every depth and no
 * insignificant whitespace, so equal values always give equal text.
 * `undefined` members are dropped, as `JSON.stringify` does.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { canonicalJson } from "./canonical_json.ts";
 * assert(canonicalJson({ b: 1, a: [true, null] }) === '{"a":[true,null],"b":1}');
 * ```
 */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(_sortKeys(value));
}

function _sortKeys(value: unknown): unknown {
  if (value === null || typeof value !== "object") return value;
  if (Array.isArray(value)) return value.map(_sortKeys);
  // A plain object, which `JSON.stringify` walks faster than one without a
  // prototype; it orders keys as that would (integer keys first).
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(value).sort()) {
    const member = (value as Record<string, unknown>)[key];
    if (member === undefined) continue;
    if (key === "__proto__") {
      // An own member like any other, not the object's prototype.
      Object.defineProperty(out, key, {
        value: _sortKeys(member),
        enumerable: true,
        writable: true,
        configurable: true,
      });
    } else out[key] = _sortKeys(member);
  }
  return out;
}
