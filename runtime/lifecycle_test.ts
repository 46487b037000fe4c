import assert from "node:assert/strict";
import { PARKED } from "../broker/broker.ts";
import { formatCapability } from "../broker/capability.ts";
import { CapabilityStore } from "../broker/capability_store.ts";
import { type JournalRecord, loadJournal, putRecord } from "../broker/journal.ts";
import { DEFAULT_LIMITS } from "./execution.ts";
import type { FsProvider } from "./fs_provider.ts";
import { type AgentImage, ImageRegistry, type RegisteredImage } from "./image.ts";
import type { EarlyStart } from "./cell_pool.ts";
import {
  execImage,
  forkProcess,
  type LifecycleKernel,
  limitsOf,
  MAX_INPUT_CHARS,
  spawnChild,
  spawnProcess,
} from "./lifecycle.ts";
import type { Admission } from "./scheduler.ts";
import { ownModelOf } from "./model_providers.ts";
import { type ProcessRecord, ProcessTable } from "./process_table.ts";

const NOW = 1_000_000;

/** A kernel of real stores over one in-memory KV, with a recording scheduler, fs and tools. */
class TestKernel implements LifecycleKernel {
  readonly store: { kv: Deno.Kv };
  readonly processes: ProcessTable;
  readonly images: ImageRegistry;
  readonly caps: CapabilityStore;
  readonly limits = { ...DEFAULT_LIMITS, cpuMs: 5_000 };
  readonly now = () => NOW;
  readonly started: number[] = [];
  readonly copied: string[] = [];
  /** No call here waits for its child: a child made for a waiting parent is a test failure. */
  readonly waits: LifecycleKernel["waits"] = {
    recordsBefore: () => Promise.reject(new Error("No parent waits for its child here")),
    blocking: () => {
      throw new Error("No parent waits for its child here");
    },
  };
  /** Runs while a working directory is resolved: the moment between deriving and committing. */
  onResolve: () => Promise<void> = () => Promise.resolve();
  readonly fs: Pick<FsProvider, "resolve" | "stat">;
  readonly objects = {
    copyNamespace: (from: string, to: string) => {
      this.copied.push(`objects ${from} → ${to}`);
      return Promise.resolve(0);
    },
  };
  readonly tools = {
    copy: (from: number, to: number) => {
      this.copied.push(`tools ${from} → ${to}`);
      return Promise.resolve();
    },
  };

  constructor(kv: Deno.Kv) {
    this.store = { kv };
    this.processes = new ProcessTable(kv);
    this.images = new ImageRegistry(kv);
    this.caps = new CapabilityStore(kv);
    this.fs = {
      resolve: async (base: string, path: string) => {
        await this.onResolve();
        return `${base}/${path}`;
      },
      stat: () => Promise.resolve({ kind: "dir" } as Awaited<ReturnType<FsProvider["stat"]>>),
    };
  }

  async imageOf(proc: ProcessRecord) {
    return (await this.images.get(proc.digest))!;
  }

  ownModelOf = ownModelOf;

  start(pid: number): void {
    this.started.push(pid);
  }

  /** When true, a place to run is free: a child is made `running` and launched. */
  admitting = false;
  readonly launched: ProcessRecord[] = [];
  cancelled = 0;

  admit(): Admission | undefined {
    if (!this.admitting) return undefined;
    return {
      launch: (record, options) => {
        this.launched.push(record);
        if (options?.early) this.handedOver.push(options.early);
      },
      cancel: () => this.cancelled++,
    };
  }

  /** Programs started while their process was made, as told; those abandoned; those launched with theirs. */
  readonly earlyStarts: Parameters<LifecycleKernel["startEarly"]>[1][] = [];
  abandoned = 0;
  readonly handedOver: EarlyStart[] = [];

  startEarly(_image: RegisteredImage, made: Parameters<LifecycleKernel["startEarly"]>[1]) {
    this.earlyStarts.push(made);
    return {
      attach: () => Promise.reject(new Error("No program runs here")),
      abandon: () => void this.abandoned++,
    };
  }

  /** What `pid` holds, in text form, with where each came from. */
  async held(pid: number): Promise<string[]> {
    return (await this.caps.list(pid, NOW)).map((c) => `${formatCapability(c)} by ${c.grantedBy}`)
      .sort();
  }
}

function image(name: string, extra: Partial<AgentImage> = {}): AgentImage {
  return {
    name,
    version: "1.0.0",
    entry: "libos:agent",
    tools: [],
    capabilities: [],
    policy: {},
    ...extra,
  };
}

async function withKernel(fn: (kernel: TestKernel, workspace: string) => Promise<void>) {
  const kv = await Deno.openKv(":memory:");
  const workspace = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-lifecycle-" }));
  try {
    await fn(new TestKernel(kv), workspace);
  } finally {
    kv.close();
    await Deno.remove(workspace, { recursive: true });
  }
}

Deno.test("an operator's spawn commits the process with its grants, runnable but not started", async () => {
  await withKernel(async (kernel, workspace) => {
    await kernel.images.register(image("demo", {
      capabilities: ["fs:read:**", "exec:run:git"],
      policy: { "exec:run:*": "ask" },
      budget: { toolCalls: 10, tokens: 100 },
      model: { provider: "openai", name: "gpt-4o-mini" },
    }));
    const proc = await spawnProcess(kernel, {
      image: "demo@1.0.0",
      workspace,
      capabilities: ["fs:read:src/**"],
      budget: { tokens: 50 },
    });
    assert.equal(proc.state, "runnable");
    assert.deepEqual(proc.budget, { toolCalls: 10, tokens: 50 });
    assert.equal(proc.ownModel, "openai/gpt-4o-mini");
    assert.deepEqual(proc.policy.map((r) => [r.pattern, r.decision]), [["exec:run:*", "ask"]]);
    assert.deepEqual(await kernel.held(proc.pid), [
      `fs:read:${workspace}/src/** by operator`,
      `obj:read,write,delete:proc/${proc.pid} by kernel`,
    ]);
    assert.deepEqual(kernel.started, []);
  });
});

Deno.test("an operator's spawn that starts is made running when there is room, else queued", async () => {
  await withKernel(async (kernel, workspace) => {
    await kernel.images.register(image("demo"));
    const queued = await spawnProcess(kernel, { image: "demo@1.0.0", workspace }, { start: true });
    assert.equal(queued.state, "runnable");
    assert.deepEqual(kernel.started, [queued.pid]);
    kernel.admitting = true;
    const running = await spawnProcess(kernel, { image: "demo@1.0.0", workspace }, {
      start: true,
    });
    assert.equal(running.state, "running");
    assert.equal((await kernel.processes.require(running.pid)).startedAt, NOW);
    assert.deepEqual(kernel.launched.map((r) => r.pid), [running.pid]);
    assert.deepEqual(kernel.started, [queued.pid]);
    // Its program started while it was made, as its record says it runs, and its run takes it over.
    const { input, seed, createdAt, startedAt, principal } = running;
    assert.deepEqual(kernel.earlyStarts, [{ input, seed, createdAt, startedAt, principal }]);
    assert.equal(kernel.handedOver.length, 1);
    assert.equal(kernel.abandoned, 0);
  });
});

Deno.test("an operator's spawn that is not made ends the program it started early", async () => {
  await withKernel(async (kernel, workspace) => {
    await kernel.images.register(image("demo"));
    kernel.admitting = true;
    kernel.processes.create = () => Promise.reject(new Error("planned: the commit failed"));
    await assert.rejects(
      spawnProcess(kernel, { image: "demo@1.0.0", workspace }, { start: true }),
      /planned/,
    );
    assert.equal(kernel.earlyStarts.length, 1);
    assert.equal(kernel.abandoned, 1, "the early program is ended");
    assert.equal(kernel.cancelled, 1, "the place to run is given back");
    // One refused (no such workspace) is refused before its program would start.
    await assert.rejects(
      spawnProcess(kernel, { image: "demo@1.0.0", workspace: "/nonexistent/ws" }, { start: true }),
      { code: "ENOENT" },
    );
    assert.equal(kernel.earlyStarts.length, 1, "no program started for it");
    assert.equal(kernel.cancelled, 1);
    assert.deepEqual(kernel.launched, []);
  });
});

Deno.test("an operator's spawn is refused for a large input, a missing image or workspace", async () => {
  await withKernel(async (kernel, workspace) => {
    await kernel.images.register(image("demo"));
    await assert.rejects(
      spawnProcess(kernel, { image: "demo@1.0.0", workspace, input: "x".repeat(MAX_INPUT_CHARS) }),
      { code: "EINVAL", message: `Cannot spawn "demo@1.0.0": its input is over 32768 bytes` },
    );
    await assert.rejects(spawnProcess(kernel, { image: "nope@1.0.0", workspace }), {
      code: "ENOENT",
      message: 'Cannot spawn "nope@1.0.0": no such image is registered',
    });
    await assert.rejects(
      spawnProcess(kernel, { image: "demo@1.0.0", workspace: "/nonexistent/ws" }),
      {
        code: "ENOENT",
        message: 'Cannot use workspace "/nonexistent/ws": it does not exist',
      },
    );
    assert.deepEqual(await kernel.processes.list(), []);
  });
});

Deno.test("a child gets its grants from its parent, within its parent's budget and limits", async () => {
  await withKernel(async (kernel, workspace) => {
    await kernel.images.register(image("parent", {
      capabilities: ["fs:read,write:**", "proc:spawn:*"],
      budget: { children: 3, tokens: 100 },
      limits: { cpuMs: 2_000 },
    }));
    await kernel.images.register(image("child", {
      capabilities: ["fs:read:**", "net:fetch:*"],
      budget: { tokens: 500 },
    }));
    const parent = await spawnProcess(kernel, { image: "parent@1.0.0", workspace });
    const child = await spawnChild(kernel, parent.pid, { image: "child@1.0.0", input: 1 });
    // The parent covers fs:read but holds no net capability to derive one from.
    assert.deepEqual(await kernel.held(child.pid), [
      `fs:read:${workspace}/** by pid:${parent.pid}`,
      `obj:read,write,delete:proc/${child.pid} by kernel`,
    ]);
    const fsOf = async (pid: number) =>
      (await kernel.caps.list(pid, NOW)).find((c) => c.resource === "fs")!;
    const [derived, parentRead] = [await fsOf(child.pid), await fsOf(parent.pid)];
    assert.equal(derived.parent, parentRead.id);
    assert.deepEqual(child.budget, { tokens: 100, children: 2 });
    assert.deepEqual(child.limits, { ...kernel.limits, cpuMs: 2_000 });
    assert.equal((await kernel.processes.require(parent.pid)).usage.children, 1);
    assert.deepEqual(kernel.started, [child.pid]);
  });
});

Deno.test("a child that cannot be made gives its place in the children budget back", async () => {
  await withKernel(async (kernel, workspace) => {
    await kernel.images.register(image("parent", {
      capabilities: ["fs:read:**"],
      budget: { children: 1 },
    }));
    await kernel.images.register(image("child", { capabilities: ["fs:read,write:**"] }));
    const parent = await spawnProcess(kernel, { image: "parent@1.0.0", workspace });
    await assert.rejects(
      spawnChild(kernel, parent.pid, { image: "child@1.0.0", capabilities: ["fs:write:a"] }),
      {
        code: "EPERM",
        message:
          'Cannot grant "fs:write:a" to a child: the parent holds no capability that covers it',
      },
    );
    assert.equal((await kernel.processes.require(parent.pid)).usage.children, 0);
    const child = await spawnChild(kernel, parent.pid, { image: "child@1.0.0" });
    assert.equal(child.ppid, parent.pid);
    await assert.rejects(spawnChild(kernel, parent.pid, { image: "child@1.0.0" }), {
      code: "EBUDGET",
    });
  });
});

Deno.test("a child with a place to run is made running in its create commit, claimed by no later commit", async () => {
  await withKernel(async (kernel, workspace) => {
    await kernel.images.register(image("parent", { budget: { children: 1 } }));
    await kernel.images.register(image("child"));
    const parent = await spawnProcess(kernel, { image: "parent@1.0.0", workspace });
    kernel.admitting = true;
    const child = await spawnChild(kernel, parent.pid, { image: "child@1.0.0" });
    assert.equal(child.state, "running");
    assert.equal(child.startedAt, NOW);
    assert.deepEqual(kernel.launched.map((r) => r.pid), [child.pid]);
    assert.deepEqual(kernel.started, [], "not queued to be claimed");
    const stored = await kernel.processes.require(child.pid);
    assert.equal(stored.state, "running");
    const transitions: string[] = [];
    for await (const event of kernel.processes.events({ pid: child.pid })) {
      if (event.kind === "transition") transitions.push(`${event.from}→${event.to}`);
    }
    assert.deepEqual(transitions, ["null→created", "created→runnable", "runnable→running"]);
    // A child that cannot be made gives its place back, and nothing is charged for it.
    await assert.rejects(spawnChild(kernel, parent.pid, { image: "child@1.0.0" }), {
      code: "EBUDGET",
    });
    assert.equal(kernel.cancelled, 1);
    assert.equal(kernel.launched.length, 1);
    assert.equal((await kernel.processes.require(parent.pid)).usage.children, 1);
  });
});

Deno.test("a child is not made from a capability revoked while it is being made", async () => {
  await withKernel(async (kernel, workspace) => {
    await kernel.images.register(image("demo", { capabilities: ["fs:read:**"] }));
    const parent = await spawnProcess(kernel, { image: "demo@1.0.0", workspace });
    const read = (await kernel.caps.list(parent.pid, NOW)).find((c) => c.resource === "fs")!;
    kernel.onResolve = async () => {
      await kernel.caps.revoke(read.id);
    };
    await assert.rejects(spawnChild(kernel, parent.pid, { image: "demo@1.0.0", cwd: "src" }), {
      code: "EPERM",
      message: "Cannot spawn: a capability it would derive from was revoked",
    });
    assert.deepEqual((await kernel.processes.list()).map((p) => p.pid), [parent.pid]);
    assert.equal((await kernel.processes.require(parent.pid)).usage.children, 0);
  });
});

/**
 * Runs `change` once, right after the kernel first reads capability
 * entries to check them, and fails any commit past the 50th (a create that
 * retries forever on a check it read once would never end otherwise).
 */
function betweenReadAndCommit(kernel: TestKernel, change: () => Promise<void>): void {
  const kv = kernel.store.kv;
  const getMany = kv.getMany.bind(kv);
  let changed = false;
  kv.getMany = (async (keys: Deno.KvKey[]) => {
    const entries = await getMany(keys);
    if (!changed && keys[0]?.[0] === "cap") {
      changed = true;
      await change();
    }
    return entries;
  }) as typeof kv.getMany;
  const atomic = kv.atomic.bind(kv);
  let commits = 0;
  kv.atomic = () => {
    if (++commits > 50) throw new Error("The create kept retrying a stale check");
    return atomic();
  };
}

Deno.test("a child whose source capability changes between its check read and its commit is decided again", async () => {
  await withKernel(async (kernel, workspace) => {
    await kernel.images.register(image("demo", { capabilities: ["fs:read:**"] }));
    const parent = await spawnProcess(kernel, { image: "demo@1.0.0", workspace });
    const read = (await kernel.caps.list(parent.pid, NOW)).find((c) => c.resource === "fs")!;
    // Rewritten as it is: a new versionstamp, the same capability.
    betweenReadAndCommit(kernel, async () => {
      const entry = await kernel.store.kv.get(["cap", read.id]);
      await kernel.store.kv.set(["cap", read.id], entry.value);
    });
    const child = await spawnChild(kernel, parent.pid, { image: "demo@1.0.0" });
    const grants = await kernel.caps.list(child.pid, NOW);
    assert.ok(grants.some((c) => c.resource === "fs" && c.parent === read.id));
  });
});

Deno.test("a child whose source capability is revoked between its check read and its commit gets nothing of it", async () => {
  await withKernel(async (kernel, workspace) => {
    await kernel.images.register(image("demo", { capabilities: ["fs:read:**"] }));
    const parent = await spawnProcess(kernel, { image: "demo@1.0.0", workspace });
    const read = (await kernel.caps.list(parent.pid, NOW)).find((c) => c.resource === "fs")!;
    betweenReadAndCommit(kernel, () => kernel.caps.revoke(read.id).then(() => {}));
    // Decided again on what the parent holds now: the image's fs ceiling finds nothing to derive from.
    const child = await spawnChild(kernel, parent.pid, { image: "demo@1.0.0" });
    const grants = await kernel.caps.list(child.pid, NOW);
    assert.ok(!grants.some((c) => c.resource === "fs" || c.parent === read.id));
    assert.equal((await kernel.processes.require(parent.pid)).usage.children, 1, "charged once");
  });
});

Deno.test("a fork copies its parent's grants, objects, tools and journal up to the fork", async () => {
  await withKernel(async (kernel, workspace) => {
    await kernel.images.register(image("demo", {
      capabilities: ["fs:read:**", "exec:run:git;uses=1"],
      budget: { toolCalls: 10 },
    }));
    const parent = await spawnProcess(kernel, { image: "demo@1.0.0", workspace });
    await kernel.processes.update(parent.pid, () => ({
      usage: { toolCalls: 4, tokens: 0, children: 0 },
    }));
    const op = kernel.store.kv.atomic();
    for (const seq of [1, 2, 3]) {
      putRecord(op, {
        pid: parent.pid,
        seq,
        name: "time.now",
        argsDigest: `a${seq}`,
        effect: "none",
        phase: "done",
        at: NOW,
        ok: true,
        value: seq,
      });
    }
    await op.commit();
    const ctx = { pid: parent.pid, seq: 3, argsDigest: "fork", image: "demo@1.0.0" };
    const child = await forkProcess(kernel, ctx as Parameters<typeof forkProcess>[1], {});
    assert.deepEqual([child.state, child.forkedFrom, child.seed], [
      "runnable",
      parent.pid,
      parent.seed,
    ]);
    assert.deepEqual(child.budget, { toolCalls: 6 });
    // One-shot grants are not copied; the private namespace is the child's own.
    assert.deepEqual(await kernel.held(child.pid), [
      `fs:read:${workspace}/** by pid:${parent.pid}`,
      `obj:read,write,delete:proc/${child.pid} by kernel`,
    ]);
    assert.deepEqual(kernel.copied, [
      `objects proc/${parent.pid} → proc/${child.pid}`,
      `tools ${parent.pid} → ${child.pid}`,
    ]);
    const journal = [...(await loadJournal(kernel.store.kv, child.pid)).values()];
    assert.deepEqual(
      journal.map((r: JournalRecord) => [r.seq, r.name, r.value]),
      [[1, "time.now", 1], [2, "time.now", 2], [3, "proc.fork", { pid: 0 }]],
    );
    assert.deepEqual(kernel.started, [child.pid]);
  });
});

Deno.test("an exec revokes what the new image's ceiling lacks and replays after the call", async () => {
  await withKernel(async (kernel, workspace) => {
    await kernel.images.register(image("wide", {
      capabilities: ["fs:read,write:**"],
      budget: { toolCalls: 10 },
    }));
    await kernel.images.register(image("narrow", {
      capabilities: ["fs:read:**"],
      policy: { "fs:read:secret/**": "deny" },
      budget: { toolCalls: 3 },
    }));
    const proc = await spawnProcess(kernel, {
      image: "wide@1.0.0",
      workspace,
      capabilities: ["fs:read:**", "fs:write:**"],
    });
    const ctx = { pid: proc.pid, seq: 7, argsDigest: "exec", image: "wide@1.0.0" };
    const parked = await execImage(kernel, ctx as Parameters<typeof execImage>[1], {
      image: "narrow@1.0.0",
    });
    assert.equal(parked, PARKED);
    assert.deepEqual(await kernel.held(proc.pid), [
      `fs:read:${workspace}/** by operator`,
      `obj:read,write,delete:proc/${proc.pid} by kernel`,
    ]);
    const after = await kernel.processes.require(proc.pid);
    assert.deepEqual(
      [after.state, after.image, after.replayFrom, after.budget],
      ["runnable", "narrow@1.0.0", 8, { toolCalls: 3 }],
    );
    assert.deepEqual(after.policy.map((r) => [r.pattern, r.decision]), [[
      "fs:read:secret/**",
      "deny",
    ]]);
    const record = (await kernel.store.kv.get<JournalRecord>(["journal", proc.pid, 7])).value;
    assert.deepEqual([record?.name, record?.phase, record?.ok], ["proc.exec", "done", true]);
    assert.deepEqual(kernel.started, [proc.pid]);
  });
});

Deno.test("limitsOf puts an image's limits over the kernel's, never above the record's ceiling", () => {
  const base = { ...DEFAULT_LIMITS, cpuMs: 10_000, memoryMb: 256 };
  const registered = { image: image("demo", { limits: { cpuMs: 20_000, memoryMb: 128 } }) };
  const limits = limitsOf(base, { limits: { ...base, cpuMs: 15_000 } }, registered as never);
  assert.deepEqual([limits.cpuMs, limits.memoryMb], [15_000, 128]);
  assert.equal(limitsOf(base, {}, registered as never).cpuMs, 20_000);
});
