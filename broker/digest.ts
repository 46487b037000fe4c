/**
 * Canonical JSON and SHA-256 digests: the content address of images and
 * JIT tools, the argument digest of journal and audit records, and the links
 * of the audit hash chain all use these two functions.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { canonicalJson } from "./canonical_json.ts";

export { canonicalJson };

/**
 * Hex SHA-256 of a string (UTF-8) or bytes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { sha256Hex } from "./digest.ts";
 * const hex = await sha256Hex("abc");
 * assert(hex.startsWith("ba7816bf"));
 * ```
 */
export function sha256Hex(data: string | Uint8Array): Promise<string> {
  // Hashed in place: on the syscall path an async `crypto.subtle` round trip
  // costs more than hashing a few hundred bytes.
  return Promise.resolve(createHash("sha256").update(data).digest("hex"));
}

/** Hex SHA-256 of the canonical JSON of a value. */
export function digestOf(value: unknown): Promise<string> {
  return sha256Hex(canonicalJson(value));
}
