/**
 * Lines of a byte stream: how the CLI reads a terminal's answers and the
 * benchmarks read what their subprocesses print.
 *
 * @module
 */

/**
 * The lines of `stream` as UTF-8 text, without their newlines; a last line
 * with no newline is given too.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { readLines } from "./lines.ts";
 * const stream = ReadableStream.from([new TextEncoder().encode("a\nb")]);
 * assert.deepEqual(await Array.fromAsync(readLines(stream)), ["a", "b"]);
 * ```
 */
export async function* readLines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buffer = "";
  for await (const chunk of stream) {
    buffer += decoder.decode(chunk, { stream: true });
    let newline: number;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      yield buffer.slice(0, newline);
      buffer = buffer.slice(newline + 1);
    }
  }
  if (buffer) yield buffer;
}
