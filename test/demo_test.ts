import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { main } from "../cli.ts";
import type { Io } from "../cli/context.ts";
import { demoVerb } from "../cli/demo.ts";

const CANARY = "DEMO-SECRET-7f3a9c";

/** Runs `libos demo ARGS` through the verb with a fake terminal. */
async function demo(args: string[] = []): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [];
  const err: string[] = [];
  const io: Io = {
    out: (text) => out.push(...text.split("\n")),
    err: (text) => err.push(...text.split("\n")),
    interactive: false,
  };
  const code = await demoVerb(args, io);
  return { code, out, err };
}

/** Every key and value in a KV file, as text (binary values as hex). */
async function dumpKv(path: string): Promise<string> {
  const kv = await Deno.openKv(path);
  try {
    const parts: string[] = [];
    for await (const entry of kv.list({ prefix: [] })) {
      parts.push(
        JSON.stringify(entry.key, (_k, v) => typeof v === "bigint" ? `${v}n` : v),
        JSON.stringify(entry.value, (_k, v) => {
          if (typeof v === "bigint") return `${v}n`;
          if (v instanceof Uint8Array) return new TextDecoder().decode(v);
          return v;
        }),
      );
    }
    return parts.join("\n");
  } finally {
    kv.close();
  }
}

/** The `libos-demo-*` directories in the system temp directory. */
async function demoTempDirs(): Promise<Set<string>> {
  const probe = await Deno.makeTempDir();
  await Deno.remove(probe);
  const base = dirname(probe);
  const out = new Set<string>();
  for await (const entry of Deno.readDir(base)) {
    if (entry.isDirectory && entry.name.startsWith("libos-demo-")) out.add(join(base, entry.name));
  }
  return out;
}

/**
 * Runs `body`, then removes the empty `libos-demo-*` directories it left
 * (see the BUG test below); a directory in use by anyone is not empty.
 */
async function sweepingDemoTemp<T>(body: () => Promise<T>): Promise<T> {
  const before = await demoTempDirs();
  try {
    return await body();
  } finally {
    for (const path of await demoTempDirs()) {
      if (!before.has(path)) await Deno.remove(path).catch(() => {});
    }
  }
}

/** The demo's output with its temporary workspace path replaced by a placeholder. */
function normalized(out: readonly string[]): string {
  const match = out[0].match(/^Agent libOS demo \(workspace (.+)\)$/);
  assert.ok(match, `first line names the workspace: ${out[0]}`);
  return out.join("\n").replaceAll(match[1], "<WORKSPACE>");
}

Deno.test("demo: exits 0 and prints transcripts, the tree and a verified audit trail", async () => {
  const { code, out, err } = await demo();
  assert.equal(code, 0);
  assert.deepEqual(err, []);
  const text = out.join("\n");
  assert.ok(!text.includes(CANARY), "the secret canary is not printed");
  assert.ok(out.includes("Transcript of pid 1 (summarizer@1.0.0)"));
  assert.ok(out.includes("Transcript of pid 2 (checker@1.0.0)"));
  // The tree shows pid 2 indented under pid 1.
  const tree = out.indexOf("Process tree");
  assert.match(out[tree + 1], /^PID\s+PPID\s+IMAGE\s+MODEL\s+STATE\s+RESULT$/);
  assert.match(out[tree + 2], /^1\s+-\s+summarizer@1\.0\.0\s+scripted\/default\s+exited\s/);
  assert.match(out[tree + 3], /^ {2}2\s+1\s+checker@1\.0\.0\s+scripted\/default\s+exited\s/);
  // The secret read and the child's write show up as denials.
  assert.ok(
    out.some((line) => /^1\s+fs\.read\s+\{"path":"secrets\/token\.txt"\}.*deny.*EPERM/.test(line)),
  );
  assert.ok(
    out.some((line) => /^2\s+fs\.write\s+\{"path":"out\/checked\.txt".*deny.*EPERM/.test(line)),
  );
  assert.match(out.find((line) => line.startsWith("audit verify: "))!, /records, chain intact$/);
  assert.equal(out.at(-1), "summary file: tiny-calc exports add(a, b) from src/add.ts.");
});

Deno.test("demo --json: the canary is in no output and no stored record; denials are in place", async () => {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-demo-test-" }));
  try {
    const workspace = join(dir, "workspace");
    const kv = join(dir, "demo.db");
    const { code, out, err } = await sweepingDemoTemp(() =>
      demo(["--workspace", workspace, "--kv", kv, "--json"])
    );
    assert.equal(code, 0);
    assert.deepEqual(err, []);
    assert.equal(out.length, 1);
    assert.ok(!out[0].includes(CANARY));
    const report = JSON.parse(out[0]);
    assert.equal(report.state, "exited");
    assert.equal(report.result, "Summary written to out/summary.md");

    // The transcript of pid 1 shows the EPERM for the secret, without its bytes.
    const denied = report.transcript.find((m: { role: string; content: string }) =>
      m.role === "tool" && m.content.includes("secrets/token.txt")
    );
    assert.ok(denied, "a tool result names secrets/token.txt");
    assert.equal(JSON.parse(denied.content).error.code, "EPERM");

    // The tree: pid 2 is a child of pid 1, both exited.
    assert.deepEqual(
      report.processes.map((p: { pid: number; ppid: number | null; state: string }) => [
        p.pid,
        p.ppid,
        p.state,
      ]),
      [[1, null, "exited"], [2, 1, "exited"]],
    );

    // The child was denied its write, and the file does not exist; the parent's write landed.
    const childWrite = report.audit.find((r: { pid: number; syscall: string }) =>
      r.pid === 2 && r.syscall === "fs.write"
    );
    assert.equal(childWrite.decision, "deny");
    assert.equal(childWrite.code, "EPERM");
    await assert.rejects(Deno.stat(join(workspace, "out/checked.txt")), Deno.errors.NotFound);
    const parentWrite = report.audit.filter((r: { pid: number; syscall: string }) =>
      r.pid === 1 && r.syscall === "fs.write"
    ).at(-1);
    assert.equal(parentWrite.outcome, "ok");
    assert.match(await Deno.readTextFile(join(workspace, "out/summary.md")), /^# Summary\n/);

    // The secret read is audited as a denial.
    const secretRead = report.audit.find((r: { syscall: string; args: string }) =>
      r.syscall === "fs.read" && r.args.includes("secrets/token.txt")
    );
    assert.equal(secretRead.decision, "deny");
    assert.equal(secretRead.code, "EPERM");

    assert.deepEqual(report.verified, { ok: true, count: report.audit.length });

    // Nothing in the store (audit, journal, transcripts, processes) holds the canary.
    const stored = await dumpKv(kv);
    assert.ok(stored.includes("secrets/token.txt"), "the dump covers the audit");
    assert.ok(stored.includes("tiny-calc"), "the dump covers transcripts");
    assert.ok(!stored.includes(CANARY), "the secret canary is stored nowhere");

    // The kept store verifies through the CLI too.
    const out2: string[] = [];
    const verify = await main(["audit", "verify", "--kv", kv], {
      out: (line) => out2.push(line),
      err: (line) => out2.push(line),
      interactive: false,
    });
    assert.equal(verify, 0);
    assert.match(out2[0], /^audit verified: \d+ records, chain intact$/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "demo: two runs print the same output once the workspace path is replaced",
  fn: async () => {
    const runs = [];
    for (let i = 0; i < 10; i++) runs.push(normalized((await demo()).out));
    for (const run of runs) assert.equal(run, runs[0]);
  },
});

Deno.test("demo: two runs in the same workspace path print the same output", async () => {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-demo-test-" }));
  try {
    const workspace = join(dir, "workspace");
    const outputs = [];
    for (let i = 0; i < 2; i++) {
      const kv = join(dir, `demo-${i}.db`);
      const { code, out } = await sweepingDemoTemp(() =>
        demo(["--workspace", workspace, "--kv", kv])
      );
      assert.equal(code, 0);
      outputs.push(out.join("\n"));
      await Deno.remove(workspace, { recursive: true });
    }
    assert.equal(outputs[0], outputs[1]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("demo: removes its temporary directory when no workspace is given", async () => {
  const { out } = await demo();
  const workspace = out[0].match(/^Agent libOS demo \(workspace (.+)\)$/)![1];
  await assert.rejects(Deno.stat(workspace), Deno.errors.NotFound);
  await assert.rejects(Deno.stat(join(workspace, "..")), Deno.errors.NotFound);
});

Deno.test({
  name: "demo --workspace leaves no temporary directory behind",
  fn: async () => {
    const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-demo-test-" }));
    try {
      const before = await demoTempDirs();
      const { code } = await demo(["--workspace", join(dir, "workspace")]);
      assert.equal(code, 0);
      const left = [...await demoTempDirs()].filter((path) => !before.has(path));
      assert.deepEqual(left, []);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
