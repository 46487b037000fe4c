/**
 * Answers, signals and new processes given from the CLI reach the host
 * that serves the store: a CLI verb never runs a process itself, and what
 * it changes wakes `libos serve` in another OS process. The last test is
 * the acceptance run: a dozen processes ask a human before writing their
 * marker file, the answers come from `libos approve` / `libos deny`
 * subprocesses while `libos serve --until-idle` runs, and the host is
 * SIGKILLed and restarted in the middle.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { cli } from "./_cli.ts";
import { Kernel } from "../runtime/kernel.ts";
import { END_STATES, type ProcessEvent } from "../runtime/process_table.ts";
import type { HumanRequest } from "../runtime/human_queue.ts";
import { loadImageFile } from "../runtime/image.ts";
import { HOST_PERMISSIONS } from "./_host_permissions.ts";

const CLI = fileURLToPath(new URL("../cli.ts", import.meta.url));
const DENO_RUN = ["run", ...HOST_PERMISSIONS];
/** How long a condition the test waits for may take, on a loaded machine. */
const DEADLINE_MS = 120_000;
const POLL_MS = 50;

/** A program that appends its marker once a human allows it; a denial is its answer. */
const MARKER_SOURCE = `
export default async function main(sys, input) {
  const n = Number(input);
  try {
    await sys.fs.append("out/marker-" + n + ".txt", n + "\\n");
    return { n, wrote: true };
  } catch (error) {
    if (error.code === "EPERM") return { n, wrote: false };
    if (error.code === "EUNCERTAIN") return { n, uncertain: true };
    throw error;
  }
}
`;

/** A scratch directory with a workspace, the marker image and a store path. */
interface Scene {
  root: string;
  kv: string;
  workspace: string;
  image: string;
  /** A `--human scripted:` file with no answers: every request waits for the CLI. */
  noAnswers: string;
}

async function withScene(body: (scene: Scene) => Promise<void>): Promise<void> {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-wakeup-" }));
  const workspace = join(root, "ws");
  await Deno.mkdir(join(workspace, "out"), { recursive: true });
  await Deno.writeTextFile(join(root, "marker.ts"), MARKER_SOURCE);
  const image = join(root, "marker.json");
  await Deno.writeTextFile(
    image,
    JSON.stringify({
      name: "marker",
      version: "1.0.0",
      entry: "./marker.ts",
      tools: [],
      capabilities: ["fs:write:out/**"],
      policy: { "fs:write:out/**": "ask" },
    }),
  );
  const noAnswers = join(root, "no_answers.json");
  await Deno.writeTextFile(noAnswers, JSON.stringify({ answers: [] }));
  try {
    await body({ root, kv: join(root, "store.db"), workspace, image, noAnswers });
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

/** What a `libos` subprocess printed and how it ended. */
interface Output {
  code: number;
  out: string[];
  err: string;
}

/** Runs `libos ARGS --kv STORE` as its own OS process. */
async function libos(scene: Scene, args: string[]): Promise<Output> {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: [...DENO_RUN, CLI, ...args, "--kv", scene.kv],
    cwd: scene.root,
    stdin: "null",
    env: { LIBOS_SERVER: "", LIBOS_KV: "" },
  }).output();
  const out = new TextDecoder().decode(stdout).split("\n").filter(Boolean);
  return { code, out, err: new TextDecoder().decode(stderr) };
}

/** A `libos serve --until-idle` subprocess. */
interface Host {
  child: Deno.ChildProcess;
  status: Promise<Deno.CommandStatus>;
  output(): string;
}

/** Starts `libos serve --until-idle`; `human` is its `--human` (default: a script with no answers). */
function startHost(scene: Scene, human = `scripted:${scene.noAnswers}`): Host {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      ...DENO_RUN,
      CLI,
      "serve",
      "--until-idle",
      "--human",
      human,
      "--warm-cells",
      "0",
      "--kv",
      scene.kv,
    ],
    cwd: scene.root,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { LIBOS_SERVER: "", LIBOS_KV: "" },
  }).spawn();
  let text = "";
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) text += chunk;
  };
  const drained = Promise.all([collect(child.stdout), collect(child.stderr)]);
  const status = Promise.all([child.status, drained]).then(([s]) => s);
  return { child, status, output: () => text };
}

/** Resolves with `check()`'s value once it is not undefined; fails past the deadline. */
async function until<T>(
  what: string,
  check: () => Promise<T | undefined>,
  deadlineMs = DEADLINE_MS,
): Promise<T> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

/** Resolves with the host's exit status, or fails past the deadline. */
async function exitOf(host: Host, deadlineMs = DEADLINE_MS): Promise<Deno.CommandStatus> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`serve did not exit; its output:\n${host.output()}`)),
      deadlineMs,
    );
  });
  try {
    return await Promise.race([host.status, late]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Every OS process as `pid → { ppid, state, cmd }`, as `ps` reads them from
 * /proc (reading /proc directly needs more than the tests' permissions).
 */
async function osProcesses(): Promise<Map<number, { ppid: number; state: string; cmd: string }>> {
  const { stdout } = await new Deno.Command("ps", {
    args: ["-eo", "pid=,ppid=,stat=,args="],
    stdin: "null",
    stderr: "null",
  }).output();
  const out = new Map<number, { ppid: number; state: string; cmd: string }>();
  for (const line of new TextDecoder().decode(stdout).split("\n")) {
    const match = /^\s*(\d+)\s+(\d+)\s+(\S+)\s+(.*)$/.exec(line);
    if (match) {
      out.set(Number(match[1]), { ppid: Number(match[2]), state: match[3], cmd: match[4] });
    }
  }
  return out;
}

/** The descendants of `pid` now alive. */
async function descendants(pid: number): Promise<Set<number>> {
  const all = await osProcesses();
  const found = new Set<number>();
  let grew = true;
  while (grew) {
    grew = false;
    for (const [child, { ppid }] of all) {
      if (!found.has(child) && (ppid === pid || found.has(ppid))) {
        found.add(child);
        grew = true;
      }
    }
  }
  return found;
}

/** Of `pids`, those still running (a zombie waiting to be reaped has stopped). */
async function stillRunning(pids: Iterable<number>): Promise<number[]> {
  const all = await osProcesses();
  return [...pids].filter((pid) => {
    const proc = all.get(pid);
    return proc !== undefined && !proc.state.startsWith("Z");
  });
}

/** Spawns the marker image with input `n` from a kernel in this process; its pid. */
async function spawnMarker(kernel: Kernel, scene: Scene, n: number): Promise<number> {
  const { image: loaded, entrySource } = await loadImageFile(scene.image);
  const image = await kernel.images.register(loaded, { entrySource });
  const proc = await kernel.spawn({ image: image.tag, workspace: scene.workspace, input: n });
  return proc.pid;
}

/** Runs `pid` in a kernel of this process until it waits for a human, then closes that kernel. */
async function parkOnHuman(scene: Scene, n: number): Promise<{ pid: number; id: string }> {
  const kernel = await Kernel.open({ store: scene.kv });
  try {
    const pid = await spawnMarker(kernel, scene, n);
    const blocked = new Promise<void>((resolve) => {
      const off = kernel.processes.subscribe((record) => {
        if (record.pid === pid && record.state === "blocked") {
          off();
          resolve();
        }
      });
    });
    kernel.start(pid);
    await blocked;
    const request = (await kernel.humans.pending()).find((r) => r.pid === pid);
    assert.ok(request, `process ${pid} asks a human`);
    return { pid, id: request.id };
  } finally {
    await kernel.close();
  }
}

/** The transitions of `pid` in the store's log. */
async function eventsOf(kernel: Kernel, pid: number): Promise<ProcessEvent[]> {
  return await Array.fromAsync(kernel.processes.events({ pid }));
}

Deno.test("approve and deny on the CLI change the store only: the process never runs in the verb", async () => {
  await withScene(async (scene) => {
    const first = await parkOnHuman(scene, 1);
    const second = await parkOnHuman(scene, 2);
    const approve = await cli(["approve", first.id, "--kv", scene.kv]);
    assert.equal(approve.code, 0, approve.err.join("\n"));
    const deny = await cli(["deny", second.id, "--kv", scene.kv]);
    assert.equal(deny.code, 0, deny.err.join("\n"));
    const kernel = await Kernel.open({ store: scene.kv, runs: false });
    try {
      for (const { pid } of [first, second]) {
        const events = await eventsOf(kernel, pid);
        const last = events.findLastIndex((e) => e.from === "blocked");
        assert.deepEqual(
          events.slice(last).map((e) => `${e.from} → ${e.to}`),
          ["blocked → runnable"],
          "after the answer the process waits, runnable, for a host",
        );
        assert.equal((await kernel.processes.require(pid)).state, "runnable");
      }
      await assert.rejects(() => kernel.recover(), /runs: false/);
    } finally {
      await kernel.close();
    }
    assert.deepEqual(
      await Array.fromAsync(Deno.readDir(join(scene.workspace, "out"))),
      [],
      "no marker was written by the verbs",
    );
  });
});

Deno.test("an approve from a CLI subprocess wakes the kernel serving the store", async () => {
  await withScene(async (scene) => {
    const { pid, id } = await parkOnHuman(scene, 7);
    const kernel = await Kernel.open({ store: scene.kv });
    const own = new Set<number>();
    kernel.processes.subscribe((_, event, foreign) => {
      if (!foreign) own.add(event.seq);
    });
    try {
      const since = (await kernel.store.kv.get<number>(["meta", "next_event"])).value!;
      await kernel.recover();
      assert.equal((await kernel.processes.require(pid)).state, "blocked");
      const approve = await libos(scene, ["approve", id]);
      assert.equal(approve.code, 0, approve.err);
      assert.deepEqual(approve.out, [`${id}: allow_once`]);
      const end = await kernel.waitFor(pid, { timeoutMs: DEADLINE_MS });
      assert.equal(end.state, "exited");
      assert.deepEqual(end.result, { n: 7, wrote: true });
      const after = (await eventsOf(kernel, pid)).filter((e) => e.seq > since);
      assert.deepEqual(after.map((e) => `${e.from} → ${e.to}`), [
        "blocked → runnable",
        "runnable → running",
        "running → exited",
      ]);
      assert.equal(own.has(after[0].seq), false, "the answer came from the other process");
      assert.equal(own.has(after[1].seq), true, "the serving kernel ran the process");
    } finally {
      await kernel.close();
    }
    assert.equal(await Deno.readTextFile(join(scene.workspace, "out", "marker-7.txt")), "7\n");
  });
});

/** A program that makes syscalls for ever, so it is running whenever it is looked at. */
const BUSY_SOURCE = "export default async (sys) => { for (;;) await sys.time.now(); }";

/** A kernel serving the store, running one busy process; resolves once it runs. */
async function serveBusy(scene: Scene): Promise<{ kernel: Kernel; pid: number }> {
  const kernel = await Kernel.open({ store: scene.kv });
  const image = await kernel.images.register({
    name: "busy",
    version: "1.0.0",
    entry: "./main.ts",
    tools: [],
    capabilities: [],
    policy: {},
    limits: { syscallsPerSecond: 1_000_000 },
  }, { entrySource: BUSY_SOURCE });
  const { pid } = await kernel.spawn({ image: image.tag, workspace: scene.workspace });
  await kernel.recover();
  await until(
    "the busy process to run",
    () => Promise.resolve(kernel.executionOf(pid)?.slot ? true : undefined),
  );
  return { kernel, pid };
}

Deno.test("a kill from the CLI stops the program the serving kernel runs", async () => {
  await withScene(async (scene) => {
    const { kernel, pid } = await serveBusy(scene);
    try {
      const kill = await cli(["kill", String(pid), "--kv", scene.kv]);
      assert.equal(kill.code, 0, kill.err.join("\n"));
      await until(
        "the host to stop the killed program",
        () => Promise.resolve(kernel.executionOf(pid) ? undefined : true),
      );
      assert.equal((await kernel.processes.require(pid)).state, "killed");
    } finally {
      await kernel.close();
    }
  });
});

Deno.test("pause and resume from the CLI stop and restart the program the serving kernel runs", async () => {
  await withScene(async (scene) => {
    const { kernel, pid } = await serveBusy(scene);
    try {
      const pause = await cli(["signal", String(pid), "pause", "--kv", scene.kv]);
      assert.deepEqual(pause.out, [`pid ${pid} paused`]);
      await until(
        "the host to stop the paused program",
        () => Promise.resolve(kernel.executionOf(pid) ? undefined : true),
      );
      assert.equal((await kernel.processes.require(pid)).state, "paused");
      const resume = await cli(["signal", String(pid), "resume", "--kv", scene.kv]);
      assert.deepEqual(resume.out, [`pid ${pid} runnable`]);
      await until(
        "the host to run the resumed program",
        async () => (await kernel.processes.require(pid)).state === "running" ? true : undefined,
      );
    } finally {
      await kernel.close();
    }
  });
});

Deno.test("serve --until-idle exits once a CLI kill ends the last process it waits for", async () => {
  await withScene(async (scene) => {
    const { pid } = await parkOnHuman(scene, 3);
    const host = startHost(scene, "queue");
    try {
      await until(
        "the host to start",
        () => Promise.resolve(host.output().includes("resumed") ? true : undefined),
      );
      const kill = await libos(scene, ["kill", String(pid)]);
      assert.equal(kill.code, 0, kill.err);
      assert.deepEqual(kill.out, [`pid ${pid} killed`]);
      const status = await exitOf(host);
      assert.equal(status.code, 0, host.output());
    } finally {
      try {
        host.child.kill("SIGKILL");
      } catch {
        // Already exited.
      }
      await host.status;
    }
  });
});

Deno.test("answers from the CLI reach serve --until-idle across host crashes, each applied once to its own request", async () => {
  const COUNT = 12;
  const LATE_SPAWNS = 4;
  /** After this many answers, the host is SIGKILLed and a new one started. */
  const KILL_AFTER = new Set([2, 5, 8]);
  await withScene(async (scene) => {
    const inputOf = new Map<number, number>();
    {
      const kernel = await Kernel.open({ store: scene.kv, runs: false });
      for (let n = 1; n <= COUNT - LATE_SPAWNS; n++) {
        inputOf.set(await spawnMarker(kernel, scene, n), n);
      }
      await kernel.close();
    }
    const approves = (n: number) => n % 3 !== 0;
    const hosts: Host[] = [startHost(scene)];
    /** Every OS process a host started, seen while it ran. */
    const children = new Set<number>();
    const noteChildren = async () => {
      const host = hosts.at(-1)!;
      for (const pid of await descendants(host.child.pid)) children.add(pid);
    };
    const answered = new Map<string, { pid: number; approve: boolean }>();
    try {
      // New processes from the CLI while the host runs.
      for (let n = COUNT - LATE_SPAWNS + 1; n <= COUNT; n++) {
        const spawn = await libos(scene, [
          "spawn",
          scene.image,
          "--workspace",
          scene.workspace,
          "--input",
          String(n),
        ]);
        assert.equal(spawn.code, 0, spawn.err);
        inputOf.set(Number(spawn.out[0]), n);
      }
      const killed = new Set<number>();
      await until("every request to be answered", async () => {
        await noteChildren();
        const list = await libos(scene, ["approvals", "--json"]);
        assert.equal(list.code, 0, list.err);
        const pending = list.out.map((line) => JSON.parse(line) as HumanRequest)
          .filter((r) => !answered.has(r.id));
        // Two answers at a time, each its own CLI process.
        for (let i = 0; i < pending.length; i += 2) {
          await Promise.all(
            pending.slice(i, i + 2).map(async (request) => {
              const n = inputOf.get(request.pid)!;
              assert.equal(request.operation?.args.includes(`marker-${n}.txt`), true);
              const verb = approves(n) ? "approve" : "deny";
              const result = await libos(scene, [verb, request.id]);
              assert.equal(result.code, 0, result.err);
              answered.set(request.id, { pid: request.pid, approve: approves(n) });
            }),
          );
          for (const after of KILL_AFTER) {
            if (answered.size >= after && !killed.has(after)) {
              killed.add(after);
              await noteChildren();
              const host = hosts.at(-1)!;
              host.child.kill("SIGKILL");
              await host.status;
              hosts.push(startHost(scene));
            }
          }
        }
        return answered.size === COUNT ? true : undefined;
      });
      assert.equal(killed.size, KILL_AFTER.size, "the host was killed and restarted");
      const last = hosts.at(-1)!;
      let exited = false;
      last.status.finally(() => exited = true);
      const watching = (async () => {
        // The last host's cells, while it runs.
        while (!exited) {
          for (const pid of await descendants(last.child.pid)) children.add(pid);
          await new Promise((resolve) => setTimeout(resolve, POLL_MS));
        }
      })();
      const status = await exitOf(last);
      await watching;
      assert.equal(status.code, 0, last.output());
      assert.match(last.output(), /libos serve: resumed \d+ process\(es\)/);
    } finally {
      for (const host of hosts) {
        try {
          host.child.kill("SIGKILL");
        } catch {
          // Already exited.
        }
        await host.status;
      }
    }

    const kernel = await Kernel.open({ store: scene.kv, runs: false });
    try {
      const processes = await kernel.processes.list();
      assert.equal(processes.length, COUNT);
      for (const proc of processes) {
        const n = inputOf.get(proc.pid)!;
        assert.equal(proc.state, "exited", `pid ${proc.pid}: ${JSON.stringify(proc.error)}`);
        const marker = join(scene.workspace, "out", `marker-${n}.txt`);
        const written = await Deno.readTextFile(marker).catch(() => "");
        if (!approves(n)) {
          assert.deepEqual(proc.result, { n, wrote: false }, `pid ${proc.pid} was denied`);
          assert.equal(written, "", `denied marker ${n} was not written`);
        } else if ((proc.result as { uncertain?: boolean }).uncertain) {
          // The host died between the append and its outcome: at most once.
          assert.ok(written === "" || written === `${n}\n`, `marker ${n}: ${written}`);
        } else {
          assert.deepEqual(proc.result, { n, wrote: true }, `pid ${proc.pid} was approved`);
          assert.equal(written, `${n}\n`, `approved marker ${n} was written exactly once`);
        }
        const events = await eventsOf(kernel, proc.pid);
        assert.ok(
          !events.some((e) => e.reason === "the host shut down"),
          `pid ${proc.pid}: only a host ran it, and no host shut down while it ran`,
        );
      }
      for (const [id, { pid, approve }] of answered) {
        const request = await kernel.humans.get(id);
        assert.equal(request?.pid, pid);
        assert.equal(request?.state, "answered");
        assert.equal(request?.answer?.decision, approve ? "allow_once" : "deny_once");
      }
      assert.deepEqual(await kernel.humans.pending(), []);
      assert.ok(processes.every((p) => END_STATES.has(p.state)));
      assert.equal((await kernel.audit.verify()).ok, true);
    } finally {
      await kernel.close();
    }

    // Nothing of the hosts is left running: their cells, and any process on this store.
    const leftovers = async () => [
      ...await stillRunning(children),
      ...[...(await osProcesses())].filter(([pid, p]) =>
        !p.state.startsWith("Z") && p.cmd.includes(scene.kv) && pid !== Deno.pid
      ).map(([pid]) => pid),
    ];
    await until(
      "the hosts' cells and every process on the store to end",
      async () => (await leftovers()).length === 0 ? true : undefined,
      20_000,
    ).catch(async (error) => {
      throw new Error(`${error.message}; still running: ${JSON.stringify(await leftovers())}`);
    });
    assert.ok(children.size > 0, "the hosts' cells were seen");
  });
});
