import assert from "node:assert/strict";
import { CellPool, type Placement } from "./cell_pool.ts";
import { withHarness } from "../test/_harness.ts";
import { cellOptionsOf, DEFAULT_LIMITS } from "./execution.ts";

const LIMITS = cellOptionsOf(DEFAULT_LIMITS);
const TREE_A: Placement = { group: "tree:1", limits: LIMITS };
const TREE_B: Placement = { group: "tree:2", limits: LIMITS };
const TREE_C: Placement = { group: "tree:3", limits: LIMITS };

function alive(osPid: number): boolean {
  try {
    Deno.kill(osPid, "SIGCONT"); // a no-op signal that fails for a gone pid
    return true;
  } catch {
    return false;
  }
}

/** Resolves once `check` holds (looked at every few ms), or fails after 20 s. */
async function until(check: () => boolean, what: string): Promise<void> {
  const deadline = performance.now() + 20_000;
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`Timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

Deno.test("programs of one group share a cell; another group never gets it, warm or cold", async () => {
  const pool = new CellPool({ warm: 1, limits: LIMITS, maxWorkers: 4 });
  try {
    await pool.full();
    const [warm] = pool.readyPids;
    const a1 = await pool.place(TREE_A, () => {});
    const a2 = await pool.place(TREE_A, () => {});
    const b1 = await pool.place(TREE_B, () => {});
    assert.equal(a1.cell, a2.cell, "one tree, one cell");
    assert.equal(a1.cell.osPid, warm, "the first placement took the warm cell");
    assert.notEqual(b1.cell, a1.cell, "another tree, another cell");
    // Even once tree A's cell is empty, tree B is not given it.
    await a1.close();
    pool.released(a1);
    await a2.close();
    pool.released(a2);
    const b2 = await pool.place(TREE_B, () => {});
    assert.equal(b2.cell, b1.cell);
    const rows = pool.table();
    for (const row of rows) {
      assert.ok(row.group === "tree:1" || row.group === "tree:2");
    }
    assert.deepEqual(
      rows.filter((r) => r.osPid === a1.cell.osPid).map((r) => r.group),
      a1.cell.dead ? [] : ["tree:1"],
    );
  } finally {
    await pool.close();
  }
});

Deno.test("without the group check, the same placements would share one cell", async () => {
  // The same shape as above with one group name: the pool does pack programs together.
  const pool = new CellPool({ maxWorkers: 4 });
  try {
    const a = await pool.place({ group: "g", limits: LIMITS }, () => {});
    const b = await pool.place({ group: "g", limits: LIMITS }, () => {});
    assert.equal(a.cell, b.cell);
  } finally {
    await pool.close();
  }
});

Deno.test("a placement alone gets a cell of its own; a full cell makes the group another", async () => {
  const pool = new CellPool({ maxWorkers: 2 });
  try {
    const a = await pool.place(TREE_A, () => {});
    const alone = await pool.place({ ...TREE_A, alone: true }, () => {});
    assert.notEqual(alone.cell, a.cell);
    assert.equal(alone.cell.maxWorkers, 1);
    const b = await pool.place(TREE_A, () => {});
    assert.equal(b.cell, a.cell);
    const c = await pool.place(TREE_A, () => {});
    assert.notEqual(c.cell, a.cell, "the first cell is full");
    assert.notEqual(c.cell, alone.cell, "and the lone cell takes nobody else");
  } finally {
    await pool.close();
  }
});

Deno.test("a program with other limits gets no warm cell", async () => {
  const pool = new CellPool({ warm: 1, limits: LIMITS });
  try {
    await pool.full();
    const slot = await pool.place(
      { group: "g", limits: { ...LIMITS, memoryMb: LIMITS.memoryMb! * 2 } },
      () => {},
    );
    assert.equal(pool.ready, 1);
    assert.ok(!pool.readyPids.includes(slot.cell.osPid));
  } finally {
    await pool.close();
  }
});

Deno.test("a warm cell that dies while it waits is replaced, never handed out", async () => {
  const pool = new CellPool({ warm: 1, limits: LIMITS });
  try {
    await pool.full();
    // The pool's own cells: other test modules in this OS process have cells too.
    const [dead] = pool.readyPids;
    assert.ok(dead, "the pool's one cell runs");
    Deno.kill(dead, "SIGKILL");
    await until(() => pool.started === 2, "the pool starts a replacement");
    await pool.full();
    const slot = await pool.place(TREE_A, () => {});
    assert.notEqual(slot.cell.osPid, dead);
    assert.ok(alive(slot.cell.osPid));
  } finally {
    await pool.close();
  }
});

Deno.test("close kills every cell and places nothing more", async () => {
  const pool = new CellPool({ warm: 2, limits: LIMITS });
  await pool.full();
  const placed = await pool.place(TREE_A, () => {});
  await pool.full();
  const pids = [...pool.readyPids, placed.cell.osPid];
  assert.equal(pids.length, 3);
  await pool.close();
  assert.deepEqual(pids.filter(alive), [], "no cell outlives its pool");
  assert.equal(pool.ready, 0);
  await assert.rejects(pool.place(TREE_A, () => {}), /shutting down/);
});

Deno.test("a full pool makes a placement wait for room, oldest first, instead of failing or starting more cells", async () => {
  let asked = 0;
  const pool = new CellPool({ limits: LIMITS, maxCells: 1, needRoom: () => asked++ });
  try {
    const a = await pool.place(TREE_A, () => {});
    const placed: string[] = [];
    const b = pool.place(TREE_B, () => {}).then((slot) => (placed.push("b"), slot));
    const c = pool.place(TREE_C, () => {}).then((slot) => (placed.push("c"), slot));
    // Tree A still fits its own cell while the others wait.
    const a2 = await pool.place(TREE_A, () => {});
    assert.equal(a2.cell, a.cell);
    assert.deepEqual([pool.waiting, pool.table().length, placed], [2, 1, []]);
    assert.ok(asked >= 1, "the pool asked its owner for room");
    // Tree A's cell empties: it ends at once (others wait), and the oldest waiter gets the room.
    await a.close();
    pool.released(a);
    await a2.close();
    pool.released(a2);
    const slotB = await b;
    assert.deepEqual(placed, ["b"]);
    assert.ok(a.cell.dead || !pool.table().some((r) => r.osPid === a.cell.osPid));
    assert.deepEqual(pool.table().map((r) => r.group), ["tree:2"]);
    await slotB.close();
    pool.released(slotB);
    const slotC = await c;
    assert.deepEqual(placed, ["b", "c"]);
    assert.deepEqual(pool.table().map((r) => r.group), ["tree:3"]);
    assert.equal(pool.waiting, 0);
    await slotC.close();
    pool.released(slotC);
  } finally {
    await pool.close();
  }
});

Deno.test("a placement still waiting for room when the host shuts down is refused, not left hanging", async () => {
  const pool = new CellPool({ limits: LIMITS, maxCells: 1 });
  try {
    await pool.place(TREE_A, () => {});
    const waiting = pool.place(TREE_B, () => {});
    while (pool.waiting === 0) await new Promise((resolve) => setTimeout(resolve, 1));
    pool.refuseWaiting();
    await assert.rejects(waiting, /Cannot start a program: the host is shutting down/);
    await assert.rejects(pool.place(TREE_C, () => {}), /shutting down/);
  } finally {
    await pool.close();
  }
});

Deno.test("processes of two trees never share a cell; a tree's children do (the kernel's cell table)", async () => {
  await withHarness(async (h) => {
    const busy = await h.program(
      "busy",
      `export default async (sys, input) => {
        if (input?.spawn) await sys.proc.spawn({ image: "busy@1.0.0", input: {} });
        // Running, a syscall now and then (under the rate limit).
        for (;;) {
          for (let i = 0; i < 1e6; i++);
          await sys.time.now();
        }
      }`,
      { capabilities: ["proc:spawn:*"] },
    );
    const roots = [];
    for (let i = 0; i < 2; i++) {
      const root = await h.kernel.spawn({
        image: busy,
        workspace: h.workspace,
        input: { spawn: true },
      });
      h.kernel.start(root.pid);
      roots.push(root);
    }
    const running = () => h.kernel.cells.table().reduce((n, r) => n + r.workers, 0);
    await until(() => running() >= 4, "four programs run");
    const table = h.kernel.cells.table().filter((r) => r.workers > 0);
    assert.deepEqual(
      table.map((r) => r.group).sort(),
      roots.map((r) => `tree:${r.pid}`).sort(),
      "one cell per tree",
    );
    assert.ok(table.every((r) => r.workers === 2), "each root shares its cell with its child");
    for (const root of roots) await h.kernel.signal(root.pid, "kill");
  }, { execSandbox: "none" });
});

Deno.test("with per-principal sharing, one principal's trees share a cell and another's do not", async () => {
  await withHarness(async (h) => {
    const busy = await h.program(
      "busy",
      `export default async (sys) => {
        for (;;) {
          for (let i = 0; i < 1e6; i++);
          await sys.time.now();
        }
      }`,
    );
    const pids: number[] = [];
    for (const principal of ["api:alice", "api:alice", "api:bob"]) {
      const root = await h.kernel.spawn({ image: busy, workspace: h.workspace, principal });
      h.kernel.start(root.pid);
      pids.push(root.pid);
    }
    await until(
      () => pids.every((pid) => h.kernel.executionOf(pid)?.slot !== undefined),
      "three programs run",
    );
    const [a1, a2, b] = pids.map((pid) => h.kernel.executionOf(pid)!.slot!.cell);
    assert.equal(a1, a2, "alice's two trees share a cell");
    assert.notEqual(b, a1, "bob's tree never shares alice's cell");
    assert.deepEqual(
      h.kernel.cells.table().filter((r) => r.workers > 0).map((r) => r.group).sort(),
      ["principal:api:alice", "principal:api:bob"],
    );
    assert.equal(h.kernel.cellPolicy.sharing, "principal");
    for (const pid of pids) await h.kernel.signal(pid, "kill");
  }, { execSandbox: "none", cellSharing: "principal" });
});

Deno.test("a pool refuses a negative size", () => {
  assert.throws(() => new CellPool({ warm: -1 }), /Cannot keep -1 warm cells/);
});

const ASKS_TIME = {
  t: "start" as const,
  entry: { kind: "module" as const, source: "export default async (sys) => await sys.time.now();" },
  input: null,
  seed: 1,
  epoch: 0,
};

Deno.test("a program started before its process is made runs at once, speaks only once attached, in a cell named for its tree only then", async () => {
  const pool = new CellPool({ warm: 1, limits: LIMITS, maxWorkers: 4 });
  try {
    await pool.full();
    const early = pool.placeEarly({ limits: LIMITS }, ASKS_TIME);
    // Its Worker runs it while the process is being made: the cell is of a group no one can name.
    await until(() => pool.table().some((r) => r.group?.startsWith("unnamed:")), "it is placed");
    const other = await pool.place(TREE_B, () => {});
    assert.ok(
      pool.table().every((r) => r.osPid !== other.cell.osPid || r.group === "tree:2"),
      "another tree never gets the unnamed cell",
    );
    // What it says before its process is made is held, and handed over on attach.
    const said: string[] = [];
    const slot = await early.attach((m) => said.push(m.t === "syscall" ? m.name : m.t), "tree:1");
    await until(() => said.length > 0, "the held call is handed over");
    assert.deepEqual(said, ["time.now"]);
    assert.notEqual(slot.cell, other.cell);
    assert.deepEqual(
      pool.table().filter((r) => r.osPid === slot.cell.osPid).map((r) => r.group),
      ["tree:1"],
      "the cell is named for its tree once the process is made",
    );
    // The tree's next program shares it.
    const sibling = await pool.place(TREE_A, () => {});
    assert.equal(sibling.cell, slot.cell);
  } finally {
    await pool.close();
  }
});

Deno.test("a program started early whose process is not made ends, and the cell it took with it", async () => {
  const pool = new CellPool({ warm: 1, limits: LIMITS, maxWorkers: 4 });
  try {
    await pool.full();
    const [warm] = pool.readyPids;
    const early = pool.placeEarly({ limits: LIMITS }, ASKS_TIME);
    await until(() => pool.table().some((r) => r.osPid === warm), "it took the warm cell");
    early.abandon();
    await until(() => !alive(warm), "the cell it took has ended");
    assert.equal(pool.table().some((r) => r.osPid === warm), false);
    // With a group already named (a principal's), only its slot ends: the cell serves the group on.
    const a = await pool.place(TREE_A, () => {});
    const shared = pool.placeEarly({ group: "tree:1", limits: LIMITS }, ASKS_TIME);
    await until(() => pool.table().some((r) => r.group === "tree:1" && r.workers === 2), "placed");
    shared.abandon();
    await until(() => pool.table().some((r) => r.group === "tree:1" && r.workers === 1), "closed");
    assert.equal(a.cell.dead, false, "the group's cell serves on");
  } finally {
    await pool.close();
  }
});

Deno.test("a program to start early while the pool is full waits for its process instead; one not made takes no room", async () => {
  const pool = new CellPool({ limits: LIMITS, maxWorkers: 1, maxCells: 1 });
  try {
    const a = await pool.place(TREE_A, () => {});
    const refused = pool.placeEarly({ limits: LIMITS }, ASKS_TIME);
    const made = pool.placeEarly({ limits: LIMITS }, ASKS_TIME);
    assert.equal(pool.waiting, 0, "neither waits for room before its process is made");
    refused.abandon();
    const said: string[] = [];
    const attached = made.attach((m) => said.push(m.t === "syscall" ? m.name : m.t), "tree:2");
    await until(() => pool.waiting === 1, "the one made waits for room");
    await a.close();
    pool.released(a);
    const slot = await attached;
    assert.deepEqual(pool.table().map((r) => r.group), ["tree:2"], "the refused one took none");
    await until(() => said.length > 0, "its program runs");
    assert.deepEqual(said, ["time.now"]);
    assert.equal(slot.cell.dead, false);
  } finally {
    await pool.close();
  }
});
