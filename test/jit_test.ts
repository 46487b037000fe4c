/**
 * JIT tools (SPEC section 10): registration checks, and calls that run in
 * their own cell with the intersection of manifest and caller authority.
 * Each attack asserts its effect did not happen.
 */

import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { callDigest } from "../broker/broker.ts";
import { makeHostTempDir } from "../runtime/host_children.ts";
import { MAX_TYPE_CHECKS } from "../runtime/jit_tools.ts";
import { Kernel } from "../runtime/kernel.ts";
import { type Harness, withHarness } from "./_harness.ts";
import { beforeNextCommit, type CommitWatch, watchCommits, watchReads } from "./_kv_commits.ts";
import type { ProcessRecord } from "../runtime/process_table.ts";
import { FROZEN_MS, watchHealth } from "./_liveness.ts";
import { holdSyscall, whenState } from "./_programs.ts";

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

Deno.test("a spinning JIT tool runs in its caller's cell, is killed at its CPU limit, and the caller goes on", async () => {
  await withHarness(async (h) => {
    const tag = await h.program(
      "spin-caller",
      caller({
        name: "spinner",
        description: "spins",
        input: { type: "object" },
        manifest: { capabilities: [] },
        source: "export function run() { for (;;) {} }",
      }),
      CALLER_IMAGE([]),
    );
    const proc = await h.kernel.spawn({ image: tag, workspace: h.workspace });
    h.kernel.start(proc.pid);
    // While the tool spins, it and its caller (which keeps its Worker) share one cell.
    let cells: (number | undefined)[] = [];
    while (cells.length === 0 || cells.includes(undefined)) {
      const tool = (await h.kernel.processes.list()).find((p) => p.ppid === proc.pid);
      cells = [proc.pid, tool?.pid ?? 0].map((pid) => h.kernel.executionOf(pid)?.slot?.cell.osPid);
      await new Promise((r) => setTimeout(r, 5));
    }
    assert.equal(cells[0], cells[1], "the tool runs in a Worker of its caller's cell");
    const end = await h.kernel.waitFor(proc.pid);
    assert.equal(end.state, "exited");
    assert.equal((end.result as { ok: boolean }).ok, false);
    assert.match((end.result as { message: string }).message, /CPU limit/);
  }, { waitGraceMs: 60_000 });
});

Deno.test("a JIT tool that exhausts memory fails alone, its caller (in the same cell) goes on", async () => {
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
  }, { waitGraceMs: 60_000 });
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

const TWICE = {
  name: "twice",
  description: "doubles",
  input: { type: "object", properties: { n: { type: "number" } }, required: ["n"] },
  manifest: { capabilities: [] },
  source: "export function run(args: { n: number }) { return args.n * 2; }",
};

Deno.test("registering the same tool again answers as the first time; another tool under its name is EEXIST", async () => {
  await withHarness(async (h) => {
    const other = { ...TWICE, source: "export function run() { return 0; }" };
    const wider = { ...TWICE, manifest: { capabilities: ["fs:read:**"] } };
    const end = await h.run(
      `export default async function main(sys) {
        const first = await sys.tool.register(${JSON.stringify(TWICE)});
        const again = await sys.tool.register(${JSON.stringify(TWICE)});
        const refused = [];
        for (const tool of [${JSON.stringify(other)}, ${JSON.stringify(wider)}]) {
          try { await sys.tool.register(tool); refused.push("registered"); }
          catch (e) { refused.push(e.code); }
        }
        return { same: first.digest === again.digest, refused, out: await sys.tool.call("twice", { n: 4 }) };
      }`,
      { image: CALLER_IMAGE([]) },
    );
    assert.deepEqual(end.result, { same: true, refused: ["EEXIST", "EEXIST"], out: 8 });
  });
});

Deno.test("a registration redone after the host died before its outcome was journaled succeeds, audited once", async () => {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-test-" }));
  const kvPath = join(root, "kv.db");
  try {
    let pid: number;
    {
      const kernel = await Kernel.open({ store: kvPath });
      const image = await kernel.images.register({
        name: "registrar",
        version: "1",
        entry: "./main.ts",
        tools: [],
        capabilities: ["tool:register:*"],
        policy: {},
      }, {
        entrySource: `export default async function main(sys) {
          const registered = await sys.tool.register(${JSON.stringify(TWICE)});
          return { registered, out: await sys.tool.call("twice", { n: 21 }) };
        }`,
      });
      pid = (await kernel.spawn({ image: image.tag, workspace: root })).pid;
      // As if the host died inside the call: its intent is journaled and the
      // registration committed, its outcome (and its audit record) did not.
      await kernel.store.kv.set(["journal", pid, 1], {
        pid,
        seq: 1,
        name: "tool.register",
        argsDigest: await callDigest("tool.register", TWICE),
        effect: "idempotent",
        phase: "intent",
        at: Date.now(),
      });
      await kernel.tools.register(pid, TWICE);
      await kernel.close();
    }
    const kernel = await Kernel.open({ store: kvPath });
    try {
      await kernel.recover();
      const end = await kernel.waitFor(pid);
      assert.equal(end.state, "exited", JSON.stringify(end.error));
      const result = end.result as { registered: { name: string; digest: string }; out: number };
      assert.equal(result.registered.name, "twice");
      assert.equal(result.registered.digest, (await kernel.tools.get(pid, "twice"))?.digest);
      assert.equal(result.out, 42);
      await kernel.journal.flush();
      const registrations = [];
      for await (const r of kernel.audit.list({ pid })) {
        if (r.syscall === "tool.register") registrations.push(r.outcome);
      }
      assert.deepEqual(registrations, ["ok"]);
    } finally {
      await kernel.close();
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

/** A tool registration whose module is `source`, described as `count`. */
const COUNT = (source: string) => ({
  name: "count",
  description: "counts",
  input: { type: "object", properties: { n: { type: "number" } }, required: ["n"] },
  manifest: { capabilities: [] },
  source,
});

const COUNT_META = `name: "count", description: "counts",
  input: { type: "object", properties: { n: { type: "number" } }, required: ["n"] },
  manifest: { capabilities: [] }`;

Deno.test("a tool module with a default-exported object, or both shapes in agreement, registers and runs", async () => {
  await withHarness(async (h) => {
    const shapes = [
      `export default { ${COUNT_META},
        async run(args: { n: number }, sys: any) { return this.name + ":" + (args.n + 1); } };`,
      `export const name = "count";
      export const manifest = { capabilities: [] };
      export async function run(args: { n: number }) { return "count:" + (args.n + 1); }
      export default { name, description: "counts", manifest, run };`,
    ];
    for (const source of shapes) {
      const end = await h.run(caller(COUNT(source), { n: 41 }), { image: CALLER_IMAGE([]) });
      assert.deepEqual(end.result, { ok: true, result: "count:42" }, source);
    }
  });
});

Deno.test("a tool whose TypeScript is only types runs as JavaScript; one whose TypeScript means something runs as TypeScript", async () => {
  await withHarness(async (h) => {
    const sources = {
      types: `interface Args { n: number }
        export async function run(args: Args, sys: any): Promise<string> {
          const n = (args as Args).n satisfies number;
          return "count:" + (n + 1);
        }`,
      enum: `enum Step { One = 1 }
        export async function run(args: { n: number }) { return "count:" + (args.n + Step.One); }`,
    };
    for (const [kind, source] of Object.entries(sources)) {
      const end = await h.run(caller(COUNT(source), { n: 41 }), { image: CALLER_IMAGE([]) });
      assert.deepEqual(end.result, { ok: true, result: "count:42" }, kind);
      const tool = await h.kernel.tools.get(end.pid, "count");
      const image = await h.kernel.images.get(tool!.image);
      const entry = h.kernel.entries.entryOf(image!);
      assert.equal(entry.kind, "module");
      if (kind === "types") {
        assert.equal(entry.javascript, true, "handed to its Worker as JavaScript");
        assert.doesNotMatch(entry.source, /interface|satisfies| as |: Args/);
      } else {
        assert.equal(entry.javascript, undefined, "handed to its Worker as TypeScript");
        assert.equal(entry.source, image!.entrySource);
      }
    }
  });
});

Deno.test("registration refuses default exports that disagree, hide what they hold, or use escape hatches", async () => {
  await withHarness(async (h) => {
    const bad: [string, RegExp][] = [
      [
        `export function run() { return 1; }
        export default { ${COUNT_META}, run() { return 2; } };`,
        /default export's run is not the exported run/,
      ],
      [
        `export const manifest = { capabilities: [] };
        export function run() { return 1; }
        export default { manifest: { capabilities: ["fs:read:**"] }, run };`,
        /manifest differs/,
      ],
      [`const tool = { run() { return 1; } };\nexport default tool;`, /object literal/],
      [`export default new Proxy({}, { get: () => () => 1 });`, /object literal/],
      [`export default { get run() { return () => 1; } };`, /getters or setters/],
      [`export default { ${COUNT_META}, run: () => globalThis };`, /global object/],
      [`export default { run() { return Deno.env.toObject(); } };`, /Deno namespace/],
      [`export default { run: () => fetch("http://127.0.0.1:1/") };`, /fetch/],
      [`export * from "data:text/javascript,export const run = () => 1";`, /re-exports/],
    ];
    for (const [source, why] of bad) {
      const end = await h.run(caller(COUNT(source), { n: 1 }), { image: CALLER_IMAGE([]) });
      const result = end.result as { registered?: boolean; message?: string };
      assert.equal(result.registered, false, `refused: ${source}`);
      assert.match(result.message ?? "", why, source);
      assert.equal(await h.kernel.tools.get(end.pid, "count"), undefined);
    }
  });
});

/**
 * How many `deno check` subprocesses of this host run now (from `ps`). The
 * host is this test module: other modules in this OS process are hosts of
 * their own, with folders of their own.
 */
async function typeChecksRunning(): Promise<number> {
  const { stdout } = await new Deno.Command("ps", { args: ["-eo", "args"], stdout: "piped" })
    .output();
  const probe = await makeHostTempDir("probe-");
  await Deno.remove(probe);
  const mine = dirname(probe) + "/";
  return new TextDecoder().decode(stdout).split("\n")
    .filter((line) => line.includes(" check ") && line.includes(mine)).length;
}

Deno.test("parallel tool registrations never run more type checks at once than the host allows", async () => {
  await withHarness(async (h) => {
    let peak = 0;
    let done = false;
    const watching = (async () => {
      while (!done) peak = Math.max(peak, await typeChecksRunning());
    })();
    const end = await h.run(
      `export default async function main(sys) {
        return await Promise.all(Array.from({ length: 8 }, (_, i) =>
          sys.tool.register({
            name: "t" + i,
            description: "a tool",
            input: { type: "object" },
            manifest: { capabilities: [] },
            source: "export async function run(args: unknown, sys: any) { return " + i + "; }",
          }).then(() => "registered", (e) => e.code)
        ));
      }`,
      { image: { capabilities: ["tool:register:*"], limits: { cpuMs: 120_000 } } },
    );
    done = true;
    await watching;
    assert.equal(end.state, "exited", end.error?.message);
    // Every registration is still made, a few at a time.
    assert.deepEqual(end.result, Array(8).fill("registered"));
    assert.ok(peak >= 1, "the watch saw no type check: it looks at the wrong processes");
    assert.ok(peak <= MAX_TYPE_CHECKS, `${peak} type checks ran at once`);
  });
});

Deno.test("a tool's input schema runs no regular expression of the process's, and the host keeps answering", async () => {
  await withHarness(async (h) => {
    const re = "^(a+)+$";
    const evil = "a".repeat(29) + "b";
    const inputs: [Record<string, unknown>, Record<string, unknown>, RegExp][] = [
      [
        { type: "object", properties: { s: { type: "string", pattern: re } } },
        { s: evil },
        /^Cannot register tool "matcher": in its input schema, "pattern" at #\/properties\/s is not supported \(regular expressions from a process do not run on the host\)$/,
      ],
      [
        { type: "object", patternProperties: { [re]: { type: "number" } } },
        { [evil]: 1 },
        /"patternProperties" is not supported \(regular expressions from a process/,
      ],
      [
        { type: "object", properties: { s: { type: "string", format: "regex" } } },
        { s: "(" },
        /"format" at #\/properties\/s is not supported \("regex": regular expressions from a process/,
      ],
    ];
    const watch = watchHealth(h.kernel);
    const results = [];
    for (const [input, args] of inputs) {
      const tool = {
        name: "matcher",
        description: "matches",
        input,
        manifest: { capabilities: [] },
        source: "export function run() { return 1; }",
      };
      results.push((await h.run(caller(tool, args), { image: CALLER_IMAGE([]) })).result);
    }
    const seen = await watch.stop();
    assert.ok(seen.answers > 0);
    assert.ok(seen.longestGapMs < FROZEN_MS, `the host did not answer for ${seen.longestGapMs} ms`);
    for (const [i, [, , why]] of inputs.entries()) {
      const result = results[i] as { registered?: boolean; code?: string; message?: string };
      assert.equal(result.registered, false, JSON.stringify(result));
      assert.equal(result.code, "EINVAL");
      assert.match(result.message ?? "", why);
    }
  });
});

Deno.test("checking a tool's arguments is bounded by their size", async () => {
  await withHarness(async (h) => {
    // Two alternatives per level that both fail only at the bottom: 2^depth
    // paths unless the checker stops itself.
    const input = {
      type: "object",
      properties: { v: { $ref: "#/$defs/n" } },
      $defs: {
        n: {
          anyOf: [
            { type: "array", items: { $ref: "#/$defs/n" } },
            { type: "array", items: { $ref: "#/$defs/n" } },
          ],
        },
      },
    };
    let v: unknown = [1];
    for (let i = 0; i < 20; i++) v = [v];
    const tool = {
      name: "nested",
      description: "x",
      input,
      manifest: { capabilities: [] },
      source: "export function run() { return 1; }",
    };
    const watch = watchHealth(h.kernel);
    const end = await h.run(caller(tool, { v }), { image: CALLER_IMAGE([]) });
    const seen = await watch.stop();
    const result = end.result as { ok: boolean; code?: string; message?: string };
    assert.equal(result.ok, false, JSON.stringify(result));
    assert.equal(result.code, "EINVAL");
    assert.match(
      result.message ?? "",
      /^Cannot call tool "nested": its arguments cannot be checked: checking the value takes more than \d+ steps/,
    );
    assert.deepEqual(await h.kernel.processes.children(end.pid), []);
    assert.ok(seen.longestGapMs < FROZEN_MS, `the host did not answer for ${seen.longestGapMs} ms`);
  });
});

Deno.test("a tool's manifest cannot make its caller's capability delegable, so the tool cannot hand it to an unrelated process", async () => {
  await withHarness(async (h) => {
    await secretFiles(h.workspace);
    // An unrelated process in another workspace, whose image allows no fs access at all.
    const idle = "export default async function main(sys) { await sys.msg.recv(); }";
    const tag = await h.program("bystander", idle, { capabilities: [] });
    const bystander = await h.kernel.spawn({ image: tag, workspace: h.outside });
    h.kernel.start(bystander.pid);
    const before = (await h.kernel.caps.list(bystander.pid)).map((c) => c.id);
    const tool = {
      name: "leaker",
      description: "hands its read authority on",
      input: { type: "object", properties: { to: { type: "number" } }, required: ["to"] },
      manifest: { capabilities: ["fs:read:**;delegable"] },
      source: `export async function run(args: { to: number }, sys: any) {
        const caps = (await sys.cap.list()).map((c: any) => c.text);
        let delegated: string;
        try { delegated = "granted " + await sys.cap.delegate(args.to, "fs:read:**"); }
        catch (e) { delegated = e.code; }
        return { caps, delegated };
      }`,
    };
    const end = await h.run(caller(tool, { to: bystander.pid }), {
      image: CALLER_IMAGE(["fs:read:**"]),
    });
    const out = end.result as { ok: boolean; result: { caps: string[]; delegated: string } };
    assert.equal(out.ok, true, JSON.stringify(out));
    assert.ok(out.result.caps.includes(`fs:read:${h.workspace}/**`), JSON.stringify(out));
    assert.ok(!out.result.caps.some((text) => text.includes("delegable")), JSON.stringify(out));
    assert.equal(out.result.delegated, "EPERM");
    assert.deepEqual((await h.kernel.caps.list(bystander.pid)).map((c) => c.id), before);
  });
});

/** A program that registers a trivial tool and calls it `input.calls` times. */
const ECHO_CALLS = `export default async function main(sys, input) {
  await sys.tool.register({ name: "echo", description: "returns its input",
    input: { type: "object", properties: { n: { type: "number" } }, required: ["n"] },
    manifest: { capabilities: [] },
    source: "export function run(args: { n: number }) { return args.n; }" });
  for (let i = 0; i < input.calls; i++) await sys.tool.call("echo", { n: i });
  return "done";
}`;

Deno.test("a tool call that finds its caller paused is made again once it resumes, not answered EINTR", async () => {
  await withHarness(async (h) => {
    const tag = await h.program("echoes", ECHO_CALLS, { capabilities: ["tool:register:*"] });
    // The operator pauses the caller while its call is making the tool's process.
    const table = h.kernel.processes;
    const create = table.create.bind(table);
    let paused = false;
    table.create = async (init, now, options) => {
      if (!paused && init.tool) {
        paused = true;
        await h.kernel.signal(init.ppid!, "pause");
        await whenState(h.kernel, init.ppid!, "paused");
      }
      return await create(init, now, options);
    };
    const proc = await h.kernel.spawn({ image: tag, workspace: h.workspace, input: { calls: 1 } }, {
      start: true,
    });
    await whenState(h.kernel, proc.pid, "paused");
    await h.kernel.signal(proc.pid, "resume");
    const end = await h.kernel.waitFor(proc.pid);
    assert.equal(end.state, "exited", end.error?.message);
    assert.equal(end.result, "done");
  });
});

/**
 * Like {@link ECHO_CALLS}, with a call of no effect (its record buffered)
 * just before each tool call, and one in the tool before it returns.
 */
const STAMPED_CALLS = `export default async function main(sys, input) {
  await sys.tool.register({ name: "echo", description: "returns its input",
    input: { type: "object", properties: { n: { type: "number" } }, required: ["n"] },
    manifest: { capabilities: [] },
    source: "export async function run(args: { n: number }, sys: any) { await sys.time.now(); return args.n; }" });
  for (let i = 0; i < input.calls; i++) {
    await sys.time.now();
    await sys.tool.call("echo", { n: i });
  }
  return "done";
}`;

/** Runs `tag` with `calls` as input, watching the store's commits meanwhile. */
async function runWatched(
  h: Harness,
  tag: string,
  calls: number,
): Promise<{ end: ProcessRecord; watch: CommitWatch }> {
  const watch = watchCommits(h.kernel.store.kv as Deno.Kv);
  try {
    const end = await h.kernel.run({ image: tag, workspace: h.workspace, input: { calls } });
    return { end, watch };
  } finally {
    watch.stop();
  }
}

Deno.test("a JIT tool call's child is charged to its caller in the commit that makes it", async () => {
  await withHarness(async (h) => {
    const tag = await h.program("echoes", ECHO_CALLS, { capabilities: ["tool:register:*"] });
    const { end, watch } = await runWatched(h, tag, 3);
    assert.equal(end.state, "exited");
    const caller = JSON.stringify(["proc", end.pid]);
    // Each tool call makes a child: the commit that links it to its caller
    // also writes the caller's record, its `children` usage charged.
    const made = watch.commits.filter((commit) =>
      commit.keys.some((key) => key[0] === "proc_child" && key[1] === end.pid)
    );
    assert.equal(made.length, 3);
    for (const commit of made) {
      assert.ok(
        commit.keys.some((key) => JSON.stringify(key) === caller),
        `A child was made without its charge: ${JSON.stringify(commit.keys)}`,
      );
    }
    assert.equal((await h.kernel.processes.require(end.pid)).usage.children, 3);
  });
});

Deno.test("a JIT tool call commits twice: its tool made with its caller blocked and its caller's records, then its end with the tool's records and its caller woken", async () => {
  await withHarness(async (h) => {
    const tag = await h.program("echoes", STAMPED_CALLS, { capabilities: ["tool:register:*"] });
    const { end, watch } = await runWatched(h, tag, 2);
    assert.equal(end.state, "exited", JSON.stringify(end.error));
    const pid = end.pid;
    const calls: number[] = [];
    for await (const e of h.kernel.store.kv.list<{ name: string }>({ prefix: ["journal", pid] })) {
      if (e.value.name === "tool.call") calls.push(e.key[2] as number);
    }
    const tools = await h.kernel.processes.children(pid);
    assert.equal(calls.length, 2);
    assert.equal(tools.length, 2);
    const id = (key: Deno.KvKey) => JSON.stringify(key);
    const writes = (commit: { keys: Deno.KvKey[] }, key: Deno.KvKey) =>
      commit.keys.some((k) => id(k) === id(key));
    const touching = (key: Deno.KvKey) =>
      watch.commits.flatMap((commit, at) => writes(commit, key) ? [at] : []);
    const caller = ["proc", pid];
    const spans: [number, number][] = [];
    for (const [i, seq] of calls.entries()) {
      const tool = tools[i];
      const keys = {
        call: ["journal", pid, seq],
        before: ["journal", pid, seq - 1],
        index: ["wait_child", tool, pid, seq],
        tool: ["proc", tool],
      };
      const own: Deno.KvKey[] = [];
      for await (const e of h.kernel.store.kv.list({ prefix: ["journal", tool] })) own.push(e.key);
      // The call's record is written twice (its wait, then its result): no intent goes first.
      const [made, ended, ...more] = touching(keys.call);
      assert.deepEqual(more, [], `tool.call ${seq} was committed more than twice`);
      // 1. The tool's process, running, with its caller blocked on it: one commit.
      for (const key of [keys.index, keys.tool, caller, ["proc_child", pid, tool]]) {
        assert.ok(writes(watch.commits[made], key), `the first commit lacks ${id(key)}`);
      }
      // 2. Its end, with its caller's result and wake-up: one commit.
      for (const key of [keys.index, keys.tool, caller]) {
        assert.ok(writes(watch.commits[ended], key), `the second commit lacks ${id(key)}`);
      }
      // The tool's record is written by those two commits only.
      assert.deepEqual(touching(keys.tool), [made, ended]);
      // The caller's record of the call before (buffered until then) is
      // made durable in the first commit, not in one of its own before it.
      assert.deepEqual(touching(keys.before), [made]);
      // Each record of the tool (its call, its exit) is made durable in the
      // second commit, not in one of its own before it.
      assert.equal(own.length, 2);
      for (const key of own) assert.deepEqual(touching(key), [ended], id(key));
      spans.push([made, ended]);
    }
    // Between the first call's end and the second call's start, nothing
    // else wrote the caller's record: it was woken (and claimed) in place.
    const between = touching(caller).filter((at) => at > spans[0][1] && at < spans[1][0]);
    assert.deepEqual(between, []);
    // Buffered records commit only with a commit that needs them (no timer flush).
  }, { waitGraceMs: 60_000, journal: { flushMs: 600_000 } });
});

Deno.test("a JIT tool call is audited in the commit that makes its tool, before anything the tool does", async () => {
  await withHarness(async (h) => {
    const tag = await h.program("echoes", STAMPED_CALLS, { capabilities: ["tool:register:*"] });
    const { end, watch } = await runWatched(h, tag, 2);
    assert.equal(end.state, "exited", JSON.stringify(end.error));
    const pid = end.pid;
    const tools = await h.kernel.processes.children(pid);
    assert.equal(tools.length, 2);
    const trail: { seq: number; pid: number; syscall: string }[] = [];
    for await (const r of h.kernel.audit.list()) trail.push(r);
    const calls = trail.filter((r) => r.pid === pid && r.syscall === "tool.call");
    assert.equal(calls.length, 2, "each call is audited once");
    const id = (key: Deno.KvKey) => JSON.stringify(key);
    const touching = (key: Deno.KvKey) =>
      watch.commits.flatMap((commit, at) => commit.keys.some((k) => id(k) === id(key)) ? [at] : []);
    for (const [i, call] of calls.entries()) {
      const tool = tools[i];
      // The commit that makes the tool's process stores the call's audit record.
      const [made] = touching(["proc", tool]);
      assert.deepEqual(touching(["audit", "rec", call.seq]), [made]);
      // So the trail lists the call before every call of its tool.
      const first = trail.find((r) => r.pid === tool);
      assert.ok(first && first.seq > call.seq, `the tool's calls follow tool.call ${call.seq}`);
    }
  }, { waitGraceMs: 60_000, journal: { flushMs: 600_000 } });
});

Deno.test("a JIT tool call reads back neither its tool's entry, nor its caller's capabilities, nor its own wait record", async () => {
  await withHarness(async (h) => {
    const tag = await h.program("echoes", STAMPED_CALLS, { capabilities: ["tool:register:*"] });
    const reads = watchReads(h.kernel.store.kv as Deno.Kv);
    let end;
    const calls = 3;
    try {
      end = await h.kernel.run({ image: tag, workspace: h.workspace, input: { calls } });
    } finally {
      reads.stop();
    }
    assert.equal(end.state, "exited", JSON.stringify(end.error));
    const pid = end.pid;
    const id = (key: Deno.KvKey) => JSON.stringify(key);
    const count = (key: Deno.KvKey) => reads.keys.filter((k) => id(k) === id(key)).length;
    // The tool's entry is read by its registration (to see the name is free),
    // not by the calls: this host registered it, and it never changes.
    assert.ok(count(["tool", pid, "echo"]) <= 1, `read ${count(["tool", pid, "echo"])} times`);
    // Each call's wait record was committed by this host: its end checks it, unread.
    for await (const e of h.kernel.store.kv.list<{ name: string }>({ prefix: ["journal", pid] })) {
      if (e.value.name === "tool.call") assert.equal(count(e.key), 0, id(e.key));
    }
    // The caller's capabilities are read for its first call that needs them, not per tool call.
    assert.ok(count(["cap_ver", pid]) < calls, `read ${count(["cap_ver", pid])} times`);
    // Each tool's record is read by its run's start (to see it still runs)
    // and by the commit that ends it: not by the quota of its journal (its
    // caller's lineage gives it), nor by its end before that commit.
    for (const tool of await h.kernel.processes.children(pid)) {
      assert.ok(count(["proc", tool]) <= 2, `process ${tool} read ${count(["proc", tool])} times`);
    }
  }, { waitGraceMs: 60_000, journal: { flushMs: 600_000 } });
});

Deno.test("a capability revoked elsewhere between a tool call's reads and its create commit passes nothing to the tool", async () => {
  await withHarness(async (h) => {
    await secretFiles(h.workspace);
    const kv = h.kernel.store.kv as Deno.Kv;
    // Another host revokes the caller's fs capability just before the commit
    // that would make the tool: straight in the store, so this host's copy
    // of the caller's capabilities still holds it.
    const revoked: string[] = [];
    const revocation = beforeNextCommit(kv, async (keys) => {
      const caller = keys.find((key) => key[0] === "proc_child")![1] as number;
      for await (const e of kv.list({ prefix: ["cap_holder", caller] })) {
        const id = e.key[2] as string;
        const cap = (await kv.get<{ resource: string }>(["cap", id])).value;
        if (cap?.resource !== "fs") continue;
        await kv.atomic().delete(["cap", id]).delete(e.key)
          .set(["cap_ver", caller], crypto.randomUUID()).commit();
        revoked.push(id);
      }
    }, (keys) => keys.some((key) => key[0] === "proc_child"));
    const end = await h.run(caller(READER(["fs:read:data/**"]), { path: "data/ok.txt" }), {
      image: CALLER_IMAGE(["fs:read:**"]),
    });
    await revocation;
    assert.equal(revoked.length, 1);
    // Decided again from the store: the caller holds nothing to pass on.
    assert.equal((end.result as { ok: boolean }).ok, false, JSON.stringify(end.result));
    assert.equal((end.result as { code: string }).code, "EPERM");
    for (const child of await h.kernel.processes.children(end.pid)) {
      const derived = (await h.kernel.caps.list(child)).filter((c) => revoked.includes(c.parent!));
      assert.deepEqual(derived, []);
    }
    assert.ok(!(await recorded(h)).includes('"public"'));
  });
});

Deno.test("a tool call decided on a copy that still holds a capability revoked elsewhere is decided again from the store", async () => {
  await withHarness(async (h) => {
    await secretFiles(h.workspace);
    const kv = h.kernel.store.kv as Deno.Kv;
    const gate = holdSyscall(h.kernel, (_ctx, request) => request.name === "tool.call");
    const ending = h.run(caller(READER(["fs:read:data/**"]), { path: "data/ok.txt" }), {
      image: CALLER_IMAGE(["fs:read:**"]),
    });
    await gate.reached;
    const pid = (await h.kernel.processes.list()).find((p) => p.ppid === null)!.pid;
    // This host holds a copy of the caller's capabilities; another host revokes
    // its fs capability straight in the store.
    assert.ok(h.kernel.caps.cachedHoldings(pid)?.capabilities.some((c) => c.resource === "fs"));
    for await (const e of kv.list({ prefix: ["cap_holder", pid] })) {
      const cap = (await kv.get<{ resource: string }>(["cap", e.key[2] as string])).value;
      if (cap?.resource !== "fs") continue;
      await kv.atomic().delete(["cap", e.key[2] as string]).delete(e.key)
        .set(["cap_ver", pid], crypto.randomUUID()).commit();
    }
    gate.release();
    const end = await ending;
    assert.equal((end.result as { code: string }).code, "EPERM");
    // The copy that still held it is gone: what follows is decided from the store.
    assert.ok(!h.kernel.caps.cachedHoldings(pid)?.capabilities.some((c) => c.resource === "fs"));
    assert.ok(!(await recorded(h)).includes('"public"'));
  });
});

Deno.test("a caller killed after its tool call read it, before the commit that would make the tool, makes no tool", async () => {
  await withHarness(async (h) => {
    const tag = await h.program("echoes", ECHO_CALLS, { capabilities: ["tool:register:*"] });
    const kv = h.kernel.store.kv as Deno.Kv;
    const gate = holdSyscall(h.kernel, (_ctx, request) => request.name === "tool.call");
    // Once the call is in, the caller is killed right after the call reads its record:
    // the entry the call holds is stale by the time its create commit is sent.
    let armed = false;
    const get = kv.get;
    kv.get = (async (key: Deno.KvKey, options?: { consistency?: Deno.KvConsistencyLevel }) => {
      const entry = await get.call(kv, key, options);
      if (armed && key[0] === "proc") {
        armed = false;
        await h.kernel.signal(key[1] as number, "kill");
      }
      return entry;
    }) as Deno.Kv["get"];
    try {
      const proc = await h.kernel.spawn({
        image: tag,
        workspace: h.workspace,
        input: { calls: 1 },
      }, { start: true });
      await gate.reached;
      armed = true;
      gate.release();
      const end = await h.kernel.waitFor(proc.pid);
      assert.equal(end.state, "killed");
      assert.equal(armed, false, "the call read the caller's record");
      assert.deepEqual(await h.kernel.processes.children(proc.pid), []);
    } finally {
      delete (kv as { get?: unknown }).get;
      if (kv.get !== get) kv.get = get;
    }
  });
});
