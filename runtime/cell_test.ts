import assert from "node:assert/strict";
import { Cell } from "./cell.ts";
import type { CellToHost, CellToWorker } from "./guest/cell_protocol.ts";

function start(pid: number, source: string): CellToWorker {
  return {
    t: "start",
    pid,
    entry: { kind: "module", source },
    input: null,
    seed: 1,
    epoch: 0,
  };
}

const ASKS_TIME = `export default async (sys) => await sys.time.now();`;

Deno.test("a cell is ready with its Worker up, and runs the program it is given", async () => {
  const seen: CellToHost[] = [];
  let first!: () => void;
  const syscall = new Promise<void>((resolve) => first = resolve);
  const cell = await Cell.spawn((message) => {
    seen.push(message);
    if (message.t === "syscall") first();
  });
  try {
    await cell.send(start(1, ASKS_TIME));
    await syscall;
    assert.deepEqual(seen.map((m) => m.t), ["syscall"]);
    assert.equal((seen[0] as { name: string }).name, "time.now");
  } finally {
    cell.kill("done");
    await cell.exited;
  }
});

Deno.test("a cell refuses a second process: it crashes instead of running it", async () => {
  const seen: CellToHost[] = [];
  let first!: () => void;
  const syscall = new Promise<void>((resolve) => first = resolve);
  let second!: () => void;
  const secondSyscall = new Promise<"ran">((resolve) => second = () => resolve("ran"));
  // No handler at first: messages are kept until attach, as for a warm cell.
  const cell = await Cell.spawn(undefined);
  await cell.send(start(1, ASKS_TIME));
  cell.attach((message) => {
    seen.push(message);
    // Anything after the first syscall but a crash means the second start reached the Worker.
    if (message.t === "syscall" && message.name === "time.now") first();
    else if (message.t !== "crash") second();
  });
  await syscall;
  await cell.send(start(2, `export default async (sys) => await sys.proc.self();`));
  // Either the cell ends, or (without the guard) the Worker takes the second start.
  const ended = await Promise.race([cell.exited, secondSyscall]);
  cell.kill("done");
  await cell.exited;
  assert.notEqual(ended, "ran", "the second program ran in the same cell");
  const crash = seen.find((m) => m.t === "crash") as { message: string } | undefined;
  assert.match(crash?.message ?? "", /This cell already runs a process/);
  const names = seen.filter((m) => m.t === "syscall").map((m) => (m as { name: string }).name);
  assert.deepEqual(names, ["time.now"], "the second program never ran");
});

Deno.test("a cell's private Deno cache holds no data: module and is removed when the cell ends", async () => {
  let done!: () => void;
  const finished = new Promise<void>((resolve) => done = resolve);
  const cell = await Cell.spawn((message) => {
    if (message.t === "syscall") done();
  });
  const denoDir = cell.denoDir;
  try {
    await cell.send(start(
      1,
      `export default async (sys) => {
        for (let i = 0; i < 20; i++) {
          await import("data:application/typescript;base64," + btoa("export const n: number = " + i + ";"));
        }
        return await sys.time.now();
      }`,
    ));
    await finished;
    const emitted: string[] = [];
    for await (const entry of Deno.readDir(denoDir)) emitted.push(entry.name);
    assert.ok(emitted.includes("gen"), "the cell uses its private cache");
    const data = await Deno.lstat(`${denoDir}/gen/data`);
    assert.ok(data.isFile && data.size === 0, "data: module emits are not kept on disk");
  } finally {
    cell.kill("done");
    await cell.exited;
  }
  await assert.rejects(Deno.lstat(denoDir), Deno.errors.NotFound);
});
