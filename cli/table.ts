/**
 * Plain-text tables for the CLI's human-readable output.
 *
 * @module
 */

/** Cuts `text` to one line of at most `width` characters. */
export function clip(text: string, width: number): string {
  const line = text.replace(/\s+/g, " ").trim();
  return line.length <= width ? line : line.slice(0, Math.max(0, width - 1)) + "…";
}

/**
 * Renders rows as an aligned table with a header line.
 *
 * @example
 * ```ts
 * import { table } from "./table.ts";
 * const text = table(["pid", "state"], [[1, "exited"]]);
 * console.assert(text.split("\n")[0].startsWith("pid"));
 * ```
 */
export function table(
  header: readonly string[],
  rows: readonly (readonly unknown[])[],
): string {
  const cells = [header, ...rows].map((row) =>
    row.map((cell) => cell === undefined || cell === null ? "" : String(cell))
  );
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? "").length)));
  return cells.map((row) =>
    row.map((cell, i) => i === row.length - 1 ? cell : cell.padEnd(widths[i])).join("  ")
      .trimEnd()
  ).join("\n");
}
