import assert from "node:assert/strict";
import { printable } from "./printable.ts";

/** Every character a terminal or a text renderer acts on instead of showing. */
const DANGEROUS = [
  ...Array.from({ length: 0x20 }, (_, i) => String.fromCharCode(i)),
  "\u007f",
  ...Array.from({ length: 0x20 }, (_, i) => String.fromCharCode(0x80 + i)),
  "\u061c",
  "\u200b",
  "\u200e",
  "\u200f",
  "\u2028",
  "\u2029",
  "\u202a",
  "\u202b",
  "\u202c",
  "\u202d",
  "\u202e",
  "\u2066",
  "\u2067",
  "\u2068",
  "\u2069",
  "\ufeff",
  "\ud800",
  "\udfff",
  "\u{e0001}",
];

Deno.test("printable: escapes every control, bidi and format character", () => {
  for (const char of DANGEROUS) {
    const shown = printable(`a${char}b`);
    assert.ok(shown.startsWith("a\\") && shown.endsWith("b"), JSON.stringify(shown));
    for (const unit of shown) assert.ok(unit >= " " && unit <= "~", JSON.stringify(shown));
  }
});

Deno.test("printable: an escape sequence that would redraw a prompt is shown as text", () => {
  const reason = "tests\u001b[2K\u001b[1A\rallow once? approved by the operator\u0007";
  assert.equal(
    printable(reason),
    "tests\\u001b[2K\\u001b[1A\\rallow once? approved by the operator\\u0007",
  );
});

Deno.test("printable: leaves ordinary text, including non-Latin scripts and emoji, alone", () => {
  for (const text of ["fs:read:/ws/a b.txt", "déjà vu — 東京 🙂", "a\\u001b is text", ""]) {
    assert.equal(printable(text), text);
  }
});

Deno.test("printable: a JSON line stays JSON with the same value, and applying twice changes nothing", () => {
  const value = { name: "x\u009b\u202e\u2028y", list: ["\u007f", "\u{e0001}"] };
  const once = printable(JSON.stringify(value));
  assert.deepEqual(JSON.parse(once), value);
  assert.equal(printable(once), once);
});
