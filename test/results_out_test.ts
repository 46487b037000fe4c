/**
 * Running the benchmarks leaves the checkout clean: results go to
 * `.libos/` under the current directory (or `--out`), and the committed
 * `bench/results.json` and `safety/results.json` stay the reference run.
 * A selection that matches nothing is an error, not an empty run.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { HOST_PERMISSIONS } from "./_host_permissions.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

async function runIn(cwd: string, script: string, args: string[]): Promise<Deno.CommandOutput> {
  return await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...HOST_PERMISSIONS,
      "--allow-net=127.0.0.1",
      join(ROOT, script),
      ...args,
    ],
    cwd,
    stdin: "null",
  }).output();
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "libos-results-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

for (
  const [name, script, args, committed, written] of [
    [
      "safety",
      "safety/run.ts",
      ["--only", "benign-delete-out"],
      "safety/results.json",
      "safety-results.json",
    ],
    [
      "bench",
      "bench/run.ts",
      ["--quick", "--only=syscall_rtt"],
      "bench/results.json",
      "bench-results.json",
    ],
  ] as const
) {
  Deno.test(`deno task ${name} writes under .libos/ and leaves ${committed} as committed`, async () => {
    const reference = await Deno.readTextFile(join(ROOT, committed));
    await withTempDir(async (dir) => {
      const output = await runIn(dir, script, [...args]);
      const text = new TextDecoder().decode(output.stdout) +
        new TextDecoder().decode(output.stderr);
      assert.equal(output.code, 0, text);
      const results = JSON.parse(await Deno.readTextFile(join(dir, ".libos", written)));
      assert.equal(typeof results, "object");
      assert.equal(await Deno.readTextFile(join(ROOT, committed)), reference);
    });
  });
}

Deno.test("a benchmark selection that matches nothing fails with one line", async () => {
  await withTempDir(async (dir) => {
    for (
      const [script, args] of [
        ["bench/run.ts", ["--quick", "--only=no_such_bench"]],
        ["safety/run.ts", ["--only", "no-such-task"]],
      ] as const
    ) {
      const output = await runIn(dir, script, [...args]);
      assert.notEqual(output.code, 0, `${script} ran an empty selection`);
      assert.match(new TextDecoder().decode(output.stderr), /Cannot run/);
    }
    await assert.rejects(Deno.stat(join(dir, ".libos")), Deno.errors.NotFound);
  });
});
