/**
 * Reading request bodies: JSON only, at most a fixed number of bytes,
 * refused before parsing when too large (by its `Content-Length`, or while
 * it streams in when that is absent or wrong).
 *
 * @module
 */

import { ApiError } from "./errors.ts";

/** The default body limit: 1 MiB. */
export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;

/** Options of {@link readJsonBody}. */
export interface ReadJsonOptions {
  /** The largest body accepted, in bytes (default 1 MiB). */
  maxBytes?: number;
}

/**
 * Reads a request's body as JSON. Fails with 413 when the body is over the
 * limit (without reading more than the limit), 415 when it is not
 * `application/json`, and 400 when it is empty, not UTF-8 or not JSON.
 * `action` names what the request is for, for error messages.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { readJsonBody } from "./body.ts";
 * const request = new Request("http://localhost/", {
 *   method: "POST",
 *   headers: { "content-type": "application/json" },
 *   body: '{"a":1}',
 * });
 * const value = await readJsonBody(request, "test", { maxBytes: 100 });
 * assert((value as { a: number }).a === 1);
 * ```
 */
export async function readJsonBody(
  request: Request,
  action: string,
  options: ReadJsonOptions = {},
): Promise<unknown> {
  const max = options.maxBytes ?? DEFAULT_MAX_BODY_BYTES;
  const tooLarge = () =>
    new ApiError(413, `Cannot ${action}: the request body is over the limit of ${max} bytes`);
  const declared = request.headers.get("content-length");
  if (declared !== null && /^\d+$/.test(declared.trim()) && Number(declared) > max) {
    await request.body?.cancel().catch(() => {});
    throw tooLarge();
  }
  const type = request.headers.get("content-type") ?? "";
  if (!/^application\/json\s*(;|$)/i.test(type.trim())) {
    await request.body?.cancel().catch(() => {});
    throw new ApiError(
      415,
      `Cannot ${action}: expected a body of type application/json, got "${
        type.slice(0, 100) || "none"
      }"`,
    );
  }
  const bytes = await _readLimited(request, max, tooLarge);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new ApiError(400, `Cannot ${action}: the request body is not valid UTF-8`);
  }
  if (text.trim() === "") throw new ApiError(400, `Cannot ${action}: expected a JSON body`);
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(400, `Cannot ${action}: the request body is not valid JSON`);
  }
}

async function _readLimited(
  request: Request,
  max: number,
  tooLarge: () => ApiError,
): Promise<Uint8Array> {
  if (!request.body) return new Uint8Array();
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > max) {
      await reader.cancel().catch(() => {});
      throw tooLarge();
    }
    chunks.push(value);
  }
  const out = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}
