/**
 * The Worker's code and the host stay apart: the bundle a cell starts its
 * Worker from is built from `runtime/guest/` and `tools/` alone (plus the
 * ABI contract), it is not stale, and the host learns the built-in tools
 * from the generated catalog without loading their module.
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { buildWorkerBundle, BUNDLE_PATH } from "../runtime/_build_worker.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

/** The repository-relative paths of the local modules `entry` loads, types included. */
async function localModules(entry: string): Promise<string[]> {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", entry],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(code, 0, new TextDecoder().decode(stderr));
  const graph = JSON.parse(new TextDecoder().decode(stdout)) as {
    modules: { specifier: string }[];
  };
  const root = new URL("..", import.meta.url).href;
  return graph.modules
    .map((m) => m.specifier)
    .filter((s) => s.startsWith(root))
    .map((s) => s.slice(root.length))
    .sort();
}

/** The modules both sides may import: the ABI and its error codes. */
const CONTRACT = ["broker/abi.ts", "broker/errors.ts"];

Deno.test("runtime/_worker_bundle.ts is what deno task bundle builds from runtime/guest/", async () => {
  assert.equal(
    await Deno.readTextFile(BUNDLE_PATH),
    await buildWorkerBundle(),
    "runtime/_worker_bundle.ts is stale: run deno task bundle",
  );
});

Deno.test("the Worker's code imports nothing of the host but the ABI contract", async () => {
  const modules = await localModules("runtime/guest/worker_main.ts");
  const outside = modules.filter((path) =>
    !path.startsWith("runtime/guest/") && !path.startsWith("tools/") && !CONTRACT.includes(path)
  );
  assert.deepEqual(outside, []);
  assert.ok(modules.includes("tools/builtin.ts"), "the agent loop's tools are bundled");
});

Deno.test("the host loads no tool code and of the guest only the cell protocol", async () => {
  for (const entry of ["runtime/kernel.ts", "cli.ts", "api/server.ts"]) {
    const guest = (await localModules(entry)).filter((path) =>
      path.startsWith("runtime/guest/") || path.startsWith("tools/")
    );
    assert.deepEqual(guest, ["runtime/guest/cell_protocol.ts"], entry);
  }
});
