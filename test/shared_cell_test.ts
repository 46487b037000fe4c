/**
 * Processes of one tree share a cell. When one of them makes its cell die
 * (a busy loop past its CPU limit, a heap bomb), that one fails alone: the
 * others resume from their journals in another cell, each effect done
 * exactly once.
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { type Harness, reach, withHarness } from "./_harness.ts";

/**
 * A root that spawns `culprit`, then appends numbered lines to `log.txt`
 * until it sees the child failed, and returns how many it wrote. It never
 * waits, so it keeps its Worker in the shared cell the whole time.
 */
const ROOT = `export default async (sys, input) => {
  const child = await sys.proc.spawn({ image: input.culprit, input: {} });
  let i = 0;
  for (;;) {
    await sys.fs.append("log.txt", i++ + "\\n");
    const [state] = (await sys.proc.children()).map((c) => c.state);
    if (state === "failed") break;
  }
  await sys.fs.append("log.txt", "done\\n");
  return { child: child.pid, lines: i };
}`;

async function sharedCellRun(h: Harness, culpritSource: string, limits: Record<string, number>) {
  const culprit = await h.program("culprit", culpritSource, { limits });
  const root = await h.program("root", ROOT, {
    capabilities: ["fs:read,write:**", "proc:spawn:*"],
  });
  const proc = await h.kernel.spawn({ image: root, workspace: h.workspace, input: { culprit } });
  h.kernel.start(proc.pid);
  // Both run in one cell before the culprit brings it down.
  let shared: [number, number] | undefined;
  while (!shared) {
    const rootCell = h.kernel.executionOf(proc.pid)?.slot?.cell.osPid;
    const children = (await h.kernel.processes.list()).filter((p) => p.ppid === proc.pid);
    const childCell = children[0] && h.kernel.executionOf(children[0].pid)?.slot?.cell.osPid;
    if (rootCell !== undefined && childCell !== undefined) shared = [rootCell, childCell];
    else await new Promise((r) => setTimeout(r, 5));
  }
  const end = await h.kernel.waitFor(proc.pid);
  const result = end.result as { child: number; lines: number };
  const child = await h.kernel.processes.require(result.child);
  const log = await Deno.readTextFile(join(h.workspace, "log.txt"));
  return { shared, end, child, result, log };
}

function assertExactlyOnce(log: string, lines: number): void {
  const expected = Array.from({ length: lines }, (_, i) => String(i)).concat("done");
  assert.deepEqual(log.trimEnd().split("\n"), expected, "every append exactly once, in order");
}

Deno.test("a busy loop in a shared cell fails alone; the bystander resumes elsewhere, each effect once", async () => {
  await withHarness(async (h) => {
    const run = await sharedCellRun(
      h,
      `export default async (sys) => { await sys.time.now(); for (;;) {} }`,
      { cpuMs: 300 },
    );
    assert.equal(run.shared[0], run.shared[1], "root and culprit shared a cell");
    assert.equal(run.child.state, "failed");
    assert.match(run.child.error!.message, /CPU limit/);
    assert.equal(run.end.state, "exited", JSON.stringify(run.end.error));
    assertExactlyOnce(run.log, run.result.lines);
    // The bystander's Worker died with the cell: it finished in another one.
    const cell = h.kernel.executionOf(run.end.pid)?.slot?.cell.osPid;
    assert.notEqual(cell, run.shared[0]);
  }, { execSandbox: "none" });
});

Deno.test("a heap bomb in a shared cell fails alone (its repeat found in a cell of its own); the bystander finishes", async () => {
  await withHarness(async (h) => {
    const run = await sharedCellRun(
      h,
      `export default async (sys) => {
        await sys.time.now();
        const hoard = [];
        for (;;) hoard.push(new Array(1 << 16).fill({ x: hoard.length }));
      }`,
      { memoryMb: 64 },
    );
    assert.equal(run.child.state, "failed");
    assert.match(run.child.error!.message, /memory/);
    assert.equal(run.end.state, "exited", JSON.stringify(run.end.error));
    assertExactlyOnce(run.log, run.result.lines);
  }, { execSandbox: "none" });
});

Deno.test("without resuming bystanders, the culprit's cell death would fail the bystander too", async () => {
  // The same shape, with the culprit in the root's own program: there is no
  // bystander to save, and the process fails (the resume is what saves one).
  await withHarness(async (h) => {
    const tag = await h.program(
      "spin",
      `export default async (sys) => { await sys.time.now(); for (;;) {} }`,
      { limits: { cpuMs: 300 } },
    );
    const proc = await h.kernel.spawn({ image: tag, workspace: h.workspace });
    h.kernel.start(proc.pid);
    const end = await reach(h, proc.pid, "failed");
    assert.match(end.error!.message, /CPU limit/);
  }, { execSandbox: "none" });
});
