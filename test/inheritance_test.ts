/**
 * What a process made from another may have (SPEC sections 4 and 5): a
 * spawned, exec'd or tool process keeps every policy rule its spawner runs
 * under, and a new image (or the spawner) can only add stricter ones; its
 * model is its spawner's unless the spawner may call the other one; its
 * limits and budgets are at most its spawner's. Each attack registers or
 * picks an image that asks for more, and each test checks the effect did
 * not happen.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { parsePolicyAssignment } from "../broker/policy.ts";
import type { AgentImage } from "../runtime/image.ts";
import {
  type ModelProvider,
  type ModelReply,
  type ModelRequest,
  ScriptedModel,
  type ScriptTurn,
} from "../runtime/model.ts";
import type { Harness } from "./_harness.ts";
import { type Attempt, failed, program, succeeded, withKernel } from "./_programs.ts";

const CANARY = "CANARY-" + crypto.randomUUID();

/** An image a process registers for itself: it allows every write, the secret by name. */
const LOOSE: Partial<AgentImage> & { name: string } = {
  name: "loose",
  version: "1.0.0",
  entry: "libos:agent",
  tools: ["write_file", "exit"],
  capabilities: ["fs:write:**"],
  policy: { "fs:write:**": "allow", "fs:write:secret.txt": "allow" },
};

const WRITE_SECRET: ScriptTurn[] = [
  { tool_calls: [{ name: "write_file", arguments: { path: "secret.txt", content: "pwned" } }] },
  { content: "done", exit: true },
];

/** A scripted model that also records the model every request named. */
class RecordingModel implements ModelProvider {
  readonly name = "scripted";
  readonly asked: string[] = [];
  #inner: ScriptedModel;

  constructor(images: Record<string, ScriptTurn[]>) {
    this.#inner = new ScriptedModel({
      turns: [{ content: "done", exit: true }],
      images: Object.fromEntries(
        Object.entries(images).map(([tag, turns]) => [tag, { turns }]),
      ),
    });
  }

  complete(request: ModelRequest): Promise<ModelReply> {
    this.asked.push(request.model);
    return this.#inner.complete(request);
  }
}

async function secretOf(h: Harness): Promise<string> {
  return await Deno.readTextFile(join(h.workspace, "secret.txt"));
}

/** The messages of every tool result in a process's transcript. */
async function toolResults(h: Harness, pid: number): Promise<string[]> {
  return (await h.kernel.transcript(pid)).filter((m) => m.role === "tool").map((m) => m.content);
}

Deno.test("a child of an image its parent registered cannot write what the operator denied", async () => {
  const model = new RecordingModel({ "loose@1.0.0": WRITE_SECRET });
  await withKernel(async (h) => {
    await Deno.writeTextFile(join(h.workspace, "secret.txt"), CANARY);
    const end = await h.run(
      program(`
        const own = await attempt(() => sys.fs.write("secret.txt", "parent"));
        await sys.image.register(input.image);
        const { pid } = await sys.proc.spawn({ image: "loose@1.0.0", input: "write it" });
        return { own, pid, child: await sys.proc.wait(pid) };
      `),
      {
        input: { image: LOOSE },
        image: { capabilities: ["fs:write:**", "image:register:*", "proc:spawn:*"] },
        policy: [parsePolicyAssignment("fs:write:**=deny", "operator")],
      },
    );
    assert.equal(end.state, "exited", end.error?.message);
    const result = end.result as { own: Attempt; pid: number; child: { state: string } };
    failed(result.own, "EPERM", /denied by policy "fs:write:\*\*"/);
    assert.equal(result.child.state, "exited");
    assert.equal(await secretOf(h), CANARY);
    const [write] = await toolResults(h, result.pid);
    assert.match(write, /EPERM/);
    assert.match(write, /denied by policy \\"fs:write:\*\*\\"/);
    // The child runs under the operator's rule beneath its own image's.
    const child = await h.kernel.processes.require(result.pid);
    assert.ok(child.policy.some((r) => r.source === "operator" && r.pattern === "fs:write:**"));
  }, { model });
});

Deno.test("exec into an image the process registered keeps the operator's deny", async () => {
  const model = new RecordingModel({ "loose@1.0.0": WRITE_SECRET });
  await withKernel(async (h) => {
    await Deno.writeTextFile(join(h.workspace, "secret.txt"), CANARY);
    const end = await h.run(
      program(`
        await sys.image.register(input.image);
        await sys.proc.exec({ image: "loose@1.0.0", input: "write it" });
      `),
      {
        input: { image: LOOSE },
        image: { capabilities: ["fs:write:**", "image:register:*", "proc:exec:*"] },
        policy: [parsePolicyAssignment("fs:write:**=deny", "operator")],
      },
    );
    assert.equal(end.state, "exited", end.error?.message);
    assert.equal(end.image, "loose@1.0.0");
    assert.equal(await secretOf(h), CANARY);
    const [write] = await toolResults(h, end.pid);
    assert.match(write, /denied by policy \\"fs:write:\*\*\\"/);
  }, { model });
});

Deno.test("a child image's rule can tighten but a spawner's deny stays, three levels down", async () => {
  const model = new RecordingModel({ "loose@1.0.0": WRITE_SECRET });
  await withKernel(async (h) => {
    await Deno.writeTextFile(join(h.workspace, "secret.txt"), CANARY);
    await Deno.writeTextFile(join(h.workspace, "open.txt"), "open");
    // The middle image denies nothing itself and allows everything it may.
    const middle = await h.program(
      "middle",
      program(`
        const { pid } = await sys.proc.spawn({ image: "loose@1.0.0", input: "write it" });
        await sys.proc.wait(pid);
        return { pid, open: await attempt(() => sys.fs.write("open.txt", "middle")) };
      `),
      {
        capabilities: ["fs:write:**", "proc:spawn:*"],
        policy: { "fs:write:**": "allow", "proc:spawn:*": "allow" },
      },
    );
    const end = await h.run(
      program(`
        await sys.image.register(input.image);
        const { pid } = await sys.proc.spawn({
          image: input.middle, policy: { "fs:write:open.txt": "deny" } });
        return (await sys.proc.wait(pid)).result;
      `),
      {
        input: { image: LOOSE, middle },
        image: {
          capabilities: ["fs:write:**", "image:register:*", "proc:spawn:*"],
          policy: { "fs:write:secret.txt": "deny" },
        },
      },
    );
    assert.equal(end.state, "exited", end.error?.message);
    const result = end.result as { pid: number; open: Attempt };
    // The spawner's own rule binds the middle process and its child.
    failed(result.open, "EPERM", /denied by policy "fs:write:open\.txt"/);
    assert.equal(await Deno.readTextFile(join(h.workspace, "open.txt")), "open");
    assert.equal(await secretOf(h), CANARY);
    assert.match((await toolResults(h, result.pid))[0], /fs:write:secret\.txt/);
  }, { model });
});

Deno.test("a child image cannot name a model its parent was refused", async () => {
  const model = new RecordingModel({ "pricey@1.0.0": [{ content: "expensive", exit: true }] });
  const pricey = {
    name: "pricey",
    version: "1.0.0",
    entry: "libos:agent",
    model: { provider: "openai", name: "gpt-4o" },
    tools: ["exit"],
    capabilities: [],
    policy: {},
  };
  await withKernel(async (h) => {
    const source = program(`
      const messages = [{ role: "user", content: "hi" }];
      const direct = await attempt(() => sys.model.complete({ messages, model: "openai/gpt-4o" }));
      await sys.image.register(input.image);
      const spawn = await attempt(() => sys.proc.spawn({ image: "pricey@1.0.0" }));
      const child = spawn.ok ? await sys.proc.wait(spawn.value.pid) : null;
      // An exec that works replaces this program: only the refused one returns here.
      const exec = input.exec ? await attempt(() => sys.proc.exec({ image: "pricey@1.0.0" })) : null;
      return { direct, spawn, child, exec };
    `);
    const image = {
      model: { provider: "openai", name: "gpt-4o-mini" },
      capabilities: ["image:register:*", "proc:spawn:*", "proc:exec:*"],
    };
    const end = await h.run(source, { input: { image: pricey, exec: true }, image });
    assert.equal(end.state, "exited", end.error?.message);
    const refused = end.result as Record<string, Attempt>;
    failed(refused.direct, "EPERM", /no capability grants model:complete/);
    failed(
      refused.spawn,
      "EPERM",
      /names model "openai\/gpt-4o", and process \d+ may only call "openai\/gpt-4o-mini"/,
    );
    failed(refused.exec, "EPERM", /names model "openai\/gpt-4o"/);
    assert.equal(end.image.startsWith("prog-"), true, "the exec did not happen");
    assert.deepEqual(model.asked, []);
    assert.deepEqual(await h.kernel.processes.children(end.pid), []);

    // A policy deny on the model refuses the spawn even with a capability.
    const denied = await h.run(source, {
      input: { image: pricey, exec: true },
      image: { ...image, capabilities: [...image.capabilities, "model:complete:openai/*"] },
      policy: [parsePolicyAssignment("model:complete:openai/gpt-4o=deny", "operator")],
    });
    const d = denied.result as Record<string, Attempt>;
    failed(d.direct, "EPERM", /denied by policy/);
    failed(
      d.spawn,
      "EPERM",
      /names model "openai\/gpt-4o".*policy "model:complete:openai\/gpt-4o" denies it/,
    );
    failed(d.exec, "EPERM", /names model "openai\/gpt-4o"/);
    assert.deepEqual(model.asked, []);

    // Control: a parent that may call the model spawns a child that calls it.
    const allowed = await h.run(source, {
      input: { image: pricey },
      image: { ...image, capabilities: [...image.capabilities, "model:complete:openai/gpt-4o"] },
    });
    const a = allowed.result as Record<string, Attempt> & { child: { result: unknown } };
    succeeded(a.direct);
    succeeded(a.spawn);
    assert.equal(a.child.result, "expensive");
    assert.deepEqual(model.asked, ["openai/gpt-4o", "openai/gpt-4o"]);
    const [child] = await h.kernel.processes.children(allowed.pid);
    assert.equal((await h.kernel.processes.require(child)).ownModel, "openai/gpt-4o");
  }, { model });
});

Deno.test("an image that names no model runs on its spawner's", async () => {
  const model = new RecordingModel({ "plain@1.0.0": [{ content: "plain", exit: true }] });
  await withKernel(async (h) => {
    await h.kernel.images.register({
      name: "plain",
      version: "1.0.0",
      entry: "libos:agent",
      tools: ["exit"],
      capabilities: [],
      policy: {},
    });
    const end = await h.run(
      program(`
        const { pid } = await sys.proc.spawn({ image: "plain@1.0.0" });
        return { pid, child: await sys.proc.wait(pid) };
      `),
      {
        image: {
          model: { provider: "openai", name: "gpt-4o-mini" },
          capabilities: ["proc:spawn:*"],
        },
      },
    );
    assert.equal(end.state, "exited", end.error?.message);
    const result = end.result as { pid: number; child: { result: unknown } };
    assert.equal(result.child.result, "plain");
    assert.deepEqual(model.asked, ["openai/gpt-4o-mini"]);
    assert.equal((await h.kernel.processes.require(result.pid)).ownModel, "openai/gpt-4o-mini");
  }, { model });
});

Deno.test("a child asking for larger limits and budgets gets its parent's", async () => {
  await withKernel(async (h) => {
    const greedy = await h.program(
      "greedy",
      program(`return await attempt(() => sys.fs.write("big.txt", "x".repeat(300 * 1024)));`),
      {
        capabilities: ["fs:write:**"],
        limits: { maxMessageBytes: 8 << 20 },
        budget: { tokens: 1_000_000, toolCalls: 1_000_000, children: 50, wallMs: 3_600_000 },
      },
    );
    const parent = {
      capabilities: ["fs:write:**", "proc:spawn:*", "proc:exec:*"],
      limits: { maxMessageBytes: 64 * 1024 },
      budget: { tokens: 500, toolCalls: 7, children: 3, wallMs: 600_000 },
    };
    const spawned = await h.run(
      program(`
        const { pid } = await sys.proc.spawn({ image: input.greedy });
        return { pid, child: await sys.proc.wait(pid) };
      `),
      { input: { greedy }, image: parent },
    );
    assert.equal(spawned.state, "exited", spawned.error?.message);
    const result = spawned.result as {
      pid: number;
      child: { state: string; error?: { message: string } };
    };
    assert.equal(result.child.state, "failed");
    assert.match(result.child.error!.message, /over the 65536-byte limit/);
    const child = await h.kernel.processes.require(result.pid);
    assert.equal(child.budget.tokens, 500);
    assert.equal(child.budget.toolCalls, 7);
    assert.equal(child.budget.children, 2, "what the parent had left after spawning it");
    assert.ok(child.budget.wallMs! <= 600_000);
    assert.equal(child.limits?.maxMessageBytes, 64 * 1024);

    // The same image by exec: the process keeps its own limits and budget.
    const execd = await h.run(
      program(`await sys.proc.exec({ image: input.greedy });`),
      { input: { greedy }, image: parent },
    );
    assert.equal(execd.image, greedy);
    assert.equal(execd.state, "failed");
    assert.match(execd.error!.message, /over the 65536-byte limit/);
    assert.deepEqual(execd.budget, parent.budget);
    let exists = true;
    await Deno.lstat(join(h.workspace, "big.txt")).catch(() => exists = false);
    assert.equal(exists, false, "no write got through with the larger limit");
  });
});

Deno.test("a JIT tool runs under its caller's image policy, not around it", async () => {
  const writer = {
    name: "writer",
    description: "writes a file",
    input: { type: "object", properties: { path: { type: "string" } }, required: ["path"] },
    manifest: { capabilities: ["fs:write:**"] },
    source:
      `export async function run(args: { path: string }, sys: any) { return await sys.fs.write(args.path, "pwned"); }`,
  };
  await withKernel(async (h) => {
    await Deno.writeTextFile(join(h.workspace, "secret.txt"), CANARY);
    const end = await h.run(
      program(`
        await sys.tool.register(input.tool);
        return {
          own: await attempt(() => sys.fs.write("secret.txt", "caller")),
          tool: await attempt(() => sys.tool.call("writer", { path: "secret.txt" })),
        };
      `),
      {
        input: { tool: writer },
        image: {
          capabilities: ["fs:write:**", "tool:register:*"],
          policy: { "fs:write:secret.txt": "deny" },
        },
      },
    );
    assert.equal(end.state, "exited", end.error?.message);
    const result = end.result as Record<string, Attempt>;
    failed(result.own, "EPERM", /denied by policy "fs:write:secret\.txt"/);
    failed(result.tool, "EPERM", /denied by policy "fs:write:secret\.txt"/);
    assert.equal(await secretOf(h), CANARY);
  });
});
