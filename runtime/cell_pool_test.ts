import assert from "node:assert/strict";
import { CellPool } from "./cell_pool.ts";
import { withHarness } from "../test/_harness.ts";
import { cellOptionsOf, DEFAULT_LIMITS } from "./execution.ts";

const OPTIONS = cellOptionsOf(DEFAULT_LIMITS);

function alive(osPid: number): boolean {
  try {
    Deno.kill(osPid, "SIGCONT"); // a no-op signal that fails for a gone pid
    return true;
  } catch {
    return false;
  }
}

Deno.test("a pool keeps its cells ready and replaces each one taken", async () => {
  const pool = new CellPool(2, OPTIONS);
  try {
    await pool.full();
    assert.equal(pool.ready, 2);
    const taken = pool.take(OPTIONS);
    assert.ok(taken, "a ready cell");
    assert.equal(pool.ready, 1);
    await pool.full();
    assert.equal(pool.ready, 2, "a replacement was started");
    const other = pool.take(OPTIONS)!;
    assert.notEqual(other.osPid, taken.osPid, "a cell is never handed out twice");
    taken.kill("done");
    other.kill("done");
    await Promise.all([taken.exited, other.exited]);
  } finally {
    await pool.close();
  }
});

Deno.test("a process with other limits gets no warm cell", async () => {
  const pool = new CellPool(1, OPTIONS);
  try {
    await pool.full();
    assert.equal(pool.take({ ...OPTIONS, memoryMb: OPTIONS.memoryMb! * 2 }), undefined);
    assert.equal(pool.ready, 1);
  } finally {
    await pool.close();
  }
});

/** Resolves once `check` holds (looked at every few ms), or fails after 20 s. */
async function until(check: () => boolean, what: string): Promise<void> {
  const deadline = performance.now() + 20_000;
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`Timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

Deno.test("a warm cell that dies while it waits is replaced, never handed out", async () => {
  const pool = new CellPool(1, OPTIONS);
  try {
    await pool.full();
    // The pool's own cells: other test modules in this OS process have cells too.
    const [dead] = pool.readyPids;
    assert.ok(dead, "the pool's one cell runs");
    Deno.kill(dead, "SIGKILL");
    await until(() => pool.started === 2, "the pool starts a replacement");
    await pool.full();
    const cell = pool.take(OPTIONS)!;
    assert.notEqual(cell.osPid, dead);
    assert.ok(alive(cell.osPid));
    cell.kill("done");
    await cell.exited;
  } finally {
    await pool.close();
  }
});

Deno.test("close kills the ready cells and hands out nothing more", async () => {
  const pool = new CellPool(2, OPTIONS);
  await pool.full();
  const pids = pool.readyPids;
  assert.equal(pids.length, 2);
  await pool.close();
  assert.deepEqual(pids.filter(alive), [], "no cell outlives its pool");
  assert.equal(pool.ready, 0);
  assert.equal(pool.take(OPTIONS), undefined);
});

Deno.test("processes run in warm cells, one cell each, and the pool refills", async () => {
  await withHarness(async (h) => {
    await h.kernel.cells.full();
    assert.equal(h.kernel.cells.ready, 2);
    assert.equal(h.kernel.cells.started, 2);
    const first = await h.run(`export default async (sys) => (await sys.proc.self()).pid`);
    const second = await h.run(`export default async (sys) => (await sys.proc.self()).pid`);
    assert.equal(first.state, "exited");
    assert.equal(first.result, first.pid);
    assert.equal(second.result, second.pid);
    await h.kernel.cells.full();
    assert.equal(h.kernel.cells.ready, 2);
    assert.equal(h.kernel.cells.taken, 2, "each process took a warm cell");
    assert.equal(h.kernel.cells.started, 4, "and each one taken was replaced");
  }, { warmCells: 2 });
});

Deno.test("a pool refuses a negative size", () => {
  assert.throws(() => new CellPool(-1, OPTIONS), /Cannot keep -1 warm cells/);
});
