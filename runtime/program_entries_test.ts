import assert from "node:assert/strict";
import type { RegisteredImage } from "./image.ts";
import { MAX_ERASED_SOURCE, ProgramEntries } from "./program_entries.ts";

function imageOf(entrySource: string, entryDigest: string): RegisteredImage {
  return {
    tag: "typed@1.0.0",
    digest: entryDigest,
    entryDigest,
    entrySource,
    registeredAt: 0,
    image: {
      name: "typed",
      version: "1.0.0",
      entry: "./main.ts",
      tools: [],
      capabilities: [],
      policy: {},
    },
  } as RegisteredImage;
}

Deno.test("an entry module of types only is handed over as JavaScript once erased, not before", async () => {
  const entries = new ProgramEntries();
  const image = imageOf("export default (n: number): number => n + 1;", "a".repeat(64));
  const first = entries.entryOf(image);
  assert.ok(first.kind === "module" && !first.javascript, "TypeScript until erased");
  await entries.erase(image);
  const later = entries.entryOf(image);
  assert.ok(later.kind === "module" && later.javascript === true);
  assert.doesNotMatch(later.source, /: number/);
});

Deno.test("an entry module too large to erase on the host's thread stays TypeScript", async () => {
  const entries = new ProgramEntries();
  const padding = `// ${"x".repeat(MAX_ERASED_SOURCE)}\n`;
  const image = imageOf(`${padding}export default (n: number): number => n + 1;`, "b".repeat(64));
  await entries.erase(image);
  const entry = entries.entryOf(image);
  assert.ok(entry.kind === "module" && !entry.javascript, "kept as TypeScript");
  assert.equal(entry.source, image.entrySource);
});
