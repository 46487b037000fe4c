/**
 * Values larger than one KV entry (64 KiB): stored as JSON text cut into
 * chunks under one key prefix, so transcripts, file contents and program
 * sources never run into the KV value limit.
 *
 * @module
 */

/** The most characters one chunk holds (well under 64 KiB of UTF-8 per char worst case / 3). */
export const CHUNK_CHARS = 20_000;

/**
 * Adds the mutations that store `value` under `prefix` to `op`: a head entry
 * `[...prefix, "n"]` with the chunk count, and `[...prefix, i]` per chunk.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { readChunked, writeChunked } from "./chunks.ts";
 * const kv = await Deno.openKv(":memory:");
 * const op = kv.atomic();
 * writeChunked(op, ["blob", 1], { text: "x".repeat(100_000) });
 * await op.commit();
 * assert(((await readChunked(kv, ["blob", 1])) as { text: string }).text.length === 100_000);
 * kv.close();
 * ```
 */
export function writeChunked(
  op: Deno.AtomicOperation,
  prefix: Deno.KvKey,
  value: unknown,
): number {
  const text = JSON.stringify(value);
  const count = Math.max(1, Math.ceil(text.length / CHUNK_CHARS));
  op.set([...prefix, "n"], count);
  for (let i = 0; i < count; i++) {
    op.set([...prefix, i], text.slice(i * CHUNK_CHARS, (i + 1) * CHUNK_CHARS));
  }
  return count;
}

/** Reads a value written by {@link writeChunked}; undefined when absent or incomplete. */
export async function readChunked(
  kv: Deno.Kv,
  prefix: Deno.KvKey,
): Promise<unknown> {
  const head = await kv.get<number>([...prefix, "n"]);
  if (head.value === null) return undefined;
  const parts: string[] = [];
  for await (
    const entry of kv.list<string>({
      start: [...prefix, 0],
      end: [...prefix, head.value],
    })
  ) parts.push(entry.value);
  if (parts.length !== head.value) return undefined;
  return JSON.parse(parts.join(""));
}
