/**
 * What every CLI verb shares: where output goes and how the kernel is
 * opened from `--kv` / `LIBOS_KV`.
 *
 * @module
 */

import { Kernel, type KernelOptions } from "../runtime/kernel.ts";
import { resolveModelSpec } from "../runtime/model_spec.ts";
import { type Parsed, str } from "./args.ts";

/** Output streams of a CLI invocation (swappable in tests). */
export interface Io {
  out(line: string): void;
  err(line: string): void;
  /** True when stderr is a terminal: show progress. */
  interactive: boolean;
}

/** The real terminal. */
export const TERMINAL_IO: Io = {
  out: (line) => console.log(line),
  err: (line) => console.error(line),
  interactive: Deno.stderr.isTerminal(),
};

/** Opens the kernel over the store the flags name. */
export function openKernel(parsed: Parsed, options: KernelOptions = {}): Promise<Kernel> {
  return Kernel.open({
    store: str(parsed, "kv"),
    resolveModel: resolveModelSpec,
    ...options,
  });
}

/** A verb: takes its own arguments, returns the exit code. */
export type Verb = (args: string[], io: Io) => Promise<number>;
