import { ProgramEntries } from "./program_entries.ts";
import assert from "node:assert/strict";
import { parseCapability } from "../broker/capability.ts";
import { CapabilityStore } from "../broker/capability_store.ts";
import type { SyscallError } from "../broker/errors.ts";
import { ImageRegistry } from "./image.ts";
import { type JitTool, type JitToolKernel, ToolTables } from "./jit_tools.ts";
import { type ProcessRecord, ProcessTable } from "./process_table.ts";
import { newProcess, withMemoryKv } from "./_fixtures.ts";

type SpawnOptions = Parameters<JitToolKernel["spawnChild"]>[1];

/**
 * What the JIT tool tables see of a kernel: a real process table,
 * capability store and image registry over the store, a fixed clock, and
 * child spawns recorded instead of run.
 */
class ToolHost implements JitToolKernel {
  readonly store: { kv: Deno.Kv };
  readonly processes: ProcessTable;
  readonly caps: CapabilityStore;
  readonly images: ImageRegistry;
  readonly now = (): number => 10_000;
  readonly entries: ProgramEntries = new ProgramEntries();
  /** Every child spawned, with the options it was given. */
  readonly spawned: { ppid: number; options: SpawnOptions }[] = [];

  constructor(kv: Deno.Kv) {
    this.store = { kv };
    this.processes = new ProcessTable(kv);
    this.caps = new CapabilityStore(kv);
    this.images = new ImageRegistry(kv);
  }

  async spawnChild(ppid: number, options: SpawnOptions): Promise<ProcessRecord> {
    this.spawned.push({ ppid, options });
    return await this.processes.create({
      ppid,
      image: options.image,
      digest: "d",
      cwd: "/ws",
      workspace: "/ws",
      policy: [],
      onParentExit: options.onParentExit,
      budget: {},
      tool: options.tool,
    });
  }

  /** A process whose workspace is `/ws`; a JIT tool's own when `tool` is given. */
  async caller(tool?: ProcessRecord["tool"]): Promise<ProcessRecord> {
    return await this.processes.create(newProcess({ tool }));
  }
}

async function withTools(
  body: (tools: ToolTables, host: ToolHost) => Promise<void>,
): Promise<void> {
  await withMemoryKv((kv) => {
    const host = new ToolHost(kv);
    return body(new ToolTables(host), host);
  });
}

/** Puts `tool` in `pid`'s table as a registration that passed its checks leaves it. */
async function registered(host: ToolHost, pid: number, manifest: string[]): Promise<JitTool> {
  const tool: JitTool = {
    name: "summarize",
    description: "Summarizes files",
    input: {
      type: "object",
      properties: { path: { type: "string" } },
      required: ["path"],
      additionalProperties: false,
    },
    manifest: { capabilities: manifest },
    digest: "a".repeat(64),
    image: `tool.summarize@${"a".repeat(16)}`,
    registeredAt: 1,
  };
  await host.store.kv.set(["tool", pid, tool.name], tool);
  return tool;
}

Deno.test("a tool call is a child given only what both its manifest and its caller allow", async () => {
  await withTools(async (tools, host) => {
    const caller = await host.caller();
    const grant = (text: string, options: { expiresAt?: number } = {}) =>
      host.caps.grant(caller.pid, parseCapability(text), {
        grantedBy: "operator",
        now: host.now(),
        ...options,
      });
    await grant("fs:read,write:/ws/**");
    await grant("net:fetch:https://api.example/**;uses=1");
    await grant("obj:read:/shared/**", { expiresAt: 99_000 });
    const tool = await registered(host, caller.pid, [
      "fs:read:src/**",
      "fs:delete:src/**",
      "net:fetch:https://api.example/**",
      "obj:read:/shared/**",
      "proc:spawn:*",
    ]);

    const child = await tools.start(caller, "summarize", { path: "src/a.ts" });
    assert.deepEqual(host.spawned, [{
      ppid: caller.pid,
      options: {
        image: tool.image,
        input: { path: "src/a.ts" },
        capabilities: ["fs:read:/ws/src/**"],
        onParentExit: "kill",
        tool: { name: "summarize", digest: tool.digest },
      },
    }]);
    assert.equal(child.ppid, caller.pid);
    assert.deepEqual(child.tool, { name: "summarize", digest: tool.digest });
  });
});

Deno.test("a tool call with arguments its schema refuses, or of an unknown tool, starts nothing", async () => {
  await withTools(async (tools, host) => {
    const caller = await host.caller();
    await registered(host, caller.pid, []);
    await assert.rejects(
      tools.start(caller, "summarize", { path: 3 }),
      (error: SyscallError) =>
        error.code === "EINVAL" && error.message.startsWith('Cannot call tool "summarize": '),
    );
    await assert.rejects(
      tools.start(caller, "summarize", { path: "a", more: true }),
      (error: SyscallError) => error.code === "EINVAL",
    );
    await assert.rejects(
      tools.start(caller, "translate", {}),
      (error: SyscallError) =>
        error.code === "ENOENT" &&
        error.message === 'Cannot call tool "translate": the process has no such JIT tool',
    );
    const other = await host.caller();
    await assert.rejects(
      tools.start(other, "summarize", { path: "a" }),
      (error: SyscallError) => error.code === "ENOENT",
    );
    assert.deepEqual(host.spawned, []);
  });
});

Deno.test("registration is refused to a JIT tool, to a bad name and to a built-in's name, and stores nothing", async () => {
  await withTools(async (tools, host) => {
    const source = "export function run() { return 1; }";
    const tool = { description: "t", input: { type: "object" }, manifest: { capabilities: [] } };
    const jit = await host.caller({ name: "helper", digest: "b".repeat(64) });
    await assert.rejects(
      tools.register(jit.pid, { ...tool, name: "again", source }),
      (error: SyscallError) =>
        error.code === "EPERM" &&
        error.message === 'Cannot register tool "again": a JIT tool cannot register tools',
    );
    const caller = await host.caller();
    await assert.rejects(
      tools.register(caller.pid, { ...tool, name: "Bad-Name", source }),
      (error: SyscallError) => error.code === "EINVAL",
    );
    await assert.rejects(
      tools.register(caller.pid, { ...tool, name: "read_file", source }),
      (error: SyscallError) =>
        error.code === "EEXIST" &&
        error.message === 'Cannot register tool "read_file": it would shadow a built-in tool',
    );
    assert.deepEqual(await tools.list(jit.pid), []);
    assert.deepEqual(await tools.list(caller.pid), []);
  });
});

Deno.test("a fork's copy of the tool table is its own", async () => {
  await withTools(async (tools, host) => {
    const parent = await host.caller();
    const child = await host.caller();
    const tool = await registered(host, parent.pid, []);
    await tools.copy(parent.pid, child.pid);
    assert.deepEqual(await tools.list(child.pid), [tool]);
    await host.store.kv.delete(["tool", parent.pid, tool.name]);
    assert.deepEqual(await tools.get(child.pid, tool.name), tool);
    assert.equal(await tools.get(parent.pid, tool.name), undefined);
  });
});
