/**
 * Test helper: what a terminal would act on instead of showing, found by
 * code point (written apart from the runtime's own escaping).
 *
 * @module
 */

/** Ranges of code points a terminal or a text renderer acts on: controls, bidi and format characters. */
const ACTING: readonly (readonly [number, number])[] = [
  [0x00, 0x1f], // C0, newline and escape among them
  [0x7f, 0x9f], // DEL and C1 (CSI is 0x9b)
  [0x061c, 0x061c], // ARABIC LETTER MARK
  [0x200b, 0x200f], // zero-width characters and LRM/RLM
  [0x2028, 0x202e], // line/paragraph separators, bidi embeddings and overrides
  [0x2060, 0x2069], // word joiner, invisible operators, bidi isolates
  [0xfeff, 0xfeff], // BOM
];

/** The characters of `text` that a terminal would act on, as `U+XXXX` names (empty when none). */
export function rawControls(text: string): string[] {
  const found: string[] = [];
  for (const char of text) {
    const code = char.codePointAt(0)!;
    if (ACTING.some(([low, high]) => code >= low && code <= high)) {
      found.push(`U+${code.toString(16).padStart(4, "0")}`);
    }
  }
  return found;
}
