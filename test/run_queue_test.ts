/**
 * The run queue: a host resumes runnable processes through it at the rate
 * it can run them (at most `maxRunning` holding a Worker at once, observed
 * from the host's cell table and the scheduler's counters), oldest first,
 * each exactly once; a process can be killed or paused while it queues;
 * and a host killed with processes still queued resumes them all.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { SyscallRequest } from "../broker/abi.ts";
import type { AgentImage } from "../runtime/image.ts";
import { Kernel, type KernelOptions, type RunQueue } from "../runtime/kernel.ts";
import { END_STATES } from "../runtime/process_table.ts";
import { QUEUE_MAX_RUNNING, QUEUED_IMAGE, QUEUED_PROGRAM } from "./_queue_host.ts";
import { hostScript } from "./_host_permissions.ts";

const HOST = fileURLToPath(new URL("./_queue_host.ts", import.meta.url));

/** A store file with `count` runnable processes of the queued program, none started. */
async function storeWithRunnable(
  count: number,
): Promise<{ root: string; kvPath: string; workspace: string; pids: number[] }> {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-queue-" }));
  const workspace = join(root, "ws");
  await Deno.mkdir(workspace);
  const kvPath = join(root, "libos.db");
  const kernel = await Kernel.open({ store: kvPath, runs: false });
  try {
    const { tag } = await kernel.images.register({
      name: "queued",
      version: "1.0.0",
      entry: "./main.ts",
      tools: [],
      policy: {},
      ...QUEUED_IMAGE,
    } as AgentImage, { entrySource: QUEUED_PROGRAM });
    const pids: number[] = [];
    for (let n = 1; n <= count; n++) {
      pids.push((await kernel.spawn({ image: tag, workspace, input: n })).pid);
    }
    return { root, kvPath, workspace, pids };
  } finally {
    await kernel.close();
  }
}

/** The run queue of a kernel that runs processes. */
function queueOf(kernel: Kernel): RunQueue {
  const queue = kernel.runQueue;
  assert.ok(queue, "a kernel that runs processes reports its run queue");
  return queue;
}

/** Every event posted on topic `done`, as the inputs they carry. */
async function doneInputs(kernel: Kernel): Promise<number[]> {
  const inputs: number[] = [];
  for (let seq = 0;;) {
    const event = await kernel.events.firstAfter("done", seq);
    if (!event) return inputs;
    inputs.push(event.data as number);
    seq = event.seq;
  }
}

/**
 * Holds every `time.now` call at the broker until the test lets it
 * through; at each arrival, records how many programs hold a Worker (the
 * cell table's open slots) and how many the scheduler counts as running.
 */
function holdCalls(kernel: Kernel): {
  held: { pid: number; release: () => void }[];
  arrived: () => Promise<void>;
  most: { workers: number; running: number };
} {
  const held: { pid: number; release: () => void }[] = [];
  const most = { workers: 0, running: 0 };
  let onArrival: (() => void) | undefined;
  const dispatch = kernel.broker.dispatch.bind(kernel.broker);
  kernel.broker.dispatch = async (ctx, request: SyscallRequest) => {
    if (request.name === "time.now") {
      const workers = kernel.cells.table().reduce((n, row) => n + row.workers, 0);
      most.workers = Math.max(most.workers, workers);
      most.running = Math.max(most.running, queueOf(kernel).running);
      const { promise, resolve } = Promise.withResolvers<void>();
      held.push({ pid: ctx.pid, release: resolve });
      onArrival?.();
      await promise;
    }
    return dispatch(ctx, request);
  };
  return {
    held,
    most,
    arrived: () => new Promise((resolve) => onArrival = resolve),
  };
}

async function withQueueKernel(
  count: number,
  options: KernelOptions,
  body: (kernel: Kernel, pids: number[]) => Promise<void>,
): Promise<void> {
  const { root, kvPath, pids } = await storeWithRunnable(count);
  const kernel = await Kernel.open({ store: kvPath, waitGraceMs: 0, ...options });
  try {
    await body(kernel, pids);
  } finally {
    await kernel.close();
    await Deno.remove(root, { recursive: true });
  }
}

Deno.test("recovering runnable processes with maxRunning k never runs more than k at once; each ends exactly once, oldest first", async () => {
  const count = 6;
  const k = 2;
  await withQueueKernel(count, { maxRunning: k }, async (kernel, pids) => {
    const gate = holdCalls(kernel);
    assert.equal(await kernel.recover(), count);
    const order: number[] = [];
    const idle = kernel.idle();
    while (order.length < count) {
      // A process that fails or ends without its call ends the loop too.
      if (!gate.held.length) await Promise.race([gate.arrived(), idle]);
      const next = gate.held.shift();
      if (!next) break;
      order.push(next.pid);
      next.release();
    }
    await idle;
    assert.ok(gate.most.workers <= k, `${gate.most.workers} Workers at once`);
    assert.ok(gate.most.running <= k, `${gate.most.running} counted running at once`);
    assert.equal(gate.most.running, k, "the queue kept k running");
    // Admitted oldest first: no process reached its call before an older one was admitted.
    assert.deepEqual(order.slice(k).map((pid) => pid > Math.max(...order.slice(0, k))), [
      ...Array(count - k).fill(true),
    ]);
    for (const pid of pids) {
      const record = await kernel.processes.require(pid);
      assert.equal(record.state, "exited");
      assert.equal(record.result, pids.indexOf(pid) + 1);
      const ends = [];
      for await (const event of kernel.processes.events({ pid })) {
        if (END_STATES.has(event.to)) ends.push(event.to);
      }
      assert.deepEqual(ends, ["exited"]);
    }
    assert.deepEqual((await doneInputs(kernel)).sort((a, b) => a - b), [1, 2, 3, 4, 5, 6]);
    assert.equal(queueOf(kernel).queued, 0);
  });
});

Deno.test("a queued process can be killed, or paused and resumed, while it waits for its turn", async () => {
  await withQueueKernel(3, { maxRunning: 1 }, async (kernel, [first, killed, paused]) => {
    const gate = holdCalls(kernel);
    await kernel.recover();
    if (!gate.held.length) await gate.arrived();
    assert.equal(gate.held[0].pid, first);
    assert.deepEqual([queueOf(kernel).queued, queueOf(kernel).running], [2, 1]);
    await kernel.signal(killed, "kill");
    await kernel.signal(paused, "pause");
    assert.equal(queueOf(kernel).queued, 0, "neither waits in the queue any more");
    await kernel.signal(paused, "resume");
    assert.equal(queueOf(kernel).queued, 1);
    gate.held.shift()!.release();
    if (!gate.held.length) await gate.arrived();
    assert.equal(gate.held[0].pid, paused, "the killed one never ran");
    gate.held.shift()!.release();
    await kernel.idle();
    assert.equal((await kernel.processes.require(killed)).state, "killed");
    assert.equal((await kernel.processes.require(paused)).state, "exited");
    assert.deepEqual((await doneInputs(kernel)).sort(), [1, 3]);
  });
});

Deno.test("a host killed with processes still queued: the next host resumes every one, each effect once", async () => {
  const count = 8;
  const { root, kvPath, workspace, pids } = await storeWithRunnable(count);
  const watch = await Deno.openKv(kvPath);
  try {
    const child = hostScript(HOST, [kvPath, workspace], {
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    // Kill it once one process has ended while others still wait their turn.
    let states: string[] = [];
    for (;;) {
      states = [];
      for (const pid of pids) {
        states.push((await watch.get<{ state: string }>(["proc", pid])).value!.state);
      }
      if (states.includes("exited")) break;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    child.kill("SIGKILL");
    await child.status;
    assert.ok(
      states.filter((s) => s === "runnable").length >= count - 1 - QUEUE_MAX_RUNNING,
      `still queued when killed: ${states}`,
    );
    const kernel = await Kernel.open({
      store: kvPath,
      maxRunning: QUEUE_MAX_RUNNING,
      waitGraceMs: 0,
    });
    try {
      await kernel.recover();
      await kernel.idle();
      for (const [i, pid] of pids.entries()) {
        const record = await kernel.processes.require(pid);
        assert.deepEqual([record.state, record.result], ["exited", i + 1]);
      }
      assert.deepEqual(
        (await doneInputs(kernel)).sort((a, b) => a - b),
        pids.map((_, i) => i + 1),
      );
    } finally {
      await kernel.close();
    }
  } finally {
    watch.close();
    await Deno.remove(root, { recursive: true });
  }
});
