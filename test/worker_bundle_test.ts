/**
 * The committed worker bundle (`runtime/_worker_bundle.ts`) is what
 * `deno task bundle` builds from the current guest sources (`runtime/guest/`
 * and `tools/`), wherever the build runs from; and the host learns the
 * built-in tools from the generated catalog without loading their module.
 * (That the guest imports nothing of the host is checked by
 * `test/_import_graph.ts`.)
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { BUNDLE_PATH, staleWorkerBundle } from "../runtime/_build_worker.ts";

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

const BUILDER = fileURLToPath(new URL("../runtime/_build_worker.ts", import.meta.url));

Deno.test("runtime/_worker_bundle.ts is what deno task bundle builds from the sources", async () => {
  // Run from an unrelated folder: the bundle must not depend on where the build starts.
  const elsewhere = await Deno.makeTempDir();
  try {
    const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-prompt", "--allow-read", "--allow-run", BUILDER, "--check"],
      cwd: elsewhere,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(code, 0, new TextDecoder().decode(stderr).trim());
    assert.equal(
      new TextDecoder().decode(stdout).trim(),
      "runtime/_worker_bundle.ts is up to date",
    );
  } finally {
    await Deno.remove(elsewhere, { recursive: true });
  }
});

Deno.test("the bundle check reports a bundle that differs from the sources", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const current = await Deno.readTextFile(BUNDLE_PATH);
    const stale = join(dir, "_worker_bundle.ts");
    // One program-side byte changed, as after editing a worker module without rebundling.
    const at = current.indexOf("postMessage");
    assert.ok(at > 0, "the bundle posts messages");
    await Deno.writeTextFile(stale, current.slice(0, at) + "PostMessage" + current.slice(at + 11));
    const message = await staleWorkerBundle(stale);
    assert.match(message ?? "", /^first difference at line 3, column \d+$/);
    assert.equal(await staleWorkerBundle(join(dir, "absent.ts")), "the bundle module is missing");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the host loads no tool code and of the guest only the cell protocol", async () => {
  for (const entry of ["runtime/kernel.ts", "cli.ts", "api/server.ts"]) {
    const guest = (await localModules(entry)).filter((path) =>
      path.startsWith("runtime/guest/") || path.startsWith("tools/")
    );
    assert.deepEqual(guest, ["runtime/guest/cell_protocol.ts"], entry);
  }
});
