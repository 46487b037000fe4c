/**
 * One text per KV key, for sets and maps of keys: the group-commit writer's
 * conflict checks (`commit_footprint.ts`) and the cache of entries this
 * host committed (`runtime/committed_entries.ts`). Two keys have the same
 * text only when KV takes them as one key: a string is told from a number,
 * a number from a bigint, `-0` from `0`, bytes from text; and KV stores text
 * as UTF-8, a lone surrogate as U+FFFD, so two texts that differ only there
 * are one key, with one name.
 *
 * @module
 */

/**
 * The text that names `key` and no other key.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { kvKeyId } from "./kv_key_id.ts";
 * assert(kvKeyId(["obj", 1]) !== kvKeyId(["obj", "1"]));
 * assert(kvKeyId(["n", 0]) !== kvKeyId(["n", -0]));
 * assert(kvKeyId(["n", 1]) !== kvKeyId(["n", 1n]));
 * ```
 */
export function kvKeyId(key: Deno.KvKey): string {
  if (key.some((part) => typeof part === "string" && !part.isWellFormed())) {
    key = key.map((part) => typeof part === "string" ? part.toWellFormed() : part);
  }
  // Text, booleans and finite numbers other than -0 are told apart by their
  // JSON, the common case; such a text starts with "[", which no text of
  // the general form does.
  for (const part of key) {
    if (
      typeof part !== "string" && typeof part !== "boolean" &&
      (typeof part !== "number" || !Number.isFinite(part) || Object.is(part, -0))
    ) return _typedId(key);
  }
  return JSON.stringify(key);
}

/** Each part with a letter for its type: `s` text, `n` number, `b` bigint, `t` boolean, `u` bytes. */
function _typedId(key: Deno.KvKey): string {
  return key.map((part) => {
    switch (typeof part) {
      case "string":
        return `s${JSON.stringify(part)}`;
      case "number":
        return `n${Object.is(part, -0) ? "-0" : part}`;
      case "bigint":
        return `b${part}`;
      case "boolean":
        return `t${part}`;
      default:
        return `u${Array.from(part as Uint8Array).join(".")}`;
    }
  }).join(",");
}
