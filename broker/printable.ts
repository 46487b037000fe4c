/**
 * Text from a process made safe to print: every character that a terminal
 * (or a browser) would act on instead of showing is written as an escape.
 *
 * A process chooses much of what an operator reads: file names, command
 * arguments, the reason of a permission request, a question, an error
 * message, even the name of a syscall it made up. Printed raw, an escape
 * sequence in any of them can move the cursor, clear the screen and redraw
 * an approval prompt, a newline can forge a row of the audit table, and a
 * bidirectional override can make `exe.txt` read as `txt.exe`.
 * {@link printable} is the one function every display of such text goes
 * through.
 *
 * @module
 */

/**
 * Characters that are not shown as themselves: controls (C0, DEL, C1),
 * format characters (the bidirectional embeddings, overrides and isolates
 * U+202A–U+202E and U+2066–U+2069, the marks U+200E/U+200F and U+061C,
 * zero-width characters, the byte order mark, …), the line and paragraph
 * separators, and lone surrogates.
 */
const UNPRINTABLE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}]/gu;

const SHORT_ESCAPES: Readonly<Record<string, string>> = {
  "\n": "\\n",
  "\r": "\\r",
  "\t": "\\t",
};

function _escape(char: string): string {
  const short = SHORT_ESCAPES[char];
  if (short) return short;
  let out = "";
  for (let i = 0; i < char.length; i++) {
    out += "\\u" + char.charCodeAt(i).toString(16).padStart(4, "0");
  }
  return out;
}

/**
 * `text` with every unprintable character written as an escape: `\n`,
 * `\r`, `\t`, or `\uXXXX` per UTF-16 unit (`\u001b` for ESC, `\u202e` for
 * RIGHT-TO-LEFT OVERRIDE). The escapes are JSON's own, so a line of JSON
 * stays valid JSON with the same value after it; other text is unchanged,
 * and applying it twice changes nothing more.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { printable } from "./printable.ts";
 * assert(printable("a\u001b[2Jb\nc") === "a\\u001b[2Jb\\nc");
 * assert(printable("invoice\u202etxt.exe") === "invoice\\u202etxt.exe");
 * assert(JSON.parse(printable(JSON.stringify("x\u009by"))) === "x\u009by");
 * ```
 */
export function printable(text: string): string {
  return text.replace(UNPRINTABLE, _escape);
}
