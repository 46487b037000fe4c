/**
 * JIT tools (SPEC section 10): registration checks, and calls that run in
 * their own cell with the intersection of manifest and caller authority.
 * Each attack asserts its effect did not happen.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { withHarness } from "./_harness.ts";

const CANARY = "JIT-SECRET-" + crypto.randomUUID();

/** A program that registers `tool` and calls it with `args`, returning what happened. */
function caller(tool: Record<string, unknown>, args: Record<string, unknown> = {}, after = "") {
  return `export default async function main(sys) {
    const tool = ${JSON.stringify(tool)};
    try { await sys.tool.register(tool); } catch (e) { return { registered: false, code: e.code, message: e.message }; }
    let out;
    try { out = { ok: true, result: await sys.tool.call(tool.name, ${JSON.stringify(args)}) }; }
    catch (e) { out = { ok: false, code: e.code, message: e.message }; }
    ${after}
    return out;
  }`;
}

const READER = (manifest: string[]) => ({
  name: "reader",
  description: "reads a file",
  input: { type: "object", properties: { path: { type: "string" } }, required: ["path"] },
  manifest: { capabilities: manifest },
  source:
    `export async function run(args: { path: string }, sys: any) { return await sys.fs.read(args.path); }`,
});

const CALLER_IMAGE = (caps: string[]) => ({
  capabilities: ["tool:register:*", ...caps],
});

async function secretFiles(ws: string) {
  await Deno.mkdir(join(ws, "data"));
  await Deno.writeTextFile(join(ws, "data", "ok.txt"), "public");
  await Deno.writeTextFile(join(ws, "secret.txt"), CANARY);
}

async function recorded(h: Parameters<Parameters<typeof withHarness>[0]>[0]): Promise<string> {
  await h.kernel.journal.flush();
  const parts: unknown[] = await h.kernel.processes.list();
  for await (const r of h.kernel.audit.list()) parts.push(r);
  return JSON.stringify(parts);
}

Deno.test("a JIT tool reads within manifest and caller grant, and its calls are audited under its name", async () => {
  await withHarness(async (h) => {
    await secretFiles(h.workspace);
    const end = await h.run(caller(READER(["fs:read:data/**"]), { path: "data/ok.txt" }), {
      image: CALLER_IMAGE(["fs:read:**"]),
    });
    assert.deepEqual(end.result, { ok: true, result: "public" });
    await h.kernel.journal.flush();
    const reads = [];
    for await (const r of h.kernel.audit.list()) if (r.syscall === "fs.read") reads.push(r);
    assert.equal(reads.length, 1);
    assert.match(reads[0].tool ?? "", /^reader@[0-9a-f]{16}$/);
  });
});

Deno.test("a JIT tool cannot read outside its manifest", async () => {
  await withHarness(async (h) => {
    await secretFiles(h.workspace);
    const end = await h.run(caller(READER(["fs:read:data/**"]), { path: "secret.txt" }), {
      image: CALLER_IMAGE(["fs:read:**"]),
    });
    assert.equal((end.result as { code: string }).code, "EPERM");
    assert.ok(!(await recorded(h)).includes(CANARY));
  });
});

Deno.test("a JIT tool cannot read outside its caller's grant, whatever its manifest says", async () => {
  await withHarness(async (h) => {
    await secretFiles(h.workspace);
    const end = await h.run(caller(READER(["fs:read:**"]), { path: "secret.txt" }), {
      image: CALLER_IMAGE(["fs:read:data/**"]),
    });
    assert.equal((end.result as { code: string }).code, "EPERM");
    assert.ok(!(await recorded(h)).includes(CANARY));
    // The intersection still lets it read what both allow.
    const ok = await h.run(caller(READER(["fs:read:**"]), { path: "data/ok.txt" }), {
      image: CALLER_IMAGE(["fs:read:data/**"]),
    });
    assert.deepEqual(ok.result, { ok: true, result: "public" });
  });
});

Deno.test("a JIT tool cannot use a caller's one-shot grant, which stays usable once by the caller", async () => {
  await withHarness(async (h) => {
    await secretFiles(h.workspace);
    const end = await h.run(
      caller(
        READER(["fs:read:**"]),
        { path: "secret.txt" },
        `
        let own; try { own = (await sys.fs.read("secret.txt")).length; } catch (e) { own = e.code; }
        let again; try { await sys.fs.read("secret.txt"); again = "read twice"; } catch (e) { again = e.code; }
        return { tool: out.code, own, again };`,
      ),
      { image: CALLER_IMAGE(["fs:read:secret.txt;uses=1"]) },
    );
    assert.deepEqual(end.result, { tool: "EPERM", own: CANARY.length, again: "EPERM" });
  });
});

Deno.test("a JIT tool cannot register another tool", async () => {
  await withHarness(async (h) => {
    const inner = {
      name: "nested",
      description: "x",
      input: { type: "object" },
      manifest: { capabilities: [] },
      source: "export function run() { return 1; }",
    };
    const end = await h.run(
      caller({
        name: "breeder",
        description: "registers a tool",
        input: { type: "object" },
        manifest: { capabilities: ["tool:register:*"] },
        source:
          `export async function run(args: unknown, sys: any) { return await sys.tool.register(${
            JSON.stringify(inner)
          }); }`,
      }),
      { image: CALLER_IMAGE([]) },
    );
    assert.equal((end.result as { code: string }).code, "EPERM");
    assert.match((end.result as { message: string }).message, /cannot register tools/);
    assert.equal(await h.kernel.tools.get(end.pid, "nested"), undefined);
  });
});

Deno.test("a spinning JIT tool is killed at its CPU limit and the caller goes on", async () => {
  await withHarness(async (h) => {
    const end = await h.run(
      caller({
        name: "spinner",
        description: "spins",
        input: { type: "object" },
        manifest: { capabilities: [] },
        source: "export function run() { for (;;) {} }",
      }),
      { image: CALLER_IMAGE([]) },
    );
    assert.equal(end.state, "exited");
    assert.equal((end.result as { ok: boolean }).ok, false);
    assert.match((end.result as { message: string }).message, /CPU limit/);
  });
});

Deno.test("a JIT tool that exhausts memory kills only its own cell", async () => {
  await withHarness(async (h) => {
    const end = await h.run(
      caller({
        name: "hog",
        description: "allocates",
        input: { type: "object" },
        manifest: { capabilities: [] },
        source:
          "export function run() { const a: number[][] = []; for (;;) a.push(new Array(1e6).fill(1)); }",
      }),
      { image: CALLER_IMAGE([]) },
    );
    assert.equal(end.state, "exited");
    assert.equal((end.result as { ok: boolean }).ok, false);
    assert.match(
      (end.result as { message: string }).message,
      /Process \d+ exceeded its memory limit of 128 MB/,
    );
  });
});

Deno.test("registration refuses imports, escape hatches, shadowing and bad schemas, and grants nothing", async () => {
  await withHarness(async (h) => {
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ source: 'import x from "./x.ts"; export function run() { return x; }' }, /imports/],
      [
        {
          source: 'export async function run() { return await import("data:text/javascript,1"); }',
        },
        /imports/,
      ],
      [{ source: "export function run() { return Deno.env.toObject(); }" }, /Deno namespace/],
      [{ source: 'export function run() { return eval("1"); }' }, /eval/],
      [{ source: "export function run() { return globalThis; }" }, /global object/],
      [{ source: "export default function () {}" }, /export a function named run|default/],
      [{ source: "export function run(): number { return 'x'; }" }, /TS2322|not assignable/],
      [{ name: "read_file" }, /shadow a built-in/],
      [{ input: { type: "nonsense" } }, /input schema/],
    ];
    for (const [override, why] of bad) {
      const tool = {
        name: "t",
        description: "x",
        input: { type: "object" },
        manifest: { capabilities: [] },
        source: "export function run() { return 1; }",
        ...override,
      };
      const end = await h.run(caller(tool), { image: CALLER_IMAGE([]) });
      const result = end.result as { registered?: boolean; message?: string };
      assert.equal(result.registered, false, `refused: ${JSON.stringify(override)}`);
      assert.match(result.message ?? "", why);
    }
  });
});

Deno.test("registering needs tool:register authority", async () => {
  await withHarness(async (h) => {
    const end = await h.run(caller(READER([])), { image: { capabilities: [] } });
    assert.equal((end.result as { code: string }).code, "EPERM");
  });
});

Deno.test("registered tools survive a restart of the table and a fork gets its own copy", async () => {
  await withHarness(async (h) => {
    const end = await h.run(
      `export default async function main(sys) {
      await sys.tool.register({ name: "twice", description: "doubles", input: { type: "object",
        properties: { n: { type: "number" } }, required: ["n"] }, manifest: { capabilities: [] },
        source: "export function run(args: { n: number }) { return args.n * 2; }" });
      const { pid } = await sys.proc.fork();
      if (pid === 0) return await sys.tool.call("twice", { n: 21 });
      const child = await sys.proc.wait(pid);
      let bad; try { await sys.tool.call("twice", { n: "x" }); } catch (e) { bad = e.code; }
      return { child: child.result, bad };
    }`,
      { image: CALLER_IMAGE(["proc:fork:self"]) },
    );
    assert.deepEqual(end.result, { child: 42, bad: "EINVAL" });
    const [child] = await h.kernel.processes.children(end.pid);
    assert.ok(await h.kernel.tools.get(child, "twice"));
  });
});
