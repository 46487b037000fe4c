import assert from "node:assert/strict";
import { join } from "node:path";
import { ScriptedHuman } from "../runtime/human_queue.ts";
import { Kernel } from "../runtime/kernel.ts";
import { resolveModelSpec } from "../runtime/model_spec.ts";
import { assertOneLineError, cli, type Result } from "../test/_cli.ts";

/** What one CLI invocation printed, split into lines, and its exit code. */
/** A temp directory with a store path, a workspace and image and script files. */
interface Fixture {
  dir: string;
  kv: string;
  workspace: string;
  /** Writes `name` in the fixture directory (not the workspace) and returns its path. */
  file(name: string, content: string | object): Promise<string>;
  /** `libos ARGS --kv <the fixture store>`. */
  cli(args: string[], options?: { interactive?: boolean }): Promise<Result>;
}

const SECRET = "CLI-TEST-SECRET-51d0";

const READER_IMAGE = {
  name: "reader",
  version: "1.0.0",
  description: "Reads files",
  entry: "libos:agent",
  system: "You read files.",
  tools: ["read_file", "list_dir", "write_file", "exit"],
  capabilities: ["fs:read:**", "fs:write:out/**"],
  policy: {},
};

const READER_SCRIPT = {
  turns: [
    { tool_calls: [{ name: "read_file", arguments: { path: "README.md" } }] },
    { tool_calls: [{ name: "read_file", arguments: { path: "secret.txt" } }] },
    { content: "The repository is a demo.", exit: true },
  ],
};

async function withFixture(body: (f: Fixture) => Promise<void>): Promise<void> {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-cli-test-" }));
  const workspace = join(dir, "ws");
  await Deno.mkdir(join(workspace, "src"), { recursive: true });
  await Deno.writeTextFile(join(workspace, "README.md"), "# demo\nA small demo repository.\n");
  await Deno.writeTextFile(join(workspace, "secret.txt"), `${SECRET}\n`);
  const kv = join(dir, "store", "libos.db");
  const f: Fixture = {
    dir,
    kv,
    workspace,
    file: async (name, content) => {
      const path = join(dir, name);
      await Deno.writeTextFile(
        path,
        typeof content === "string" ? content : JSON.stringify(content, null, 2),
      );
      return path;
    },
    cli: (args, options) => cli([...args, "--kv", kv], options),
  };
  try {
    await body(f);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Registers the reader image and its script; returns the `run` arguments for them. */
async function readerArgs(f: Fixture): Promise<string[]> {
  const image = await f.file("reader.json", READER_IMAGE);
  const script = await f.file("reader_turns.json", READER_SCRIPT);
  return [image, "--workspace", f.workspace, "--model", `scripted:${script}`];
}

/** The process records `ps --json` prints. */
async function processes(f: Fixture): Promise<{ pid: number; state: string; ppid: number }[]> {
  const ps = await f.cli(["ps", "--json"]);
  assert.equal(ps.code, 0);
  return ps.out.filter(Boolean).map((line) => JSON.parse(line));
}

Deno.test("run --json prints one JSON object with pid, state, result and transcript", async () => {
  await withFixture(async (f) => {
    const result = await f.cli([
      "run",
      ...await readerArgs(f),
      "--cap",
      "fs:read:**",
      "--policy",
      "fs:read:secret.txt=deny",
      "--input",
      "Summarize this repository",
      "--json",
    ]);
    assert.equal(result.code, 0, JSON.stringify(result.err));
    assert.deepEqual(result.err, []);
    assert.equal(result.out.length, 1);
    const end = JSON.parse(result.out[0]);
    assert.equal(end.pid, 1);
    assert.equal(end.state, "exited");
    assert.equal(end.result, "The repository is a demo.");
    assert.ok(Array.isArray(end.transcript));
    const roles = end.transcript.map((m: { role: string }) => m.role);
    assert.deepEqual(roles, [
      "system",
      "user",
      "assistant",
      "tool",
      "assistant",
      "tool",
      "assistant",
    ]);
    assert.equal(end.transcript[1].content, "Summarize this repository");
    assert.match(end.transcript[3].content, /A small demo repository/);
    // The operator policy denied the secret even though --cap fs:read:** covers it.
    assert.match(end.transcript[5].content, /EPERM/);
    assert.match(end.transcript[5].content, /denied by policy/);
    assert.ok(!result.out[0].includes(SECRET));
  });
});

Deno.test("run: the same read succeeds without the deny rule", async () => {
  await withFixture(async (f) => {
    const result = await f.cli(["run", ...await readerArgs(f), "--json"]);
    assert.equal(result.code, 0);
    const end = JSON.parse(result.out[0]);
    assert.ok(end.transcript[5].content.includes(SECRET));
  });
});

Deno.test("run: --cap narrows the grant below the image's ceiling", async () => {
  await withFixture(async (f) => {
    const result = await f.cli([
      "run",
      ...await readerArgs(f),
      "--cap",
      "fs:read:README.md",
      "--json",
    ]);
    assert.equal(result.code, 0);
    const end = JSON.parse(result.out[0]);
    assert.match(end.transcript[3].content, /A small demo repository/);
    assert.match(end.transcript[5].content, /EPERM/);
    assert.ok(!result.out[0].includes(SECRET));
  });
});

Deno.test("run without --json prints the end state and the result", async () => {
  await withFixture(async (f) => {
    const result = await f.cli(["run", ...await readerArgs(f)]);
    assert.equal(result.code, 0);
    assert.deepEqual(result.out, [
      "pid 1 (reader@1.0.0) exited",
      'result: "The repository is a demo."',
    ]);
    assert.deepEqual(result.err, []);
  });
});

Deno.test("run on a terminal shows progress on stderr and not with --json", async () => {
  await withFixture(async (f) => {
    const shown = await f.cli(["run", ...await readerArgs(f)], { interactive: true });
    assert.equal(shown.code, 0);
    assert.ok(shown.err.some((line) => /^\[pid 1\] runnable → running$/.test(line)), shown.err[0]);
    assert.ok(shown.err.some((line) => /^\[pid 1\] running → exited/.test(line)));
    const quiet = await f.cli(["run", ...await readerArgs(f), "--json"], { interactive: true });
    assert.equal(quiet.code, 0);
    assert.deepEqual(quiet.err, []);
  });
});

Deno.test("run: a process that fails exits 2 and says why", async () => {
  await withFixture(async (f) => {
    await f.file(
      "main.ts",
      'export default async function main() { throw new Error("the program gave up"); }\n',
    );
    const image = await f.file("failing.json", {
      name: "failing",
      version: "1.0.0",
      entry: "main.ts",
      tools: [],
      capabilities: [],
      policy: {},
    });
    const json = await f.cli(["run", image, "--workspace", f.workspace, "--json"]);
    assert.equal(json.code, 2);
    const end = JSON.parse(json.out[0]);
    assert.equal(end.state, "failed");
    assert.match(end.error.message, /the program gave up/);
    const text = await f.cli(["run", "failing@1.0.0", "--workspace", f.workspace]);
    assert.equal(text.code, 2);
    assert.equal(text.out[0], "pid 2 (failing@1.0.0) failed");
    assert.match(text.out[1], /^error: .*the program gave up/);
  });
});

Deno.test({
  name: "run --human deny: a request for a human is refused and the process goes on",
  fn: async () => {
    await withFixture(async (f) => {
      const image = await f.file("asker.json", {
        ...READER_IMAGE,
        name: "asker",
        policy: { "fs:read:secret.txt": "ask" },
      });
      const script = await f.file("asker_turns.json", READER_SCRIPT);
      const result = await f.cli([
        "run",
        image,
        "--workspace",
        f.workspace,
        "--model",
        `scripted:${script}`,
        "--human",
        "deny",
        "--json",
      ]);
      assert.equal(result.code, 0, JSON.stringify(result.err));
      const end = JSON.parse(result.out[0]);
      assert.equal(end.state, "exited");
      assert.match(end.transcript[5].content, /EPERM/);
      assert.ok(!result.out[0].includes(SECRET));
    });
  },
});

Deno.test("run with a registered tag reuses the image", async () => {
  await withFixture(async (f) => {
    const args = await readerArgs(f);
    assert.equal((await f.cli(["run", ...args])).code, 0);
    const again = await f.cli(["run", "reader@1.0.0", ...args.slice(1), "--json"]);
    assert.equal(again.code, 0);
    assert.equal(JSON.parse(again.out[0]).pid, 2);
  });
});

/** Registers a checker image in the store and runs a parent that spawns it. */
async function runTree(f: Fixture): Promise<void> {
  const kernel = await Kernel.open({ store: f.kv });
  try {
    await kernel.images.register({
      name: "checker",
      version: "1.0.0",
      entry: "libos:agent",
      tools: ["read_file", "exit"],
      capabilities: ["fs:read:**"],
      policy: {},
    });
  } finally {
    await kernel.close();
  }
  const image = await f.file("parent.json", {
    name: "parent",
    version: "1.0.0",
    entry: "libos:agent",
    tools: ["spawn_agent", "wait_agent", "exit"],
    capabilities: ["fs:read:**", "proc:spawn:checker@1.0.0"],
    policy: {},
  });
  const script = await f.file("parent_turns.json", {
    turns: [
      {
        tool_calls: [{
          name: "spawn_agent",
          arguments: { image: "checker@1.0.0", input: "Check", capabilities: ["fs:read:**"] },
        }],
      },
      { tool_calls: [{ name: "wait_agent", arguments: { pid: 2 } }] },
      { content: "checked", exit: true },
    ],
    images: {
      "checker@1.0.0": {
        turns: [
          { tool_calls: [{ name: "read_file", arguments: { path: "README.md" } }] },
          { content: "fine", exit: true },
        ],
      },
    },
  });
  const run = await f.cli([
    "run",
    image,
    "--workspace",
    f.workspace,
    "--model",
    `scripted:${script}`,
  ]);
  assert.equal(run.code, 0, JSON.stringify(run));
}

Deno.test("ps lists processes; --tree indents children; --json prints one record per line", async () => {
  await withFixture(async (f) => {
    await runTree(f);
    const ps = await f.cli(["ps"]);
    assert.equal(ps.code, 0);
    assert.match(ps.out[0], /^PID\s+PPID\s+IMAGE\s+MODEL\s+STATE\s+RESULT$/);
    assert.match(ps.out[1], /^1\s+-\s+parent@1\.0\.0\s+scripted\/default\s+exited\s+"checked"$/);
    assert.match(ps.out[2], /^2\s+1\s+checker@1\.0\.0\s+scripted\/default\s+exited\s+"fine"$/);
    assert.equal(ps.out.length, 3);

    const tree = await f.cli(["ps", "--tree"]);
    assert.equal(tree.code, 0);
    assert.match(tree.out[1], /^1\s+-\s+parent@1\.0\.0/);
    assert.match(tree.out[2], /^ {2}2\s+1\s+checker@1\.0\.0/);

    const records = await processes(f);
    assert.deepEqual(
      records.map((r) => [r.pid, r.ppid, r.state]),
      [[1, null, "exited"], [2, 1, "exited"]],
    );
  });
});

Deno.test("ps on an empty store prints the header only", async () => {
  await withFixture(async (f) => {
    const ps = await f.cli(["ps"]);
    assert.equal(ps.code, 0);
    assert.deepEqual(ps.out, ["PID  PPID  IMAGE  MODEL  STATE  RESULT"]);
    assert.deepEqual(await processes(f), []);
  });
});

Deno.test("images lists registered images, as a table and as JSON lines", async () => {
  await withFixture(async (f) => {
    await runTree(f);
    const images = await f.cli(["images"]);
    assert.equal(images.code, 0);
    assert.match(images.out[0], /^TAG\s+DIGEST\s+ENTRY\s+DESCRIPTION$/);
    const tags = images.out.slice(1).map((line) => line.split(/\s+/)[0]).sort();
    assert.deepEqual(tags, ["checker@1.0.0", "parent@1.0.0"]);
    const json = await f.cli(["images", "--json"]);
    const parsed = json.out.map((line) => JSON.parse(line));
    assert.deepEqual(parsed.map((i) => i.tag).sort(), ["checker@1.0.0", "parent@1.0.0"]);
    for (const i of parsed) assert.match(i.digest, /^[0-9a-f]{64}$/);
  });
});

Deno.test("obj put, get and list round-trip a value with versions", async () => {
  await withFixture(async (f) => {
    const put = await f.cli(["obj", "put", "shared/notes", "todo", '{"items":["a","b"]}']);
    assert.equal(put.code, 0);
    assert.deepEqual(put.out, ["version 1"]);
    const again = await f.cli(["obj", "put", "shared/notes", "todo", '{"items":[]}', "--json"]);
    assert.deepEqual(again.out.map((l) => JSON.parse(l)), [{ version: 2 }]);

    const get = await f.cli(["obj", "get", "shared/notes", "todo"]);
    assert.equal(get.code, 0);
    assert.deepEqual(JSON.parse(get.out.join("\n")), { items: [] });
    const getJson = await f.cli(["obj", "get", "shared/notes", "todo", "--json"]);
    const record = JSON.parse(getJson.out[0]);
    assert.equal(record.version, 2);
    assert.equal(record.writer, 0);
    assert.deepEqual(record.value, { items: [] });

    const list = await f.cli(["obj", "list", "shared/notes"]);
    assert.equal(list.code, 0);
    assert.match(list.out[0], /^NAME\s+VERSION\s+TYPE\s+WRITER$/);
    assert.match(list.out[1], /^todo\s+2\s+0$/);
    const listJson = await f.cli(["obj", "list", "shared/notes", "--json"]);
    assert.deepEqual(listJson.out.map((l) => JSON.parse(l).name), ["todo"]);
  });
});

Deno.test("obj: bad input is one line on stderr", async () => {
  await withFixture(async (f) => {
    assertOneLineError(
      await f.cli(["obj", "put", "notes", "x", "{not json"]),
      /^libos obj: Cannot put object "notes\/x": the value is not JSON$/,
    );
    assertOneLineError(await f.cli(["obj", "get", "notes", "missing"]), /notes\/missing/);
    assertOneLineError(await f.cli(["obj", "zap"]), /^libos obj: Usage: libos obj /);
    assertOneLineError(await f.cli(["obj", "list"]), /^libos obj: Usage: /);
  });
});

Deno.test("audit --json prints one record per line; --pid filters; the table has a header", async () => {
  await withFixture(async (f) => {
    await runTree(f);
    const all = await f.cli(["audit", "--json"]);
    assert.equal(all.code, 0);
    const records = all.out.map((line) => JSON.parse(line));
    assert.ok(records.length > 4);
    assert.deepEqual(records.map((r) => r.seq), records.map((_, i) => i + 1));
    for (const r of records) {
      assert.match(r.hash, /^[0-9a-f]{64}$/);
      assert.ok(typeof r.syscall === "string" && typeof r.decision === "string");
    }
    assert.deepEqual([...new Set(records.map((r) => r.pid))].sort(), [1, 2]);

    const child = await f.cli(["audit", "--pid", "2", "--json"]);
    const childRecords = child.out.map((line) => JSON.parse(line));
    assert.ok(childRecords.length > 0);
    assert.ok(childRecords.every((r) => r.pid === 2));
    assert.deepEqual(childRecords, records.filter((r) => r.pid === 2));

    const table = await f.cli(["audit", "--pid", "2"]);
    assert.match(table.out[0], /^SEQ\s+PID\s+SYSCALL\s+ARGS\s+DECISION\s+OUTCOME$/);
    assert.equal(table.out.length, childRecords.length + 1);
    assert.ok(table.out.slice(1).every((line) => /^\d+\s+2\s/.test(line)));
  });
});

Deno.test("audit verify exits 0 on an intact chain and 1 after a record is edited", async () => {
  await withFixture(async (f) => {
    await f.cli(["run", ...await readerArgs(f)]);
    const ok = await f.cli(["audit", "verify"]);
    assert.equal(ok.code, 0);
    assert.match(ok.out[0], /^audit verified: \d+ records, chain intact$/);
    const okJson = await f.cli(["audit", "verify", "--json"]);
    assert.equal(JSON.parse(okJson.out[0]).ok, true);

    const kv = await Deno.openKv(f.kv);
    try {
      const entry = await kv.get<Record<string, unknown>>(["audit", "rec", 2]);
      assert.ok(entry.value);
      await kv.set(["audit", "rec", 2], { ...entry.value, decision: "deny" });
    } finally {
      kv.close();
    }
    const broken = await f.cli(["audit", "verify"]);
    assert.equal(broken.code, 1);
    assert.match(broken.out[0], /^audit BROKEN at seq 2: /);
    const brokenJson = await f.cli(["audit", "verify", "--json"]);
    assert.equal(brokenJson.code, 1);
    assert.deepEqual(
      (({ ok, seq }) => ({ ok, seq }))(JSON.parse(brokenJson.out[0])),
      { ok: false, seq: 2 },
    );
  });
});

Deno.test("audit verify detects a removed record", async () => {
  await withFixture(async (f) => {
    await f.cli(["run", ...await readerArgs(f)]);
    const kv = await Deno.openKv(f.kv);
    try {
      await kv.delete(["audit", "rec", 3]);
    } finally {
      kv.close();
    }
    const broken = await f.cli(["audit", "verify"]);
    assert.equal(broken.code, 1);
    assert.match(broken.out[0], /^audit BROKEN at seq 3: /);
  });
});

Deno.test("logs PID prints the transitions then the transcript", async () => {
  await withFixture(async (f) => {
    await f.cli(["run", ...await readerArgs(f)]);
    const logs = await f.cli(["logs", "1"]);
    assert.equal(logs.code, 0);
    assert.deepEqual(logs.out.slice(0, 4), [
      "event 1: new → created",
      "event 2: created → runnable",
      "event 3: runnable → running",
      "event 4: running → exited",
    ]);
    assert.match(logs.out[4], /^system\s+You read files\.$/);
    assert.match(logs.out[6], /^assistant → read_file\(\{"path":"README\.md"\}\)$/);
    assert.match(logs.out.at(-1)!, /^assistant The repository is a demo\.$/);
    const json = await f.cli(["logs", "1", "--json"]);
    const lines = json.out.map((line) => JSON.parse(line));
    assert.equal(lines[0].kind, "transition");
    assert.equal(lines.at(-1).role, "assistant");
  });
});

Deno.test("spawn prints a pid and leaves the process runnable; kill and signal end it", async () => {
  await withFixture(async (f) => {
    const args = await readerArgs(f);
    const spawned = await f.cli(["spawn", ...args]);
    assert.equal(spawned.code, 0);
    assert.deepEqual(spawned.out, ["1"]);
    const second = await f.cli(["spawn", "reader@1.0.0", ...args.slice(1), "--json"]);
    assert.deepEqual(second.out.map((l) => JSON.parse(l)), [{ pid: 2 }]);
    assert.deepEqual((await processes(f)).map((p) => [p.pid, p.state]), [
      [1, "runnable"],
      [2, "runnable"],
    ]);

    const kill = await f.cli(["kill", "1"]);
    assert.equal(kill.code, 0);
    assert.deepEqual(kill.out, ["pid 1 killed"]);
    const term = await f.cli(["signal", "2", "terminate", "--json"]);
    assert.equal(term.code, 0);
    assert.deepEqual(JSON.parse(term.out[0]), { pid: 2, state: "killed" });
    assert.deepEqual((await processes(f)).map((p) => [p.pid, p.state]), [
      [1, "killed"],
      [2, "killed"],
    ]);
    const logs = await f.cli(["logs", "1"]);
    assert.match(logs.out.at(-1)!, /runnable → killed \(kill signal from operator\)/);
  });
});

Deno.test("kill and signal: bad targets and signals are one line on stderr", async () => {
  await withFixture(async (f) => {
    const spawned = await f.cli(["spawn", ...await readerArgs(f)]);
    assert.equal(spawned.code, 0);
    assertOneLineError(await f.cli(["kill", "99"]), /^libos kill: Cannot find process 99$/);
    assertOneLineError(await f.cli(["kill", "abc"]), /Expected PID to be a positive integer/);
    assertOneLineError(await f.cli(["kill"]), /Expected PID to be a positive integer, got ""/);
    assertOneLineError(
      await f.cli(["signal", "1", "bogus"]),
      /^libos signal: Unknown signal "bogus"/,
    );
    assertOneLineError(await f.cli(["signal", "1"]), /^libos signal: Unknown signal ""/);
    assertOneLineError(
      await f.cli(["signal", "1", "resume"]),
      /^libos signal: Cannot resume process 1: it is runnable, not paused$/,
    );
    assertOneLineError(
      await f.cli(["signal", "1", "interrupt"]),
      /^libos signal: Cannot interrupt process 1: it is not blocked in a syscall$/,
    );
    assert.equal((await processes(f))[0].state, "runnable");
    assert.equal((await f.cli(["kill", "1"])).code, 0);
    assertOneLineError(await f.cli(["kill", "1"]), /Cannot signal process 1: it has killed/);
  });
});

Deno.test("signal pause parks a runnable process as paused", async () => {
  await withFixture(async (f) => {
    assert.deepEqual((await f.cli(["spawn", ...await readerArgs(f)])).out, ["1"]);
    const pause = await f.cli(["signal", "1", "pause"]);
    assert.equal(pause.code, 0);
    assert.deepEqual(pause.out, ["pid 1 paused"]);
    assert.equal((await processes(f))[0].state, "paused");
    const logs = await f.cli(["logs", "1"]);
    assert.equal(logs.out.at(-1), "event 3: runnable → paused (pause signal from operator)");
  });
});

Deno.test("serve and status say how commands are confined; --exec-sandbox none is printed", async () => {
  await withFixture(async (f) => {
    const status = await f.cli(["status"]);
    assert.equal(status.code, 0, status.err.join("\n"));
    assert.match(status.out[0], /^exec sandbox: bwrap \(commands run in a bubblewrap sandbox/);
    assert.equal(
      status.out[1],
      "cells: shared by one process tree, at most 16 Workers each; a blocked process keeps its Worker 1000 ms",
    );
    assert.equal(status.out[2], "live processes: 0");
    const principal = await f.cli(["status", "--cell-sharing", "principal", "--json"]);
    assert.equal(JSON.parse(principal.out[0]).cells.sharing, "principal");
    assertOneLineError(await f.cli(["status", "--cell-sharing", "all"]), /"tree" or "principal"/);
    const none = await f.cli(["serve", "--until-idle", "--exec-sandbox", "none"]);
    assert.equal(none.code, 0);
    assert.equal(
      none.err[0],
      "libos serve: exec sandbox none: commands run unconfined as the host user (--exec-sandbox none)",
    );
    const json = await f.cli(["status", "--exec-sandbox", "none", "--json"]);
    assert.equal(JSON.parse(json.out[0]).execSandbox, "none");
    assertOneLineError(await f.cli(["serve", "--exec-sandbox", "off"]), /"bwrap" or "none"/);
    const spawn = await f.cli(["spawn", ...await readerArgs(f), "--exec-sandbox", "none"]);
    assertOneLineError(spawn, /Cannot use --exec-sandbox with spawn/);
  });
});

Deno.test("spawn then serve --until-idle runs the process to its end", async () => {
  await withFixture(async (f) => {
    assert.deepEqual((await f.cli(["spawn", ...await readerArgs(f)])).out, ["1"]);
    const serve = await f.cli(["serve", "--until-idle"]);
    assert.equal(serve.code, 0);
    assert.deepEqual(serve.out, []);
    assert.equal(serve.err.length, 2, serve.err.join("\n"));
    assert.match(serve.err[0], /^libos serve: exec sandbox bwrap: commands run in a bubblewrap/);
    assert.equal(serve.err[1], "libos serve: resumed 1 process(es)");
    const [proc] = await processes(f);
    assert.equal(proc.state, "exited");
    const logs = await f.cli(["logs", "1", "--json"]);
    const last = JSON.parse(logs.out.at(-1)!);
    assert.equal(last.content, "The repository is a demo.");
  });
});

/** Spawns a reader whose policy asks a human about secret.txt and runs it until it waits. */
async function parkOnHuman(f: Fixture): Promise<string> {
  const image = await f.file("asker.json", {
    ...READER_IMAGE,
    name: "asker",
    policy: { "fs:read:secret.txt": "ask" },
  });
  const script = await f.file("asker_turns.json", READER_SCRIPT);
  const spawn = await f.cli([
    "spawn",
    image,
    "--workspace",
    f.workspace,
    "--model",
    `scripted:${script}`,
  ]);
  assert.deepEqual(spawn.out, ["1"]);
  const kernel = await Kernel.open({
    store: f.kv,
    resolveModel: resolveModelSpec,
    human: new ScriptedHuman({ answers: [] }),
  });
  try {
    const settled = new Promise<string>((resolve) => {
      const off = kernel.processes.subscribe((record) => {
        if (record.pid === 1 && ["blocked", "exited", "failed", "killed"].includes(record.state)) {
          off();
          resolve(record.state);
        }
      });
    });
    await kernel.recover();
    assert.equal(await settled, "blocked");
  } finally {
    await kernel.close();
  }
  const approvals = await f.cli(["approvals", "--json"]);
  assert.equal(approvals.code, 0);
  assert.equal(approvals.out.length, 1);
  const request = JSON.parse(approvals.out[0]);
  assert.equal(request.pid, 1);
  assert.equal(request.kind, "permission");
  assert.equal(request.operation.syscall, "fs.read");
  assert.equal(request.operation.capability, `fs:read:${join(f.workspace, "secret.txt")}`);
  return request.id;
}

Deno.test("approvals lists a pending request; approve lets the call through once", async () => {
  await withFixture(async (f) => {
    const id = await parkOnHuman(f);
    assert.deepEqual((await processes(f)).map((p) => p.state), ["blocked"]);
    const shown = await f.cli(["approvals"]);
    assert.equal(shown.out[0], `request ${id}  pid 1 (asker@1.0.0)  permission`);
    assert.equal(shown.out[1], `  wants   fs:read:${join(f.workspace, "secret.txt")}`);
    assert.equal(shown.out[2], "  call    fs.read");
    assert.equal(shown.out[3], '  args    {"path":"secret.txt"}');
    assert.match(shown.out[4], /^ {2}digest {2}sha256 [0-9a-f]{64}$/);

    const approve = await f.cli(["approve", id]);
    assert.equal(approve.code, 0);
    assert.deepEqual(approve.out, [`${id}: allow_once`]);
    assertOneLineError(await f.cli(["approve", id]), new RegExp(id));
    assert.deepEqual((await f.cli(["approvals", "--json"])).out, []);

    const serve = await f.cli(["serve", "--until-idle", "--human", "deny"]);
    assert.equal(serve.code, 0);
    assert.equal((await processes(f))[0].state, "exited");
    const logs = await f.cli(["logs", "1", "--json"]);
    assert.ok(
      logs.out.some((line) => line.includes(SECRET)),
      "the approved read returned the file",
    );
  });
});

Deno.test("deny refuses a pending request; the program gets EPERM", async () => {
  await withFixture(async (f) => {
    const id = await parkOnHuman(f);
    const deny = await f.cli(["deny", id]);
    assert.equal(deny.code, 0);
    assert.deepEqual(deny.out, [`${id}: deny_once`]);
    const serve = await f.cli(["serve", "--until-idle"]);
    assert.equal(serve.code, 0);
    assert.equal((await processes(f))[0].state, "exited");
    const logs = await f.cli(["logs", "1", "--json"]);
    assert.ok(!logs.out.some((line) => line.includes(SECRET)), "the secret was not read");
    const tool = logs.out.map((line) => JSON.parse(line)).filter((m) => m.role === "tool").at(-1);
    assert.equal(JSON.parse(tool.content).error.code, "EPERM");
  });
});

Deno.test("approve and deny: unknown requests and missing ids are one line on stderr", async () => {
  await withFixture(async (f) => {
    assertOneLineError(
      await f.cli(["approve", "nope"]),
      /^libos approve: Cannot approve request "nope": no such request$/,
    );
    assertOneLineError(
      await f.cli(["deny", "nope"]),
      /^libos deny: Cannot deny request "nope": no such request$/,
    );
    assertOneLineError(await f.cli(["approve"]), /^libos approve: Usage: libos approve ID/);
    const empty = await f.cli(["approvals"]);
    assert.deepEqual(empty.out, ["no pending requests"]);
  });
});

Deno.test("checkpoint save, list, fork and restore a process", async () => {
  await withFixture(async (f) => {
    assert.equal((await f.cli(["run", ...await readerArgs(f)])).code, 0);
    const save = await f.cli(["checkpoint", "save", "1"]);
    assert.equal(save.code, 0);
    const [id] = save.out;
    assert.match(id, /^[0-9a-f-]{36}$/);
    const list = await f.cli(["checkpoint", "list", "--json"]);
    assert.deepEqual(list.out.map((l) => JSON.parse(l)).map((s) => [s.id, s.root, s.pids]), [
      [id, 1, [1]],
    ]);
    const fork = await f.cli(["checkpoint", "fork", id]);
    assert.deepEqual(fork.out, ["2"]);
    assert.deepEqual((await processes(f)).map((p) => [p.pid, p.state]), [
      [1, "exited"],
      [2, "runnable"],
    ]);
    const restore = await f.cli(["checkpoint", "restore", id]);
    assert.equal(restore.code, 0);
    assert.equal(restore.out[0], "restored 1");
    assertOneLineError(
      await f.cli(["checkpoint", "restore", "nope"]),
      /^libos checkpoint: Cannot find snapshot "nope"$/,
    );
    assertOneLineError(
      await f.cli(["checkpoint", "save", "99"]),
      /^libos checkpoint: Cannot find process 99$/,
    );
    assertOneLineError(await f.cli(["checkpoint", "bogus"]), /^libos checkpoint: Usage: /);
  });
});

Deno.test("LIBOS_KV chooses the store when --kv is absent", async () => {
  await withFixture(async (f) => {
    await f.cli(["obj", "put", "notes", "a", "1"]);
    const before = Deno.env.get("LIBOS_KV");
    Deno.env.set("LIBOS_KV", f.kv);
    try {
      const get = await cli(["obj", "get", "notes", "a"]);
      assert.equal(get.code, 0);
      assert.deepEqual(get.out, ["1"]);
    } finally {
      if (before === undefined) Deno.env.delete("LIBOS_KV");
      else Deno.env.set("LIBOS_KV", before);
    }
  });
});

Deno.test("help prints the usage and exits 0", async () => {
  for (const args of [["help"], ["--help"], ["-h"]]) {
    const result = await cli(args);
    assert.equal(result.code, 0);
    assert.match(result.out[0], /^Usage: libos VERB/);
    const verbs = ["demo", "run", "spawn", "serve", "ps", "images", "kill", "signal", "obj"];
    verbs.push("audit", "logs", "approvals", "approve", "deny", "checkpoint");
    for (const verb of verbs) {
      assert.ok(result.out.some((line) => line.includes(verb)), verb);
    }
  }
});

Deno.test("bad input: an unknown verb", async () => {
  assertOneLineError(await cli(["frobnicate"]), /^libos: unknown verb "frobnicate"/);
});

Deno.test("bad input: an unknown flag", async () => {
  await withFixture(async (f) => {
    assertOneLineError(await f.cli(["ps", "--bogus"]), /^libos ps: Cannot parse .*--bogus/);
    assertOneLineError(
      await f.cli(["run", ...await readerArgs(f), "--capability", "fs:read:**"]),
      /^libos run: Cannot parse .*--capability/,
    );
  });
});

Deno.test("bad input: an unknown image", async () => {
  await withFixture(async (f) => {
    assertOneLineError(
      await f.cli(["run", "nope@1.0.0", "--workspace", f.workspace]),
      /^libos run: Cannot find image "nope@1\.0\.0": no such file or registered tag$/,
    );
    assertOneLineError(
      await f.cli(["spawn", join(f.dir, "missing.json"), "--workspace", f.workspace]),
      /Cannot find image ".*missing\.json"/,
    );
    assertOneLineError(await f.cli(["run"]), /^libos run: Usage: libos run IMAGE/);
    assert.deepEqual(await processes(f), []);
  });
});

Deno.test("bad input: a malformed --cap creates no process", async () => {
  await withFixture(async (f) => {
    const args = await readerArgs(f);
    assertOneLineError(
      await f.cli(["run", ...args, "--cap", "nonsense"]),
      /^libos run: Cannot parse capability "nonsense"/,
    );
    assertOneLineError(await f.cli(["run", ...args, "--cap", "fs:read"]), /"fs:read"/);
    assertOneLineError(await f.cli(["spawn", ...args, "--cap", "bogus:read:x"]), /"bogus:read:x"/);
    assert.deepEqual(await processes(f), []);
  });
});

Deno.test("bad input: a --cap beyond the image's ceiling creates no process", async () => {
  await withFixture(async (f) => {
    assertOneLineError(
      await f.cli(["run", ...await readerArgs(f), "--cap", "fs:write:**"]),
      /^libos run: Cannot grant "fs:write:.*": beyond the ceiling of image "reader@1\.0\.0"$/,
    );
    assert.deepEqual(await processes(f), []);
  });
});

Deno.test("bad input: a malformed --policy creates no process", async () => {
  await withFixture(async (f) => {
    const args = await readerArgs(f);
    assertOneLineError(
      await f.cli(["run", ...args, "--policy", "fs:read:**"]),
      /^libos run: Cannot parse policy "fs:read:\*\*": expected PATTERN=DECISION/,
    );
    assertOneLineError(
      await f.cli(["run", ...args, "--policy", "fs:read:**=maybe"]),
      /decision "maybe" is not allow, deny or ask/,
    );
    assert.deepEqual(await processes(f), []);
  });
});

Deno.test("bad input: an unreadable image file", async () => {
  await withFixture(async (f) => {
    const path = join(f.dir, "unreadable.json");
    // Bytes that are not UTF-8, and no read permission: unreadable either way.
    await Deno.writeFile(path, new Uint8Array([0xff, 0xfe, 0x00, 0x7b]));
    await Deno.chmod(path, 0o000);
    assertOneLineError(
      await f.cli(["run", path, "--workspace", f.workspace]),
      /^libos run: Cannot load image ".*unreadable\.json": /,
    );
    assert.deepEqual(await processes(f), []);
  });
});

Deno.test("bad input: invalid image JSON", async () => {
  await withFixture(async (f) => {
    const broken = await f.file("broken.json", '{ "name": "x", ');
    assertOneLineError(
      await f.cli(["run", broken, "--workspace", f.workspace]),
      /^libos run: Cannot load image ".*broken\.json": invalid JSON: /,
    );
    const wrong = await f.file("wrong.json", { name: "Bad Name!", version: "1" });
    assertOneLineError(
      await f.cli(["run", wrong, "--workspace", f.workspace]),
      /^libos run: Cannot load image ".*wrong\.json": name: /,
    );
    assert.deepEqual(await processes(f), []);
  });
});

Deno.test({
  name: "bad input: an unreadable model script",
  fn: async () => {
    await withFixture(async (f) => {
      const image = await f.file("reader.json", READER_IMAGE);
      const missing = join(f.dir, "no_such_turns.json");
      assertOneLineError(
        await f.cli(["run", image, "--workspace", f.workspace, "--model", `scripted:${missing}`]),
        /Cannot load model script ".*no_such_turns\.json"/,
      );
      const bad = await f.file("bad_turns.json", { turns: [{ tool_call: [] }] });
      assertOneLineError(
        await f.cli(["run", image, "--workspace", f.workspace, "--model", `scripted:${bad}`]),
        /Cannot load model script ".*bad_turns\.json"/,
      );
      assert.deepEqual(await processes(f), []);
    });
  },
});

Deno.test("bad input: an unknown model provider", async () => {
  await withFixture(async (f) => {
    assertOneLineError(
      await f.cli(["run", ...(await readerArgs(f)).slice(0, 3), "--model", "nosuch:x"]),
      /^libos run: Cannot use model "nosuch:x": unknown provider "nosuch"$/,
    );
    assert.deepEqual(await processes(f), []);
  });
});

Deno.test("bad input: a missing workspace", async () => {
  await withFixture(async (f) => {
    const image = await f.file("reader.json", READER_IMAGE);
    assertOneLineError(
      await f.cli(["run", image, "--workspace", join(f.dir, "nowhere")]),
      /^libos run: Cannot use workspace ".*nowhere": it does not exist$/,
    );
  });
});

Deno.test("bad input: an unknown --human mode or an unreadable human script", async () => {
  await withFixture(async (f) => {
    const args = await readerArgs(f);
    assertOneLineError(
      await f.cli(["run", ...args, "--human", "maybe"]),
      /^libos run: Cannot use --human "maybe": expected scripted:FILE, deny, queue or interactive$/,
    );
    assertOneLineError(
      await f.cli(["run", ...args, "--human", `scripted:${join(f.dir, "no_answers.json")}`]),
      /^libos run: Cannot load human script ".*no_answers\.json": /,
    );
    const bad = await f.file("bad_answers.json", { answer: [] });
    assertOneLineError(
      await f.cli(["run", ...args, "--human", `scripted:${bad}`]),
      /^libos run: Cannot load human script ".*bad_answers\.json": expected \{ "answers": \[\.\.\.\] \}$/,
    );
    assert.deepEqual(await processes(f), []);
  });
});

Deno.test("bad input: --kv pointing into a place that cannot be created", async () => {
  await withFixture(async (f) => {
    const file = await f.file("plain.txt", "not a directory");
    const result = await cli(["ps", "--kv", join(file, "sub", "libos.db")]);
    assertOneLineError(result, /^libos ps: /);
    assert.equal(await Deno.readTextFile(file), "not a directory");
  });
});

Deno.test("bad input: audit subcommands and --pid", async () => {
  await withFixture(async (f) => {
    assertOneLineError(await f.cli(["audit", "bogus"]), /Unknown audit subcommand "bogus"/);
    assertOneLineError(await f.cli(["audit", "--pid", "x"]), /Expected --pid to be a positive/);
    assertOneLineError(await f.cli(["logs", "7"]), /^libos logs: Cannot find process 7$/);
  });
});
