import assert from "node:assert/strict";
import {
  _setIdleCellSize,
  Cell,
  READY_TIMEOUT_MS,
  type SlotEnd,
  type SlotMessage,
  threadNames,
} from "./cell.ts";
import type { SlotInput } from "./cell.ts";

function start(source: string): SlotInput {
  return { t: "start", entry: { kind: "module", source }, input: null, seed: 1, epoch: 0 };
}

const ASKS_TIME = `export default async (sys) => await sys.time.now();`;

/** Collects a slot's messages and resolves on its first syscall. */
function inbox(): {
  seen: SlotMessage[];
  first: Promise<SlotMessage>;
  on: (m: SlotMessage) => void;
} {
  const seen: SlotMessage[] = [];
  let resolve!: (m: SlotMessage) => void;
  const first = new Promise<SlotMessage>((r) => resolve = r);
  return { seen, first, on: (m) => (seen.push(m), resolve(m)) };
}

Deno.test("a cell runs several programs, each in its own slot, and routes every message by slot", async () => {
  const cell = await Cell.spawn({ maxWorkers: 4, warmWorkers: 2 });
  try {
    const a = inbox(), b = inbox();
    const slotA = await cell.openSlot(a.on);
    const slotB = await cell.openSlot(b.on);
    assert.notEqual(slotA.id, slotB.id);
    await slotA.send(start(ASKS_TIME));
    await slotB.send(start(`export default async (sys) => await sys.proc.self();`));
    const [firstA, firstB] = await Promise.all([a.first, b.first]);
    assert.equal((firstA as { name: string }).name, "time.now");
    assert.equal((firstB as { name: string }).name, "proc.self");
    assert.equal(firstA.slot, slotA.id);
    assert.equal(firstB.slot, slotB.id);
    assert.equal(cell.open, 2);
  } finally {
    cell.kill("done");
    await cell.exited;
  }
});

/**
 * Program text that takes hold of the Worker's own port to the cell: it
 * catches the port the next time the libc posts on it. `await portOf(sys)`
 * gives the port.
 */
const PORT_OF = `const portOf = async (sys) => {
  let port;
  const post = MessagePort.prototype.postMessage;
  MessagePort.prototype.postMessage = function (message, transfer) {
    port = this;
    return post.call(this, message, transfer);
  };
  await sys.time.now();
  MessagePort.prototype.postMessage = post;
  return port;
};
`;

Deno.test("a program cannot send as another slot: the cell stamps the slot of the port it heard", async () => {
  const cell = await Cell.spawn({ maxWorkers: 2 });
  try {
    const victim = inbox(), forger = inbox();
    const victimSlot = await cell.openSlot(victim.on);
    const forgerSlot = await cell.openSlot(forger.on);
    await victimSlot.send(start(`export default () => new Promise(() => {});`));
    // The forger takes its own port and names the victim's slot and a syscall of its choosing.
    await forgerSlot.send(start(`${PORT_OF}export default async (sys) => {
        const port = await portOf(sys);
        port.postMessage({ t: "syscall", id: 99, name: "fs.delete", args: { path: "x" }, slot: ${victimSlot.id} });
        return await sys.time.now();
      }`));
    await forger.first;
    forgerSlot.send({ t: "reply", id: 1, ok: true, value: 0 });
    const last = await new Promise<SlotMessage>((resolve) => {
      const check = () => forger.seen.length >= 3 ? resolve(forger.seen[2]) : setTimeout(check, 10);
      check();
    });
    const forged = forger.seen.find((m) => m.t === "syscall" && m.name === "fs.delete");
    assert.ok(forged, "the forged message reached the host");
    assert.equal(forged.slot, forgerSlot.id, "stamped with the forger's own slot");
    assert.equal(last.slot, forgerSlot.id);
    assert.equal(victim.seen.length, 0, "nothing arrived as the victim");
  } finally {
    cell.kill("done");
    await cell.exited;
  }
});

Deno.test("a slot refuses a second program: the cell ends, naming that slot", async () => {
  const cell = await Cell.spawn({ maxWorkers: 2 });
  const a = inbox();
  const slot = await cell.openSlot(a.on);
  await slot.send(start(ASKS_TIME));
  await a.first;
  await slot.send(start(`export default async (sys) => await sys.proc.self();`));
  const end = await slot.ended;
  await cell.exited;
  assert.match(end.reason ?? "", /This Worker already runs a process/);
  assert.equal(end.culprit, true);
  const names = a.seen.filter((m) => m.t === "syscall").map((m) => (m as { name: string }).name);
  assert.deepEqual(names, ["time.now"], "the second program never ran");
});

Deno.test("a slot closes cleanly when its program waits; its neighbour runs on", async () => {
  const cell = await Cell.spawn({ maxWorkers: 2 });
  try {
    const a = inbox(), b = inbox();
    const waiting = await cell.openSlot(a.on);
    const neighbour = await cell.openSlot(b.on);
    await waiting.send(start(ASKS_TIME));
    await neighbour.send(
      start(
        `export default async (sys) => { await sys.time.now(); return await sys.proc.self(); }`,
      ),
    );
    await Promise.all([a.first, b.first]);
    const end = await waiting.close();
    assert.deepEqual(end, { closed: { clean: true } });
    assert.equal(cell.dead, false);
    await neighbour.send({ t: "reply", id: 1, ok: true, value: 0 });
    const second = await new Promise<SlotMessage>((resolve) => {
      const check = () => b.seen.length >= 2 ? resolve(b.seen[1]) : setTimeout(check, 10);
      check();
    });
    assert.equal((second as { name: string }).name, "proc.self");
  } finally {
    cell.kill("done");
    await cell.exited;
  }
});

Deno.test("a busy Worker that will not close costs its cell: every slot ends, the cell with it", async () => {
  const cell = await Cell.spawn({ maxWorkers: 2 });
  const a = inbox(), b = inbox();
  const busy = await cell.openSlot(a.on);
  const bystander = await cell.openSlot(b.on);
  await busy.send(start(`export default async (sys) => { await sys.time.now(); for (;;) {} }`));
  await bystander.send(start(ASKS_TIME));
  await Promise.all([a.first, b.first]);
  await busy.send({ t: "reply", id: 1, ok: true, value: 0 });
  const end = await busy.close();
  const other: SlotEnd = await bystander.ended;
  const exit = await cell.exited;
  assert.deepEqual(end, { closed: { clean: false } });
  assert.match(exit.reason ?? "", /kept running after it was stopped/);
  assert.equal(other.culprit, false, "the other program is a bystander");
});

Deno.test("a cell killed for one slot names it the culprit and the others bystanders", async () => {
  const cell = await Cell.spawn({ maxWorkers: 3 });
  const slots = await Promise.all([1, 2, 3].map(() => cell.openSlot(() => {})));
  cell.kill("The program ran 10 ms without making a syscall (CPU limit)", slots[1]);
  const ends = await Promise.all(slots.map((s) => s.ended));
  await cell.exited;
  assert.deepEqual(ends.map((e) => e.culprit), [false, true, false]);
  assert.ok(ends.every((e) => /CPU limit/.test(e.reason ?? "")));
});

Deno.test("a cell opens at most maxWorkers slots", async () => {
  const cell = await Cell.spawn({ maxWorkers: 1 });
  try {
    await cell.openSlot(() => {});
    await assert.rejects(cell.openSlot(() => {}), /runs 1 Workers already/);
  } finally {
    cell.kill("done");
    await cell.exited;
  }
});

/** The soft and hard `RLIMIT_DATA` of process `pid`, read from `/proc` by a shell. */
async function dataLimit(pid: number): Promise<string[]> {
  const { stdout } = await new Deno.Command("/bin/sh", {
    args: [
      "-c",
      'while read -r line; do case $line in "Max data size"*) echo "$line";; esac; done < /proc/"$1"/limits',
      "sh",
      String(pid),
    ],
    stdout: "piped",
  }).output();
  return new TextDecoder().decode(stdout).trim().split(/\s+/).slice(3, 5);
}

Deno.test("every cell of a shape is capped at what the first one measured idle, from its start", async () => {
  // A shape of its own (heap flag 40 MiB, one warm Worker): the first cell is measured.
  const first = await Cell.spawn({ memoryMb: 40 });
  const firstLimit = await dataLimit(first.osPid);
  first.kill("done");
  await first.exited;
  const second = await Cell.spawn({ memoryMb: 40 });
  try {
    const limit = await dataLimit(second.osPid);
    assert.equal(limit.length, 2);
    assert.equal(limit[0], limit[1], "soft and hard limits are the same");
    assert.notEqual(limit[0], "unlimited");
    assert.deepEqual(limit, firstLimit);
    // And it still runs programs under it.
    const a = inbox();
    const slot = await second.openSlot(a.on);
    await slot.send(start(ASKS_TIME));
    assert.equal((await a.first as { name: string }).name, "time.now");
  } finally {
    second.kill("done");
    await second.exited;
  }
});

Deno.test("a cell whose cap is too small to start under does not start", async () => {
  // An idle size of 1 MiB: the cap (about 0.7 GiB) is under what the cell maps before it is
  // ready, so it can only start if the cap is not yet in force.
  _setIdleCellSize(44, 1, 1024);
  await assert.rejects(Cell.spawn({ memoryMb: 44 }), /Cannot start a cell/);
});

Deno.test("thread reads asked together are answered each for its own process", async () => {
  const cell = await Cell.spawn();
  cell.kill("done");
  await cell.exited; // its pid is gone now
  const [host, gone, again] = await Promise.all([
    threadNames(Deno.pid),
    threadNames(cell.osPid),
    threadNames(Deno.pid),
  ]);
  assert.ok(host && host.length > 1, "the host's threads are listed");
  // Threads come and go between two reads, so the two answers may differ;
  // both are the host's (its main thread among them), none the gone process's.
  assert.ok(again && again.length > 1, "the host's threads are listed again");
  assert.ok(host.includes("deno") && again.includes("deno"), JSON.stringify([host, again]));
  assert.equal(gone, undefined, "a process that is gone cannot be read");
});

Deno.test("a cell's private Deno cache holds no data: module and is removed when the cell ends", async () => {
  const cell = await Cell.spawn();
  const denoDir = cell.denoDir;
  const a = inbox();
  try {
    const slot = await cell.openSlot(a.on);
    await slot.send(start(`export default async (sys) => {
        for (let i = 0; i < 20; i++) {
          await import("data:application/typescript;base64," + btoa("export const n: number = " + i + ";"));
        }
        return await sys.time.now();
      }`));
    await a.first;
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

/** A program that answers the cell's `close` itself, then spins in a loop `terminate()` cannot stop. */
const FORGES_CLOSE = `${PORT_OF}export default async (sys) => {
  const port = await portOf(sys);
  port.onmessage = (event) => {
    if (event.data?.t === "close") {
      port.postMessage({ t: "closing" });
      for (;;) {}
    }
  };
  return 0;
}`;

Deno.test("a program that forges its clean close and keeps spinning costs its cell; its neighbour is a bystander", async () => {
  const cell = await Cell.spawn({ maxWorkers: 2 });
  const a = inbox(), b = inbox();
  const forger = await cell.openSlot(a.on);
  const bystander = await cell.openSlot(b.on);
  await forger.send(start(FORGES_CLOSE));
  await bystander.send(start(ASKS_TIME));
  await Promise.all([a.first, b.first]);
  // Once its time.now is answered it takes over its port and exits.
  await forger.send({ t: "reply", id: 1, ok: true, value: 0 });
  while (!a.seen.some((m) => m.t === "syscall" && m.name === "proc.exit")) {
    await new Promise((r) => setTimeout(r, 10));
  }
  const end = await forger.close();
  assert.deepEqual(end, { closed: { clean: true } }, "the close looked clean");
  // The attack worked this far: the forger's thread outlives its Worker.
  assert.match(forger.thread ?? "", /^worker-\d+$/);
  assert.ok(
    (await threadNames(cell.osPid))!.includes(forger.thread!),
    "the forger's thread still runs after its close",
  );
  const other = await bystander.ended;
  const exit = await cell.exited;
  assert.match(exit.reason ?? "", /kept running after it was stopped/);
  assert.equal(other.culprit, false, "the neighbour is a bystander");
});

Deno.test("a Worker that closes for real leaves no thread behind and its cell runs on", async () => {
  const cell = await Cell.spawn({ maxWorkers: 2 });
  try {
    const a = inbox();
    const slot = await cell.openSlot(a.on);
    await slot.send(start(ASKS_TIME));
    await a.first;
    await slot.close();
    assert.ok(cell.checkingThreads, "its thread is to be checked");
    while (cell.checkingThreads) await new Promise((r) => setTimeout(r, 10));
    assert.equal(cell.dead, false, "the check ran and the cell was not killed");
  } finally {
    cell.kill("done");
    await cell.exited;
  }
});

Deno.test("an open can carry its program's start: the slot runs it, and a later start is a second program", async () => {
  const cell = await Cell.spawn({ maxWorkers: 2 });
  const a = inbox();
  const slot = await cell.openSlot(a.on, {}, {
    t: "start",
    entry: { kind: "module", source: ASKS_TIME },
    input: null,
    seed: 1,
    epoch: 0,
  });
  // The start went with the open: the slot already runs a program, so this is a second one.
  await slot.send(start(`export default async (sys) => await sys.proc.self();`));
  const secondRan = new Promise<string>((resolve) => {
    const check = () =>
      a.seen.some((m) => m.t === "syscall" && m.name === "proc.self")
        ? resolve("the second program ran")
        : setTimeout(check, 10);
    check();
  });
  const end = await Promise.race([slot.ended, secondRan]);
  cell.kill("done");
  await cell.exited;
  assert.notEqual(end, "the second program ran");
  assert.match((end as SlotEnd).reason ?? "", /This Worker already runs a process/);
  assert.equal((end as SlotEnd).culprit, true);
});

/** Resolves once the cell has an OS thread named `name`; rejects if none shows up in time. */
async function threadAppears(cell: Cell, name: string): Promise<void> {
  const until = Date.now() + READY_TIMEOUT_MS;
  while (!(await threadNames(cell.osPid))?.includes(name)) {
    if (Date.now() > until) throw new Error(`Cannot find thread ${name} in the cell`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

Deno.test("a cell whose program makes a process keeps a spare Worker loaded: the next open takes it", async () => {
  const cell = await Cell.spawn({ maxWorkers: 4, warmWorkers: 1 });
  try {
    const a = inbox(), b = inbox();
    const first = await cell.openSlot(a.on);
    await first.send(start(`export default async (sys) => await sys.tool.call("echo", {});`));
    await a.first;
    // The switchboard is worker-1 and the caller runs in worker-2; a spare,
    // worker-3, starts before its tool is placed.
    await threadAppears(cell, "worker-3");
    const second = await cell.openSlot(b.on);
    await second.send(start(ASKS_TIME));
    await b.first;
    await Promise.all([first.close(), second.close()]);
    assert.equal(first.thread, "worker-2");
    assert.equal(second.thread, "worker-3", "the second program ran in the spare");
  } finally {
    cell.kill("done");
    await cell.exited;
  }
});

Deno.test("a cell whose program calls JIT tools keeps a second spare: two opens back to back each take one loaded", async () => {
  const cell = await Cell.spawn({ maxWorkers: 6, warmWorkers: 1 });
  try {
    const a = inbox(), b = inbox(), c = inbox();
    const first = await cell.openSlot(a.on);
    await first.send(start(`export default async (sys) => await sys.tool.call("echo", {});`));
    await a.first;
    // The switchboard is worker-1 and the caller worker-2; its spares are worker-3 and worker-4.
    await threadAppears(cell, "worker-4");
    const second = await cell.openSlot(b.on);
    await second.send(start(ASKS_TIME));
    const third = await cell.openSlot(c.on);
    await third.send(start(ASKS_TIME));
    await Promise.all([b.first, c.first]);
    await Promise.all([first.close(), second.close(), third.close()]);
    assert.equal(second.thread, "worker-3");
    assert.equal(third.thread, "worker-4", "the third program ran in the second spare");
  } finally {
    cell.kill("done");
    await cell.exited;
  }
});

Deno.test("a Worker that ran a program is never handed to another: the next program sees none of it", async () => {
  const cell = await Cell.spawn({ maxWorkers: 4, warmWorkers: 2 });
  try {
    const a = inbox(), b = inbox();
    const planter = await cell.openSlot(a.on);
    await planter.send(start(`export default async (sys) => {
        globalThis.planted = "canary";
        return await sys.time.now();
      }`));
    await a.first;
    await planter.close();
    const reader = await cell.openSlot(b.on);
    await reader.send(
      start(
        `export default async (sys) => await sys.fs.read(String(globalThis.planted ?? "none"))`,
      ),
    );
    const read = await b.first;
    assert.deepEqual((read as { args: unknown }).args, { path: "none" }, "no canary in its Worker");
    await reader.close();
    assert.notEqual(reader.thread, planter.thread, "another Worker ran the second program");
  } finally {
    cell.kill("done");
    await cell.exited;
  }
});

Deno.test("a program that posts a message that is not an object costs its cell with that reason", async () => {
  const cell = await Cell.spawn({ maxWorkers: 2 });
  const a = inbox();
  const slot = await cell.openSlot(a.on);
  await slot.send(
    start(`${PORT_OF}export default async (sys) => { (await portOf(sys)).postMessage(null); }`),
  );
  await a.first;
  slot.send({ t: "reply", id: 1, ok: true, value: 0 });
  const end = await slot.ended;
  const exit = await cell.exited;
  assert.match(end.reason ?? "", /not a syscall/);
  assert.match(exit.reason ?? "", /not a syscall/, "the cell refused it, it did not crash on it");
  assert.equal(end.culprit, true);
});

Deno.test("a program that speaks on its Worker object instead of its port costs its cell; a neighbour is a bystander", async () => {
  const cell = await Cell.spawn({ maxWorkers: 2 });
  const a = inbox(), b = inbox();
  const speaker = await cell.openSlot(a.on);
  const bystander = await cell.openSlot(b.on);
  await bystander.send(start(ASKS_TIME));
  await b.first;
  await speaker.send(
    start(
      `export default async () => { globalThis.postMessage({ t: "syscall", id: 1, name: "time.now", args: {} }); }`,
    ),
  );
  const end = await speaker.ended;
  const other = await bystander.ended;
  assert.match(end.reason ?? "", /outside its port/);
  assert.equal(end.culprit, true);
  assert.equal(other.culprit, false);
  assert.ok(
    !a.seen.some((m) => m.t === "syscall" && m.name === "time.now"),
    "nothing it sent that way reached the host",
  );
});

Deno.test("Workers loading beside a running program are not counted as its memory", async () => {
  // Fifteen Workers load while one program with a 32 MiB limit runs: together
  // they add more than 32 MiB, none of it the program's.
  const cell = await Cell.spawn({ maxWorkers: 16, memoryMb: 32 });
  try {
    const slot = await cell.openSlot(() => {});
    await slot.send(start(`export default () => new Promise(() => {});`));
    await Promise.all(Array.from({ length: 14 }, () => cell.openSlot(() => {})));
    // A failing program makes the cell check its memory before it relays the failure.
    const failing = inbox();
    const last = await cell.openSlot(failing.on);
    await last.send(start(`export default () => { throw new Error("planned"); };`));
    const ended = await Promise.race([
      failing.first.then((message) => ({ message })),
      cell.exited.then((exit) => ({ exit })),
    ]);
    assert.ok("message" in ended, `The cell ended: ${JSON.stringify(ended)}`);
    assert.equal(ended.message.t, "fail");
  } finally {
    cell.kill("done");
    await cell.exited;
  }
});
