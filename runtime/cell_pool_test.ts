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

Deno.test("a warm cell killed while it waits is replaced; close kills the rest", async () => {
  const pool = new CellPool(1, OPTIONS);
  await pool.full();
  const first = pool.take(OPTIONS)!;
  await pool.full();
  first.kill("done");
  await first.exited;
  const waiting = pool.take(OPTIONS)!;
  await pool.full();
  const spare = pool.take(OPTIONS)!;
  waiting.kill("killed from outside");
  await waiting.exited;
  assert.ok(alive(spare.osPid));
  spare.kill("done");
  await spare.exited;
  await pool.full();
  assert.equal(pool.ready, 1);
  const last = pool.take(OPTIONS)!;
  await pool.full();
  await pool.close();
  assert.equal(pool.ready, 0);
  assert.equal(pool.take(OPTIONS), undefined, "a closed pool hands out nothing");
  last.kill("done");
  await last.exited;
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
