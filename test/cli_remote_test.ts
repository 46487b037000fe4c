/**
 * The CLI against a real control API server: every remote verb through
 * `main([...], io)` with `--server` and `--token`, roles, one-line errors,
 * and a human approval given over HTTP.
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { type ApiServer, serveApi } from "../api/server.ts";
import type { Role } from "../api/auth.ts";
import { Kernel } from "../runtime/kernel.ts";
import { resolveModelSpec } from "../runtime/model_spec.ts";
import type { ProcessState } from "../runtime/process_table.ts";
import { assertOneLineError, cli, type Result } from "./_cli.ts";

const TOKENS: Record<Role, string> = {
  admin: "remote-admin-token-000000001",
  operator: "remote-operator-token-0000002",
  approver: "remote-approver-token-0000003",
  viewer: "remote-viewer-token-00000004",
};
const SECRET = "REMOTE-CLI-SECRET-7c2e";

const READER_IMAGE = {
  name: "reader",
  version: "1.0.0",
  entry: "libos:agent",
  system: "You read files.",
  tools: ["read_file", "exit"],
  capabilities: ["fs:read:**"],
  policy: {},
};
const READER_SCRIPT = {
  turns: [
    { tool_calls: [{ name: "read_file", arguments: { path: "secret.txt" } }] },
    { content: "The repository is a demo.", exit: true },
  ],
};
/** Waits for an event on "go" and returns its data. */
const WAITER = `export default async function main(sys) {
  const event = await sys.event.wait("go");
  return event.data;
}`;

interface Fixture {
  dir: string;
  workspace: string;
  kernel: Kernel;
  server: ApiServer;
  /** Writes `name` in the fixture directory and returns its path. */
  file(name: string, content: string | object): Promise<string>;
  /** `libos ARGS --server <url> --token <role's token>` (operator by default). */
  cli(args: string[], role?: Role): Promise<Result>;
  /** Resolves once `pid` reaches `state`. */
  until(pid: number, state: ProcessState): Promise<void>;
}

async function withServer(body: (f: Fixture) => Promise<void>): Promise<void> {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-cli-remote-" }));
  const workspace = join(dir, "ws");
  await Deno.mkdir(workspace);
  await Deno.writeTextFile(join(workspace, "secret.txt"), `${SECRET}\n`);
  const kernel = await Kernel.open({
    store: join(dir, "libos.db"),
    resolveModel: resolveModelSpec,
  });
  const server = serveApi(kernel, {
    port: 0,
    tokens: {
      tokens: Object.entries(TOKENS).map(([role, token]) => ({
        name: `${role}-1`,
        token,
        role: role as Role,
      })),
    },
    stream: { pollMs: 20 },
  });
  const f: Fixture = {
    dir,
    workspace,
    kernel,
    server,
    file: async (name, content) => {
      const path = join(dir, name);
      await Deno.writeTextFile(
        path,
        typeof content === "string" ? content : JSON.stringify(content, null, 2),
      );
      return path;
    },
    cli: (args, role = "operator") =>
      cli([...args, "--server", server.url, "--token", TOKENS[role]]),
    until: async (pid, state) => {
      const reached = new Promise<void>((resolve) => {
        const off = kernel.processes.subscribe((record) => {
          if (record.pid === pid && record.state === state) {
            off();
            resolve();
          }
        });
      });
      if ((await kernel.processes.get(pid))?.state === state) return;
      await reached;
    },
  };
  try {
    await body(f);
  } finally {
    await server.shutdown();
    await kernel.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/** The `run` arguments of the reader image and its script. */
async function readerArgs(f: Fixture, image: object = READER_IMAGE): Promise<string[]> {
  const path = await f.file("reader.json", image);
  const script = await f.file("reader_turns.json", READER_SCRIPT);
  return [path, "--workspace", f.workspace, "--model", `scripted:${script}`];
}

/** Spawns the waiter image over the API; its pid, once it waits. */
async function spawnWaiter(f: Fixture): Promise<number> {
  await f.file("waiter.ts", WAITER);
  const image = await f.file("waiter.json", {
    name: "waiter",
    version: "1.0.0",
    entry: "./waiter.ts",
    capabilities: ["event:wait:go"],
  });
  const spawn = await f.cli(["spawn", image, "--workspace", f.workspace, "--json"]);
  assert.equal(spawn.code, 0, JSON.stringify(spawn.err));
  const { pid } = JSON.parse(spawn.out[0]);
  await f.until(pid, "blocked");
  return pid;
}

Deno.test("remote run registers the image, runs it and prints the in-process --json object", async () => {
  await withServer(async (f) => {
    const run = await f.cli([
      "run",
      ...await readerArgs(f),
      "--policy",
      "fs:read:secret.txt=deny",
      "--input",
      "Summarize",
      "--json",
    ]);
    assert.equal(run.code, 0, JSON.stringify(run.err));
    assert.deepEqual(run.err, []);
    assert.equal(run.out.length, 1);
    const end = JSON.parse(run.out[0]);
    assert.equal(end.pid, 1);
    assert.equal(end.image, "reader@1.0.0");
    assert.equal(end.state, "exited");
    assert.equal(end.result, "The repository is a demo.");
    assert.equal(end.usage.toolCalls, 1);
    // The operator's deny rule reached the server: the read was refused.
    const audit = await f.cli(["audit", "--pid", "1", "--json"]);
    const read = audit.out.map((l) => JSON.parse(l)).find((r) => r.syscall === "fs.read");
    assert.equal(read.decision, "deny");
    assert.equal(read.code, "EPERM");
    const transcript = JSON.stringify(await f.kernel.transcript(1));
    assert.ok(!transcript.includes(SECRET), "the secret was not read");
    // The image is registered on the server, by tag.
    const images = await f.cli(["images", "--json"]);
    assert.deepEqual(images.out.map((l) => JSON.parse(l).tag), ["reader@1.0.0"]);
    // A second run by tag needs no file.
    const again = await f.cli(["run", "reader@1.0.0", "--workspace", f.workspace]);
    assert.equal(again.code, 2, "no model: the process fails");
    assert.equal(again.out[0], "pid 2 (reader@1.0.0) failed");
  });
});

Deno.test("remote run exits 2 for a process that fails, printing how it ended", async () => {
  await withServer(async (f) => {
    const run = await f.cli(["run", (await readerArgs(f))[0], "--workspace", f.workspace]);
    assert.equal(run.code, 2);
    assert.equal(run.out[0], "pid 1 (reader@1.0.0) failed");
    assert.match(run.out[1], /^error: Cannot complete: no model provider is configured/);
    assert.equal(run.out[2], "result: null");
  });
});

Deno.test("remote spawn, ps, ps --tree, signal and kill", async () => {
  await withServer(async (f) => {
    const pid = await spawnWaiter(f);
    const ps = await f.cli(["ps"], "viewer");
    assert.equal(ps.code, 0);
    assert.match(ps.out[0], /^PID\s+PPID\s+IMAGE\s+MODEL\s+STATE\s+RESULT$/);
    assert.match(
      ps.out[1],
      new RegExp(`^${pid}\\s+-\\s+waiter@1\\.0\\.0\\s+scripted/default\\s+blocked\\(event\\)`),
    );
    const tree = await f.cli(["ps", "--tree", "--json"], "viewer");
    assert.deepEqual(tree.out.map((l) => JSON.parse(l).state), ["blocked"]);
    const pause = await f.cli(["signal", String(pid), "pause"]);
    assert.deepEqual(pause.out, [`pid ${pid} paused`]);
    assert.equal((await f.kernel.processes.get(pid))?.state, "paused");
    const kill = await f.cli(["kill", String(pid), "--json"]);
    assert.equal(kill.code, 0);
    assert.deepEqual(JSON.parse(kill.out[0]), { pid, state: "killed" });
    assertOneLineError(
      await f.cli(["kill", String(pid)]),
      new RegExp(`^libos kill: Cannot signal process ${pid}: it already ended \\(killed\\)$`),
    );
    assertOneLineError(
      await f.cli(["signal", String(pid), "bogus"]),
      /^libos signal: Unknown signal "bogus"/,
    );
  });
});

Deno.test("remote audit, audit verify, obj get and obj list", async () => {
  await withServer(async (f) => {
    // A killed waiter: its audit trail is complete once it is blocked.
    const pid = await spawnWaiter(f);
    assert.equal((await f.cli(["kill", String(pid)])).code, 0);
    // Audit records are buffered with the journal; the host commits them.
    await f.kernel.journal.flush();
    const table = await f.cli(["audit"], "viewer");
    assert.match(table.out[0], /^SEQ\s+PID\s+SYSCALL/);
    const local = [];
    for await (const r of f.kernel.audit.list()) local.push(r);
    assert.equal(table.out.length, local.length + 1);
    const json = await f.cli(["audit", "--json"], "viewer");
    assert.deepEqual(json.out.map((l) => JSON.parse(l)), local);
    const verify = await f.cli(["audit", "verify"], "viewer");
    assert.deepEqual(verify.out, [`audit verified: ${local.length} records, chain intact`]);

    await f.kernel.objects.put("shared/notes", "todo", { items: ["a"] }, { writer: 0 });
    const get = await f.cli(["obj", "get", "shared/notes", "todo"], "viewer");
    assert.equal(get.code, 0);
    assert.deepEqual(JSON.parse(get.out.join("\n")), { items: ["a"] });
    const list = await f.cli(["obj", "list", "shared/notes", "--json"], "viewer");
    assert.deepEqual(list.out.map((l) => JSON.parse(l).name), ["todo"]);
    assertOneLineError(
      await f.cli(["obj", "get", "shared/notes", "nope"], "viewer"),
      /^libos obj: Cannot get object "shared\/notes\/nope"/,
    );
    assertOneLineError(
      await f.cli(["obj", "put", "shared/notes", "x", "1"]),
      /^libos obj: Cannot put object "shared\/notes\/x" over the HTTP API/,
    );
    assert.equal(await f.kernel.objects.get("shared/notes", "x").catch(() => undefined), undefined);
  });
});

Deno.test("remote logs of an ended process, and logs --follow until a process ends", async () => {
  await withServer(async (f) => {
    const pid = await spawnWaiter(f);
    const following = f.cli(["logs", String(pid), "--follow"], "viewer");
    const followingJson = f.cli(["logs", String(pid), "--follow", "--json"], "viewer");
    await f.kernel.postEvent("go", "hello");
    const follow = await following;
    assert.equal(follow.code, 0, JSON.stringify(follow.err));
    const transitions = follow.out.filter((l) => l.startsWith("event "));
    assert.match(transitions[0], /^event \d+: new → created$/);
    assert.match(transitions.at(-1)!, /^event \d+: running → exited/);
    assert.ok(
      follow.out.some((l) => /^audit \d+: event\.wait .* allow ok$/.test(l)),
      follow.out.join("\n"),
    );
    const json = (await followingJson).out.map((l) => JSON.parse(l));
    assert.equal(json.filter((e) => e.kind === "transition").at(-1).to, "exited");
    assert.ok(json.some((e) => e.syscall === "event.wait" && e.pid === pid));

    const logs = await f.cli(["logs", String(pid), "--json"], "viewer");
    assert.equal(logs.code, 0);
    const events = [];
    for await (const e of f.kernel.processes.events({ pid })) events.push(e);
    assert.deepEqual(
      logs.out.map((l) => JSON.parse(l)).filter((e) => e.kind === "transition"),
      JSON.parse(JSON.stringify(events)),
    );
    assertOneLineError(
      await f.cli(["logs", "99"], "viewer"),
      /^libos logs: Cannot find process 99$/,
    );
  });
});

Deno.test("remote approve: a process asking a human is answered over HTTP and finishes", async () => {
  await withServer(async (f) => {
    const image = { ...READER_IMAGE, name: "asker", policy: { "fs:read:secret.txt": "ask" } };
    const spawn = await f.cli(["spawn", ...await readerArgs(f, image)]);
    assert.deepEqual(spawn.out, ["1"]);
    await f.until(1, "blocked");
    const approvals = await f.cli(["approvals", "--json"], "approver");
    assert.equal(approvals.out.length, 1);
    const request = JSON.parse(approvals.out[0]);
    assert.equal(request.kind, "permission");
    assert.equal(request.operation.capability, `fs:read:${join(f.workspace, "secret.txt")}`);
    const shown = await f.cli(["approvals"], "viewer");
    assert.equal(shown.out[0], `request ${request.id}  pid 1 (asker@1.0.0)  permission`);
    assert.ok(shown.out.includes(`  digest  sha256 ${request.operation.argsDigest}`));

    assertOneLineError(
      await f.cli(["approve", request.id], "viewer"),
      /^libos approve: Cannot answer a human request: the role "viewer" lacks the "answer" right$/,
    );
    const ended = f.kernel.waitFor(1, { timeoutMs: 20_000 });
    const approve = await f.cli(["approve", request.id], "approver");
    assert.equal(approve.code, 0, JSON.stringify(approve.err));
    assert.deepEqual(approve.out, [`${request.id}: allow_once`]);
    assert.equal((await ended).state, "exited");
    assert.ok(
      JSON.stringify(await f.kernel.transcript(1)).includes(SECRET),
      "the read went through",
    );
    assertOneLineError(
      await f.cli(["approve", request.id], "approver"),
      /^libos approve: Cannot answer human request ".*": it was already answered$/,
    );
    assert.deepEqual((await f.cli(["approvals", "--json"], "approver")).out, []);
  });
});

Deno.test("remote deny: the process gets EPERM and the secret stays unread", async () => {
  await withServer(async (f) => {
    const image = { ...READER_IMAGE, name: "asker", policy: { "fs:read:secret.txt": "ask" } };
    await f.cli(["spawn", ...await readerArgs(f, image)]);
    await f.until(1, "blocked");
    const [request] = (await f.cli(["approvals", "--json"], "approver")).out.map((l) =>
      JSON.parse(l)
    );
    const ended = f.kernel.waitFor(1, { timeoutMs: 20_000 });
    const deny = await f.cli(["deny", request.id, "--json"], "approver");
    assert.equal(JSON.parse(deny.out[0]).answer.decision, "deny_once");
    assert.equal((await ended).state, "exited");
    assert.ok(!JSON.stringify(await f.kernel.transcript(1)).includes(SECRET));
  });
});

Deno.test("remote errors: bad token, missing right, unreachable server, local-only verbs", async () => {
  await withServer(async (f) => {
    const bad = await cli(["ps", "--server", f.server.url, "--token", "not-a-real-token-000000"]);
    assertOneLineError(bad, /^libos ps: Cannot authenticate the request: the token is not valid$/);
    const args = await readerArgs(f);
    assertOneLineError(
      await f.cli(["spawn", ...args], "approver"),
      /^libos spawn: Cannot register an image: the role "approver" lacks the "write" right$/,
    );
    assertOneLineError(
      await f.cli(["spawn", "reader@1.0.0", "--workspace", f.workspace], "viewer"),
      /^libos spawn: Cannot spawn a process: the role "viewer" lacks the "write" right$/,
    );
    assert.deepEqual(await f.kernel.processes.list(), [], "no process was created");
    assertOneLineError(
      await f.cli(["checkpoint", "list"]),
      /^libos checkpoint: Cannot checkpoint processes over the HTTP API/,
    );
    for (const verb of ["demo", "serve"]) {
      assertOneLineError(
        await f.cli([verb]),
        new RegExp(`^libos ${verb}: Cannot ${verb} against a server`),
      );
    }
    assertOneLineError(
      await f.cli(["run", ...args, "--human", "deny"]),
      /^libos run: Cannot use --human with --server/,
    );
    assertOneLineError(
      await cli(["ps", "--server", f.server.url]),
      /^libos ps: Cannot use server ".*": no token; pass --token or set LIBOS_TOKEN$/,
    );
    assertOneLineError(
      await cli(["ps", "--server", f.server.url, "--kv", join(f.dir, "x.db"), "--token", "x"]),
      /^libos ps: Cannot use --server with --kv: choose one$/,
    );
  });
  // A port nothing listens on: the server above has shut down.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  assertOneLineError(
    await cli(["ps", "--server", `http://127.0.0.1:${port}`, "--token", TOKENS.viewer]),
    new RegExp(`^libos ps: Cannot reach the server at http://127\\.0\\.0\\.1:${port}: `),
  );
});

Deno.test("LIBOS_SERVER and LIBOS_TOKEN choose the server; --kv wins over LIBOS_SERVER", async () => {
  await withServer(async (f) => {
    await spawnWaiter(f);
    const saved = { server: Deno.env.get("LIBOS_SERVER"), token: Deno.env.get("LIBOS_TOKEN") };
    Deno.env.set("LIBOS_SERVER", `${f.server.url}/v1`);
    Deno.env.set("LIBOS_TOKEN", TOKENS.viewer);
    try {
      const ps = await cli(["ps", "--json"]);
      assert.equal(ps.code, 0, JSON.stringify(ps.err));
      assert.deepEqual(ps.out.map((l) => JSON.parse(l).image), ["waiter@1.0.0"]);
      const local = await cli(["ps", "--json", "--kv", join(f.dir, "other.db")]);
      assert.deepEqual(local.out, [], "the other store has no process");
    } finally {
      for (const [name, value] of [["LIBOS_SERVER", saved.server], ["LIBOS_TOKEN", saved.token]]) {
        if (value === undefined) Deno.env.delete(name!);
        else Deno.env.set(name!, value);
      }
    }
  });
});

Deno.test("in-process logs --follow reads the store until a process run elsewhere ends", async () => {
  await withServer(async (f) => {
    const pid = await spawnWaiter(f);
    // The CLI opens its own kernel on the same store; the server's kernel runs the process.
    const following = cli(["logs", String(pid), "--follow", "--kv", join(f.dir, "libos.db")]);
    await f.kernel.postEvent("go", "hello");
    const follow = await following;
    assert.equal(follow.code, 0, JSON.stringify(follow.err));
    assert.match(follow.out[0], /^event \d+: new → created$/);
    assert.match(follow.out.filter((l) => l.startsWith("event ")).at(-1)!, /→ exited$/);
    assert.ok(follow.out.some((l) => /^audit \d+: event\.wait /.test(l)));
  });
});
