/**
 * Plain-text tables for the CLI's human-readable output. Every cell and
 * every clipped or wrapped text is made {@link printable} first: what a
 * process chose (a name, an argument, a reason) never reaches the terminal
 * as a control character, and never breaks a row in two.
 *
 * @module
 */

import { printable } from "../broker/printable.ts";

/** Cuts `text` to one printable line of at most `width` characters. */
export function clip(text: string, width: number): string {
  const line = printable(text.replace(/\s+/g, " ").trim());
  return line.length <= width ? line : line.slice(0, Math.max(0, width - 1)) + "…";
}

/**
 * Breaks `text` into printable lines of at most `width` characters, keeping
 * every character: nothing is cut, long text only takes more lines.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { wrap } from "./table.ts";
 * assert(wrap("abcdefg", 3).join("|") === "abc|def|g");
 * ```
 */
export function wrap(text: string, width: number): string[] {
  const line = printable(text);
  const size = Math.max(1, width);
  const lines: string[] = [];
  for (let i = 0; i < line.length; i += size) lines.push(line.slice(i, i + size));
  return lines.length ? lines : [""];
}

/**
 * Renders rows as an aligned table with a header line.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { table } from "./table.ts";
 * const text = table(["pid", "state"], [[1, "exited"]]);
 * assert(text.split("\n")[0].startsWith("pid"));
 * ```
 */
export function table(
  header: readonly string[],
  rows: readonly (readonly unknown[])[],
): string {
  const cells = [header, ...rows].map((row) =>
    row.map((cell) => cell === undefined || cell === null ? "" : printable(String(cell)))
  );
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? "").length)));
  return cells.map((row) =>
    row.map((cell, i) => i === row.length - 1 ? cell : cell.padEnd(widths[i])).join("  ")
      .trimEnd()
  ).join("\n");
}
