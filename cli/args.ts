/**
 * Flag parsing for the CLI: `node:util` `parseArgs` in strict mode, with the
 * flags every verb shares, turned into one-line errors.
 *
 * @module
 */

import { parseArgs, type ParseArgsConfig } from "node:util";

/** A CLI usage error: printed as one line, exit code 1. */
export class UsageError extends Error {}

type Options = NonNullable<ParseArgsConfig["options"]>;

/** Flags every verb takes. */
export const COMMON_OPTIONS: Options = {
  kv: { type: "string" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
};

/** Parsed flags and positionals. */
export interface Parsed {
  values: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
}

/**
 * Parses `args` against `options` plus {@link COMMON_OPTIONS}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parse } from "./args.ts";
 * const { values } = parse(["--json", "--cap", "fs:read:**"], { cap: { type: "string", multiple: true } }, "run");
 * assert(values.json === true);
 * ```
 */
export function parse(args: string[], options: Options, verb: string): Parsed {
  try {
    const { values, positionals } = parseArgs({
      args,
      options: { ...COMMON_OPTIONS, ...options },
      allowPositionals: true,
      strict: true,
    });
    return { values: values as Parsed["values"], positionals };
  } catch (error) {
    throw new UsageError(`Cannot parse "libos ${verb}" flags: ${(error as Error).message}`);
  }
}

/** A flag's string value, or undefined. */
export function str(parsed: Parsed, name: string): string | undefined {
  const value = parsed.values[name];
  return typeof value === "string" ? value : undefined;
}

/** A repeatable flag's values. */
export function list(parsed: Parsed, name: string): string[] {
  const value = parsed.values[name];
  return Array.isArray(value) ? value : typeof value === "string" ? [value] : [];
}

/** A positive integer flag or positional, or a usage error naming it. */
export function int(value: string | undefined, name: string): number {
  const n = Number(value);
  if (!value || !/^[1-9][0-9]*$/.test(value) || !Number.isSafeInteger(n)) {
    throw new UsageError(`Expected ${name} to be a positive integer, got "${value ?? ""}"`);
  }
  return n;
}
