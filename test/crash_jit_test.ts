/**
 * A host that dies at either commit of a JIT tool call (the one that makes
 * the tool's process with its caller blocked, the one that ends it with its
 * caller woken), just before or just after it lands: the store holds all of
 * that commit or none of it, and the next host finishes the caller with
 * one tool process per call, each call answered with its tool's result.
 *
 * The first host "dies" in this process: from the chosen moment on, none of
 * its commits lands (each waits forever), and its cells are killed.
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import type { AgentImage } from "../runtime/image.ts";
import { Kernel } from "../runtime/kernel.ts";

const CALLER = `export default async function main(sys) {
  await sys.tool.register({ name: "echo", description: "returns its input",
    input: { type: "object", properties: { n: { type: "number" } }, required: ["n"] },
    manifest: { capabilities: [] },
    source: "export async function run(args: { n: number }, sys: any) { await sys.time.now(); return args.n * 10; }" });
  const out = [];
  for (let i = 1; i <= 2; i++) {
    await sys.time.now();
    out.push(await sys.tool.call("echo", { n: i }));
  }
  return out;
}`;

type Commit = "made" | "ended";
type Moment = "before" | "after";

/** Whether a commit's keys are the first (`made`) or second (`ended`) commit of a tool call. */
function commitOf(keys: Deno.KvKey[]): Commit | undefined {
  if (keys.some((k) => k[0] === "proc_child")) return "made";
  if (keys.some((k) => k[0] === "wait_child") && keys.some((k) => k[0] === "proc")) return "ended";
  return undefined;
}

/**
 * Stops every commit of `kv` from landing once the first `which` commit is
 * reached: that one too (`before`), or all after it (`after`). Resolves
 * once the host is frozen.
 */
function dieAt(kv: Deno.Kv, which: Commit, moment: Moment): Promise<void> {
  const original = kv.atomic.bind(kv);
  let dead = false;
  return new Promise((frozen) => {
    kv.atomic = () => {
      const op = original();
      const keys: Deno.KvKey[] = [];
      const { set, delete: remove, commit } = op;
      op.set = (key, value, options) => (keys.push(key), set.call(op, key, value, options));
      op.delete = (key) => (keys.push(key), remove.call(op, key));
      op.commit = async () => {
        if (dead) return await new Promise<never>(() => {});
        if (commitOf(keys) !== which) return await commit.call(op);
        dead = true;
        if (moment === "before") {
          frozen();
          return await new Promise<never>(() => {});
        }
        const result = await commit.call(op);
        frozen();
        return result;
      };
      return op;
    };
  });
}

/**
 * What the store holds of the tool calls of `pid`: its tools' states, the
 * calls' phases, the records of the calls of no effect the caller made
 * before each (`stamps`), and the records of its tools' own calls.
 */
async function held(kernel: Kernel, pid: number) {
  const tools = [];
  let toolRecords = 0;
  for (const child of await kernel.processes.children(pid)) {
    tools.push((await kernel.processes.require(child)).state);
    for await (const _ of kernel.store.kv.list({ prefix: ["journal", child] })) toolRecords++;
  }
  const calls = [];
  let stamps = 0;
  for await (
    const e of kernel.store.kv.list<{ name: string; phase: string }>({ prefix: ["journal", pid] })
  ) {
    if (e.value.name === "tool.call") calls.push(e.value.phase);
    if (e.value.name === "time.now") stamps++;
  }
  const waits = [];
  for await (const e of kernel.store.kv.list({ prefix: ["wait_child"] })) waits.push(e.key);
  const caller = (await kernel.processes.require(pid)).state;
  return { caller, tools, calls, waits: waits.length, stamps, toolRecords };
}

/** The store between the two commits of a tool call: the caller blocked on its running tool. */
const TOOL_RUNNING = {
  caller: "blocked",
  tools: ["running"],
  calls: ["wait"],
  waits: 1,
  stamps: 1,
  toolRecords: 0,
};

for (const which of ["made", "ended"] as const) {
  for (const moment of ["before", "after"] as const) {
    Deno.test(
      {
        name:
          `a host dying just ${moment} a tool call's ${which} commit leaves all of it or none, and the next host finishes the call once`,
        // The dead host's commits wait forever and its kernel is never closed.
        sanitizeOps: false,
        sanitizeResources: false,
      },
      async () => {
        const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-crash-jit-" }));
        const workspace = join(root, "ws");
        await Deno.mkdir(workspace);
        const store = join(root, "libos.db");
        // Buffered records commit only with a commit that needs them (no timer flush).
        const options = { store, waitGraceMs: 60_000, journal: { flushMs: 600_000 } };
        const first = await Kernel.open(options);
        let second: Kernel | undefined;
        try {
          const image = await first.images.register({
            name: "caller",
            version: "1.0.0",
            entry: "./main.ts",
            tools: [],
            capabilities: ["tool:register:*"],
            policy: {},
          } as AgentImage, { entrySource: CALLER });
          const frozen = dieAt(first.store.kv as Deno.Kv, which, moment);
          const { pid } = await first.spawn({ image: image.tag, workspace }, { start: true });
          await frozen;
          await first.processes.unfollow();
          await first.cells.close();
          second = await Kernel.open(options);
          // All of the commit or none of it: the first carries the caller's
          // record of the call before the tool call, the second the tool's records.
          const state = await held(second, pid);
          if (which === "made") {
            assert.deepEqual(
              state,
              moment === "before"
                ? { caller: "running", tools: [], calls: [], waits: 0, stamps: 0, toolRecords: 0 }
                : TOOL_RUNNING,
            );
          } else {
            assert.deepEqual(
              state,
              moment === "before" ? TOOL_RUNNING : {
                caller: "running",
                tools: ["exited"],
                calls: ["done"],
                waits: 0,
                stamps: 1,
                toolRecords: 2,
              },
            );
          }
          await second.recover();
          const end = await second.waitFor(pid, { timeoutMs: 60_000 });
          assert.equal(end.state, "exited", JSON.stringify(end.error));
          assert.deepEqual(end.result, [10, 20]);
          const after = await held(second, pid);
          assert.deepEqual(after.tools, ["exited", "exited"], "one tool process per call");
          assert.deepEqual(after.calls, ["done", "done"]);
          assert.deepEqual([after.stamps, after.toolRecords], [2, 4]);
        } finally {
          await second?.close();
          await Deno.remove(root, { recursive: true }).catch(() => {});
        }
      },
    );
  }
}
