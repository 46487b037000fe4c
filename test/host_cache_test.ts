/**
 * A cell never writes into the host's Deno cache: `data:` modules, web
 * storage and a JIT tool's type check all stay in the cell's private
 * `DENO_DIR`. The test points the process's `DENO_DIR` at a fresh directory,
 * which every thread of the process sees, so the test runner runs this file
 * on its own, after the parallel run (`test/_runner.ts`): a `deno` child of
 * another test file would otherwise write its cache there.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { withHarness } from "./_harness.ts";

/** Every file under `dir`, relative to it. */
async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) out.push(...(await filesUnder(path)).map((p) => join(entry.name, p)));
    else out.push(entry.name);
  }
  return out;
}

/** A JIT tool whose type check makes Deno load a `data:` module. */
const REFERENCING_TOOL = {
  name: "referencing",
  description: "makes deno check load a data: module",
  input: { type: "object" },
  manifest: { capabilities: [] },
  source: `/// <reference path="data:application/typescript;base64,${
    btoa("declare const fromData: number;")
  }" />
export function run(): number { return 1; }`,
};

Deno.test("data: modules, web storage and tool type checks write nothing to the host's Deno cache", async () => {
  // The host's cache, as a cell would see it through DENO_DIR: fresh and empty.
  const hostCache = await Deno.makeTempDir({ prefix: "libos-host-deno-" });
  const before = Deno.env.get("DENO_DIR");
  Deno.env.set("DENO_DIR", hostCache);
  try {
    await withHarness(async (h) => {
      const end = await h.run(
        `export default async function main(sys) {
          let sum = 0;
          for (let i = 0; i < 40; i++) {
            const source = "export const n: number = " + i + "; // " + "x".repeat(4000);
            sum += (await import("data:application/typescript;base64," + btoa(source))).n;
          }
          const storage = {};
          for (const name of ["caches", "localStorage", "sessionStorage", "indexedDB"]) {
            storage[name] = typeof globalThis[name];
          }
          let cache = "no caches";
          if (typeof caches !== "undefined") {
            const c = await caches.open("hoard");
            await c.put("https://example.test/x", new Response("y".repeat(100000)));
            cache = "stored";
          }
          let tool = "registered";
          try { await sys.tool.register(${JSON.stringify(REFERENCING_TOOL)}); }
          catch (error) { tool = error.message; }
          return { sum, storage, cache, tool };
        }`,
        { image: { capabilities: ["tool:register:*"] } },
      );
      assert.equal(end.state, "exited", JSON.stringify(end.error));
      assert.deepEqual(end.result, {
        sum: 780,
        storage: {
          caches: "undefined",
          localStorage: "undefined",
          sessionStorage: "undefined",
          indexedDB: "undefined",
        },
        cache: "no caches",
        tool: "registered",
      });
    });
    assert.deepEqual(
      await filesUnder(hostCache),
      [],
      "a cell or a type check wrote into the host's DENO_DIR",
    );
  } finally {
    if (before === undefined) Deno.env.delete("DENO_DIR");
    else Deno.env.set("DENO_DIR", before);
    await Deno.remove(hostCache, { recursive: true });
  }
});
