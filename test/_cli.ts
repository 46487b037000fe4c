/**
 * Test helpers for the CLI: run `libos ARGS` with a fake terminal, and
 * assert the shape of a bad-input failure.
 *
 * @module
 */

import assert from "node:assert/strict";
import { main } from "../cli.ts";
import type { Io } from "../cli/context.ts";

/** What one CLI invocation did. */
export interface Result {
  code: number;
  out: string[];
  err: string[];
}

/** Runs `libos ARGS` with a fake terminal. */
export async function cli(
  args: string[],
  options: { interactive?: boolean } = {},
): Promise<Result> {
  const out: string[] = [];
  const err: string[] = [];
  const io: Io = {
    out: (text) => out.push(...text.split("\n")),
    err: (text) => err.push(...text.split("\n")),
    interactive: options.interactive ?? false,
  };
  const code = await main(args, io);
  return { code, out, err };
}

/** Asserts a bad-input failure: exit 1, exactly one stderr line, no stack, nothing on stdout. */
export function assertOneLineError(result: Result, pattern: RegExp): void {
  assert.equal(result.code, 1, `exit code, stderr: ${JSON.stringify(result.err)}`);
  assert.equal(result.err.length, 1, `one stderr line, got ${JSON.stringify(result.err)}`);
  assert.match(result.err[0], pattern);
  assert.doesNotMatch(result.err[0], /\bat .+:\d+:\d+|Error:/);
  assert.deepEqual(result.out, []);
}
