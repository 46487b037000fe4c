import assert from "node:assert/strict";
import { rawControls } from "../test/_terminal.ts";
import { clip, table, wrap } from "./table.ts";

Deno.test("clip: short text is kept, with whitespace runs folded to one space", () => {
  assert.equal(clip("a  b\n\tc", 10), "a b c");
  assert.equal(clip("  padded  ", 10), "padded");
  assert.equal(clip("exactly10!", 10), "exactly10!");
});

Deno.test("clip: long text is cut to the width, ending in an ellipsis", () => {
  const cut = clip("abcdefghijkl", 5);
  assert.equal(cut, "abcd…");
  assert.equal(cut.length, 5);
});

Deno.test("clip: multi-line text becomes one line", () => {
  assert.ok(!clip("line one\nline two\nline three", 12).includes("\n"));
});

Deno.test("clip: a zero width leaves only the ellipsis", () => {
  assert.equal(clip("abc", 0), "…");
});

Deno.test("table: columns are aligned to the widest cell, two spaces apart", () => {
  const text = table(["PID", "STATE"], [[1, "exited"], [12345, "runnable"]]);
  assert.deepEqual(text.split("\n"), [
    "PID    STATE",
    "1      exited",
    "12345  runnable",
  ]);
});

Deno.test("table: null and undefined cells are empty and lines carry no trailing spaces", () => {
  const text = table(["A", "B", "C"], [[null, undefined, "x"], ["y", null, undefined]]);
  const lines = text.split("\n");
  assert.equal(lines[1], "      x");
  assert.equal(lines[2], "y");
  for (const line of lines) assert.equal(line, line.trimEnd());
});

Deno.test("table: the last column is not padded", () => {
  const text = table(["NAME", "NOTE"], [["a", "short"], ["b", "a much longer note"]]);
  assert.equal(text.split("\n")[1], "a     short");
});

Deno.test("table: with no rows it prints the header alone", () => {
  assert.equal(table(["PID", "PPID", "IMAGE"], []), "PID  PPID  IMAGE");
});

Deno.test("table: a cell's control characters are escaped and cannot add a row", () => {
  const forged = "fs.read\u001b[1A\u001b[2K\r\n7    1    fs.write  allow  ok\u202e\u009b";
  const lines = table(["SEQ", "SYSCALL"], [[1, forged], [2, "time.now"]]).split("\n");
  assert.equal(lines.length, 3);
  for (const line of lines) assert.deepEqual(rawControls(line), []);
  assert.ok(lines[1].includes("\\u001b[1A\\u001b[2K\\r\\n7"));
  assert.ok(lines[1].endsWith("\\u202e\\u009b"));
});

Deno.test("clip: controls left after folding whitespace are escaped", () => {
  const text = clip("run\u001b]0;title\u0007 \u2066rm -rf ~\u2069", 200);
  assert.deepEqual(rawControls(text), []);
  assert.equal(text, "run\\u001b]0;title\\u0007 \\u2066rm -rf ~\\u2069");
});

Deno.test("wrap: keeps every character, escaped, in lines of the width", () => {
  const text = "a".repeat(250) + "\u001b[31m" + "TAIL";
  const lines = wrap(text, 100);
  assert.deepEqual(lines.map((l) => l.length <= 100), lines.map(() => true));
  assert.equal(lines.join(""), "a".repeat(250) + "\\u001b[31mTAIL");
  assert.deepEqual(wrap("", 10), [""]);
});
