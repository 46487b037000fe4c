/**
 * `exec.run` in the OS sandbox, end to end: a program in a zero-permission
 * cell runs commands whose view of the host is exactly its `fs`
 * capabilities, with no network, and whose process tree dies with the call.
 * Each attack asserts its effect did not happen; where it is safe, the same
 * call under `--exec-sandbox none` shows that it would have.
 *
 * These tests need a working bubblewrap: they fail (never skip) without it.
 */

import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { AuditRecord } from "../broker/audit.ts";
import { type Harness, withHarness } from "./_harness.ts";
import { Kernel, type KernelOptions } from "../runtime/kernel.ts";
import { HOST_PERMISSIONS } from "./_host_permissions.ts";

/** Runs `input.argv`; the result keeps the first 4 KiB of each output stream. */
const EXEC = `export default async function main(sys, input) {
  try {
    const value = await sys.exec.run(input.argv, input.options ?? {});
    return {
      ok: true,
      value: { ...value, stdout: value.stdout.slice(0, 4096), stderr: value.stderr.slice(0, 4096) },
    };
  } catch (error) {
    return { ok: false, code: error.code, message: error.message };
  }
}`;

interface Outcome {
  ok: boolean;
  code?: string;
  message?: string;
  value?: { code: number; stdout: string; stderr: string; timedOut: boolean; truncated: boolean };
}

async function execIn(
  h: Harness,
  argv: string[],
  capabilities: string[],
  options: { cwd?: string; timeoutMs?: number } = {},
): Promise<{ outcome: Outcome; pid: number }> {
  const end = await h.run(EXEC, {
    input: { argv, options },
    image: { capabilities, policy: {} },
  });
  assert.equal(end.state, "exited", JSON.stringify(end.error));
  return { outcome: end.result as Outcome, pid: end.pid };
}

/** Runs `body` with a harness whose kernel sandboxes commands (default) or not. */
function both(
  body: (h: Harness, sandboxed: boolean) => Promise<void>,
): Promise<[void, void]> {
  const run = (options: KernelOptions, sandboxed: boolean) =>
    withHarness(async (h) => {
      if (sandboxed) {
        const status = await h.kernel.execSandboxStatus();
        assert.equal(status.mode, "bwrap", status.detail);
      }
      await body(h, sandboxed);
    }, options);
  return Promise.all([run({}, true), run({ execSandbox: "none" }, false)]);
}

async function exists(path: string): Promise<boolean> {
  return await Deno.lstat(path).then(() => true, () => false);
}

/**
 * Live processes whose command line holds `marker`: at once, or (`wait`)
 * after they had a generous time to go.
 */
async function leftBehind(
  marker: string,
  wait = true,
): Promise<{ pid: number; args: string }[]> {
  const find = () => {
    const { stdout } = new Deno.Command("ps", { args: ["-eo", "pid=,stat=,args="] }).outputSync();
    return new TextDecoder().decode(stdout).split("\n").flatMap((line) => {
      const match = /^\s*(\d+)\s+(\S+)\s+(.*)$/.exec(line);
      if (!match || !match[3].includes(marker) || match[2].startsWith("Z")) return [];
      return [{ pid: Number(match[1]), args: match[3] }];
    });
  };
  const deadline = performance.now() + 20_000;
  while (wait && find().length && performance.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return find();
}

Deno.test("with fs:read:src/** a command reads src and nothing else of the host", async () => {
  const home = Deno.env.get("HOME") ?? "/root";
  const sshDir = join(home, ".ssh");
  const key = join(sshDir, `libos_test_id_${crypto.randomUUID()}`);
  const canary = `ssh-canary-${crypto.randomUUID()}`;
  const madeSsh = !(await exists(sshDir));
  await Deno.mkdir(sshDir, { recursive: true, mode: 0o700 });
  await Deno.writeTextFile(key, canary, { mode: 0o600 });
  try {
    await both(async (h, sandboxed) => {
      await Deno.mkdir(join(h.workspace, "src"));
      await Deno.writeTextFile(join(h.workspace, "src", "a.txt"), "source text");
      const secret = `outside-canary-${crypto.randomUUID()}`;
      await Deno.writeTextFile(join(h.outside, "secret"), secret);
      const caps = ["exec:run:cat", "fs:read:src/**"];
      const ok = await execIn(h, ["cat", "src/a.txt"], caps);
      assert.equal(ok.outcome.value?.stdout, "source text", JSON.stringify(ok.outcome));
      // The host's /etc/shadow is read only inside the sandbox, where it is absent.
      const attacks: [string, string][] = [
        ["../outside/secret", secret],
        [key, canary],
        ...(sandboxed ? [["/etc/shadow", "root:"] as [string, string]] : []),
      ];
      for (const [path, needle] of attacks) {
        const { outcome } = await execIn(h, ["cat", path], caps);
        assert.equal(outcome.ok, true, outcome.message);
        assert.equal(outcome.value!.stdout.includes(needle), !sandboxed, `cat ${path}`);
        if (sandboxed) assert.match(outcome.value!.stderr, /No such file or directory/);
      }
    });
  } finally {
    await Deno.remove(madeSsh ? sshDir : key, { recursive: true });
  }
});

Deno.test("the KV store is out of a command's view even under a granted tree", async () => {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-store-view-" }));
  const store = join(root, ".libos", "libos.db");
  await Deno.mkdir(dirname(store));
  try {
    for (const sandboxed of [true, false]) {
      await withHarness(async (h) => {
        // Something only the store holds.
        const canary = `store-canary-${crypto.randomUUID()}`;
        await h.kernel.store.kv.set(["test", "canary"], canary);
        // The program reports whether the canary came through, not the store's bytes.
        const end = await h.run(
          `export default async function main(sys, input) {
            const r = await sys.exec.run(["sh", "-c", "cat " + input.store + "*"]);
            return { leaked: r.stdout.includes(input.canary), stderr: r.stderr };
          }`,
          {
            input: { store, canary },
            image: { capabilities: ["exec:run:cat", "exec:run:*", `fs:read:${root}/**`] },
          },
        );
        assert.equal(end.state, "exited", JSON.stringify(end.error));
        const result = end.result as { leaked: boolean; stderr: string };
        assert.equal(result.leaked, !sandboxed, result.stderr);
      }, { store, ...(sandboxed ? {} : { execSandbox: "none" as const }) });
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("a command cannot rename the store or a policy-hidden path out of its protection", async () => {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-rename-" }));
  const ws = join(root, "ws");
  const store = join(ws, "data", ".libos", "libos.db");
  await Deno.mkdir(dirname(store), { recursive: true });
  await Deno.mkdir(join(ws, "keys", "private"), { recursive: true });
  await Deno.writeTextFile(join(ws, "keys", "private", "id"), "key");
  try {
    const kernel = await Kernel.open({ store });
    try {
      const tag = (await kernel.images.register({
        name: "mover",
        version: "1.0.0",
        entry: "./main.ts",
        tools: [],
        capabilities: ["fs:read,write:**", "exec:run:*"],
        policy: { "fs:read:keys/private/**": "deny" },
      }, { entrySource: EXEC })).tag;
      const end = await kernel.run({
        image: tag,
        workspace: ws,
        input: { argv: ["sh", "-c", "mv data moved; mv keys stolen; echo new > made.txt; ls"] },
      });
      assert.equal(end.state, "exited", JSON.stringify(end.error));
      const outcome = end.result as Outcome;
      assert.equal(outcome.ok, true, outcome.message);
      // The store and the hidden keys stay where their protection names them.
      assert.equal(await exists(store), true);
      assert.equal(await exists(join(ws, "keys", "private", "id")), true);
      assert.equal(await exists(join(ws, "moved")), false);
      assert.equal(await exists(join(ws, "stolen")), false);
      // The entries of the workspace stay writable; its top level is read-only.
      assert.equal(await exists(join(ws, "made.txt")), false);
    } finally {
      await kernel.close();
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("a script the agent wrote and runs through a granted sh sees the same view", async () => {
  await both(async (h, sandboxed) => {
    const secret = `outside-canary-${crypto.randomUUID()}`;
    await Deno.writeTextFile(join(h.outside, "secret"), secret);
    await Deno.mkdir(join(h.workspace, "src"));
    // What a compromised agent with fs:write on src would leave there.
    await Deno.writeTextFile(
      join(h.workspace, "src", "steal.sh"),
      `cat ${join(h.outside, "secret")}\ncat /etc/shadow\necho done\n`,
    );
    // Even a grant to run anything: the view is what confines the script.
    const { outcome } = await execIn(h, ["sh", "src/steal.sh"], [
      "exec:run:*",
      "fs:read,write:src/**",
    ]);
    assert.equal(outcome.ok, true, outcome.message);
    assert.match(outcome.value!.stdout, /done/);
    assert.equal(outcome.value!.stdout.includes(secret), !sandboxed);
  });
});

Deno.test("a process that leaves the command's session still dies with the call", async () => {
  await both(async (h, sandboxed) => {
    // A unique duration marks the sleep in the host's process list.
    const marker = `9${String(Math.floor(Math.random() * 1e8)).padStart(8, "0")}.25`;
    // The command returns once its child has left the session (setsid) for good.
    const script = `f=$(mktemp -u) && mkfifo "$f" && ` +
      `(setsid sh -c "echo ready > $f; exec sleep ${marker}" &) && read ready < "$f"; rm -f "$f"`;
    const { outcome } = await execIn(h, ["sh", "-c", script], ["exec:run:*"]);
    assert.equal(outcome.ok, true, outcome.message);
    const left = await leftBehind(marker, sandboxed);
    for (const { pid } of left) Deno.kill(pid, "SIGKILL");
    assert.equal(left.length, sandboxed ? 0 : 1, JSON.stringify(left));
  });
});

Deno.test("the process limit stops a command from starting more processes than allowed", async () => {
  await both(async (h, sandboxed) => {
    const marker = `8${String(Math.floor(Math.random() * 1e8)).padStart(8, "0")}.5`;
    // 400 background sleeps: more than the sandbox's 256 processes.
    const script = `i=0; while [ $i -lt 400 ]; do sleep ${marker} & i=$((i+1)); done; ` +
      `echo started; kill $(jobs -p) 2>/dev/null; wait`;
    const { outcome } = await execIn(h, ["sh", "-c", script], ["exec:run:*"], {
      timeoutMs: 30_000,
    });
    assert.equal(outcome.ok, true, outcome.message);
    const refused = /fork|Resource temporarily unavailable/i.test(outcome.value!.stderr);
    assert.equal(refused, sandboxed, outcome.value!.stderr.slice(0, 300));
    for (const { pid } of await leftBehind(marker, sandboxed)) Deno.kill(pid, "SIGKILL");
  });
});

Deno.test("a fork bomb hits the process limit and the host keeps answering", async () => {
  await withHarness(async (h) => {
    const status = await h.kernel.execSandboxStatus();
    assert.equal(status.mode, "bwrap", status.detail);
    const marker = `7${String(Math.floor(Math.random() * 1e8)).padStart(8, "0")}.5`;
    const bomb = execIn(
      h,
      [
        "sh",
        "-c",
        `bomb() { bomb | bomb & }; bomb; sleep ${marker}`,
      ],
      ["exec:run:*"],
      { timeoutMs: 4000 },
    );
    // While it runs, the host still starts processes and answers.
    const started = performance.now();
    let answered = 0;
    while (performance.now() - started < 2000) {
      const probe = await new Deno.Command("true").output();
      if (probe.success) answered++;
      await h.kernel.processes.list();
    }
    const { outcome } = await bomb;
    assert.equal(outcome.ok, true, outcome.message);
    assert.ok(answered > 0, "the host could not start a process during the bomb");
    assert.match(outcome.value!.stderr, /fork|Resource temporarily unavailable/i);
    assert.deepEqual(await leftBehind(marker), []);
  });
});

Deno.test("without net capabilities a command cannot reach a loopback service of the host", async () => {
  const hits: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    hits.push(new URL(req.url).pathname);
    return new Response("host service");
  });
  try {
    await both(async (h, sandboxed) => {
      const url = `http://127.0.0.1:${server.addr.port}/${sandboxed ? "sandboxed" : "plain"}`;
      const { outcome } = await execIn(h, ["curl", "-sS", "--max-time", "5", url], [
        "exec:run:*",
        "fs:read:**",
      ]);
      assert.equal(outcome.ok, true, outcome.message);
      assert.equal(outcome.value!.stdout.includes("host service"), !sandboxed);
    });
    assert.deepEqual(hits, ["/plain"]);
  } finally {
    await server.shutdown();
  }
});

Deno.test("with net:fetch on one loopback listener, a command reaches it and only it, audited", async () => {
  const hits: string[] = [];
  const serve = (name: string) =>
    Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
      hits.push(`${name} ${new URL(req.url).pathname}`);
      return new Response(`service ${name}\n`);
    });
  const granted = serve("granted");
  const other = serve("other");
  try {
    await withHarness(async (h) => {
      const url = (server: Deno.HttpServer<Deno.NetAddr>, path: string) =>
        `http://127.0.0.1:${server.addr.port}${path}`;
      const caps = ["exec:run:*", `net:fetch:${url(granted, "/**")}`];
      const curl = ["curl", "-sS", "--max-time", "10"];
      const ok = await execIn(h, [...curl, url(granted, "/data")], caps);
      assert.equal(ok.outcome.value?.stdout, "service granted\n", JSON.stringify(ok.outcome));
      const refused = await execIn(h, [...curl, url(other, "/data")], caps);
      assert.match(refused.outcome.value!.stdout, /no capability grants net:fetch/);
      // Around the proxy: straight to the port, and a tunnel the http grant does not cover.
      const direct = await execIn(h, [...curl, "--noproxy", "*", url(other, "/direct")], caps);
      assert.notEqual(direct.outcome.value!.code, 0);
      const tunnel = await execIn(h, [...curl, "-p", url(granted, "/tunnel")], caps);
      assert.ok(!tunnel.outcome.value!.stdout.includes("service"), tunnel.outcome.value!.stdout);
      assert.deepEqual(hits, ["granted /data"]);
      await h.kernel.journal.flush();
      const connects: string[] = [];
      for await (const record of h.kernel.audit.list({ pid: refused.pid })) {
        if (record.syscall === "exec.connect") connects.push(`${record.decision} ${record.args}`);
      }
      assert.equal(connects.length, 1);
      assert.match(connects[0], /^deny .*"GET".*\/data/);
      // A grant on the whole https origin opens the tunnel (CONNECT) to it.
      const origin = `net:fetch:https://127.0.0.1:${granted.addr.port}/**`;
      const opened = await execIn(h, [...curl, "-p", url(granted, "/tunnel")], [
        "exec:run:*",
        origin,
      ]);
      assert.equal(
        opened.outcome.value?.stdout,
        "service granted\n",
        JSON.stringify(opened.outcome),
      );
      assert.deepEqual(hits, ["granted /data", "granted /tunnel"]);
    });
  } finally {
    await granted.shutdown();
    await other.shutdown();
  }
});

Deno.test("uname -s needs exec:run:uname and nothing else", async () => {
  await withHarness(async (h) => {
    const { outcome, pid } = await execIn(h, ["uname", "-s"], ["exec:run:uname"]);
    assert.equal(outcome.ok, true, outcome.message);
    assert.equal(outcome.value!.stdout, "Linux\n");
    await h.kernel.journal.flush();
    const records: AuditRecord[] = [];
    for await (const record of h.kernel.audit.list({ pid })) {
      if (record.syscall === "exec.run") records.push(record);
    }
    assert.equal(records.length, 1);
    assert.equal(records[0].note, "exec-sandbox=bwrap");
  });
});

Deno.test("a command writes only where read and write are both granted", async () => {
  await both(async (h, sandboxed) => {
    await Deno.mkdir(join(h.workspace, "docs"));
    await Deno.mkdir(join(h.workspace, "out"));
    await Deno.writeTextFile(join(h.workspace, "docs", "readme.md"), "original");
    const script = `echo pwned > docs/readme.md; echo pwned > ${join(h.outside, "x")}; ` +
      "echo ok > out/result.txt";
    const { outcome } = await execIn(h, ["sh", "-c", script], [
      "exec:run:*",
      "fs:read:**",
      "fs:write:out/**",
    ]);
    assert.equal(outcome.ok, true, outcome.message);
    assert.equal(await Deno.readTextFile(join(h.workspace, "out", "result.txt")), "ok\n");
    const docs = await Deno.readTextFile(join(h.workspace, "docs", "readme.md"));
    assert.equal(docs, sandboxed ? "original" : "pwned\n");
    assert.equal(await exists(join(h.outside, "x")), !sandboxed);
  });
});

Deno.test("--exec-sandbox none is written into every exec.run audit record", async () => {
  await withHarness(async (h) => {
    const { pid } = await execIn(h, ["true"], ["exec:run:true"]);
    const denied = await execIn(h, ["touch", "x"], ["exec:run:true"]);
    assert.equal(denied.outcome.code, "EPERM");
    await h.kernel.journal.flush();
    for (const p of [pid, denied.pid]) {
      let seen = 0;
      for await (const record of h.kernel.audit.list({ pid: p })) {
        if (record.syscall !== "exec.run") continue;
        seen++;
        assert.equal(record.note, "exec-sandbox=none");
      }
      assert.equal(seen, 1);
    }
  }, { execSandbox: "none" });
});

const CLI = fileURLToPath(new URL("../cli.ts", import.meta.url));

Deno.test("a command cannot read the host's environment through /proc", async () => {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-environ-" }));
  try {
    await Deno.writeTextFile(
      join(root, "main.ts"),
      `export default async function main(sys) {
        let pid;
        while (pid === undefined) {
          try { pid = (await sys.fs.read("hostpid.txt")).trim(); }
          catch { await sys.time.sleep(20); }
        }
        const result = await sys.exec.run(["cat", "/proc/" + pid + "/environ"]);
        return { pid, stdout: result.stdout, code: result.code };
      }\n`,
    );
    await Deno.writeTextFile(
      join(root, "image.json"),
      JSON.stringify({
        name: "environ",
        version: "1.0.0",
        entry: "main.ts",
        tools: [],
        capabilities: ["exec:run:cat", "fs:read:**", "time:sleep:*"],
        policy: {},
      }),
    );
    for (const sandboxed of [true, false]) {
      const ws = join(root, sandboxed ? "ws-sandboxed" : "ws-plain");
      await Deno.mkdir(ws);
      const canary = `environ-canary-${crypto.randomUUID()}`;
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          ...HOST_PERMISSIONS,
          "--allow-net=127.0.0.1",
          CLI,
          "run",
          join(root, "image.json"),
          "--workspace",
          ws,
          "--kv",
          join(ws, ".libos", "libos.db"),
          "--json",
          ...(sandboxed ? [] : ["--exec-sandbox", "none"]),
        ],
        // Only what deno needs, and the canary: nothing else of this environment.
        clearEnv: true,
        env: {
          LIBOS_ENVIRON_CANARY: canary,
          PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
          HOME: Deno.env.get("HOME") ?? "/root",
          ...(Deno.env.get("DENO_DIR") ? { DENO_DIR: Deno.env.get("DENO_DIR")! } : {}),
        },
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      await Deno.writeTextFile(join(ws, "hostpid.txt"), String(child.pid));
      const output = await child.output();
      const text = new TextDecoder().decode(output.stdout);
      assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
      const result = JSON.parse(text).result;
      assert.equal(result.pid, String(child.pid));
      // Unsandboxed, commands start without capabilities through setpriv, which
      // also keeps the host's /proc entries closed (test/exec_test.ts shows
      // that guard on its own); in the sandbox the host is not even in view.
      assert.equal(result.stdout.includes(canary), false, JSON.stringify(result).slice(0, 300));
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
