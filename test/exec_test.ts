/**
 * `exec.run` end to end: a program in a zero-permission cell asks the host
 * to run commands; the broker checks every command the argv would run
 * (wrappers and interpreters unwrapped), the working directory, and
 * policy, and audits the decision. Each attack asserts that its effect did
 * not happen and, where possible, that the same call works when allowed.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import type { AuditRecord } from "../broker/audit.ts";
import { type Harness, withHarness } from "./_harness.ts";
import { HOST_PERMISSIONS } from "./_host_permissions.ts";

/** Runs `input.argv` with `input.options`; returns the result or the error code and message. */
const EXEC = `export default async function main(sys, input) {
  try {
    return { ok: true, value: await sys.exec.run(input.argv, input.options ?? {}) };
  } catch (error) {
    return { ok: false, code: error.code, message: error.message };
  }
}`;

interface Outcome {
  ok: boolean;
  code?: string;
  message?: string;
  value?: {
    code: number;
    signal: string | null;
    stdout: string;
    stderr: string;
    truncated: boolean;
    timedOut: boolean;
  };
}

interface ExecCase {
  argv: string[];
  options?: { cwd?: string; timeoutMs?: number; maxOutputBytes?: number };
  capabilities: string[];
  policy?: Record<string, "allow" | "deny" | "ask">;
}

async function execIn(h: Harness, c: ExecCase): Promise<{ outcome: Outcome; pid: number }> {
  const end = await h.run(EXEC, {
    input: { argv: c.argv, options: c.options },
    image: { capabilities: c.capabilities, policy: c.policy ?? {} },
  });
  assert.equal(end.state, "exited", JSON.stringify(end.error));
  return { outcome: end.result as Outcome, pid: end.pid };
}

async function execAudit(h: Harness, pid: number): Promise<AuditRecord[]> {
  await h.kernel.journal.flush();
  const out: AuditRecord[] = [];
  for await (const record of h.kernel.audit.list({ pid })) {
    if (record.syscall === "exec.run") out.push(record);
  }
  return out;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Live processes whose command line holds `marker`, once the deadline for
 * them to go has passed or none is left (`ps`: Deno reads /proc only with
 * --allow-all). The shells the sandboxed `sh -c` forks carry its script, so
 * the marker names every process of the command's tree.
 */
async function leftBehind(marker: string): Promise<string[]> {
  const find = () => {
    const { stdout } = new Deno.Command("ps", { args: ["-eo", "stat=,args="] }).outputSync();
    return new TextDecoder().decode(stdout).split("\n")
      .filter((line) => line.includes(marker) && !line.trim().startsWith("Z"));
  };
  const deadline = performance.now() + 30_000;
  while (find().length && performance.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return find();
}

Deno.test("exec.run runs an allowed command and returns its output", async () => {
  await withHarness(async (h) => {
    const { outcome } = await execIn(h, {
      argv: ["echo", "hi", "there"],
      capabilities: ["fs:read:**", "exec:run:echo"],
    });
    assert.equal(outcome.ok, true, outcome.message);
    assert.equal(outcome.value!.code, 0);
    assert.equal(outcome.value!.stdout, "hi there\n");
    assert.equal(outcome.value!.truncated, false);
  });
});

Deno.test("exec.run refuses a command with no capability and audits the denial", async () => {
  await withHarness(async (h) => {
    const { outcome, pid } = await execIn(h, {
      argv: ["touch", "made.txt"],
      capabilities: ["fs:read:**", "exec:run:echo"],
    });
    assert.equal(outcome.code, "EPERM");
    assert.match(outcome.message!, /"touch"/);
    assert.equal(await exists(join(h.workspace, "made.txt")), false);
    const [record] = await execAudit(h, pid);
    assert.equal(record.decision, "deny");
    assert.equal(record.outcome, "error");
  });
});

Deno.test("exec:run:git does not let git -c alias.x=!… run another command", async () => {
  await withHarness(async (h) => {
    const marker = join(h.workspace, "pwned");
    const argv = ["git", "-c", `alias.x=!touch ${marker}`, "x"];
    const denied = await execIn(h, { argv, capabilities: ["fs:read:**", "exec:run:git"] });
    assert.equal(denied.outcome.code, "EPERM");
    assert.match(denied.outcome.message!, /"\*": no capability grants exec:run/);
    assert.equal(await exists(marker), false);
    // Control: granted any program, the same alias does run.
    const allowed = await execIn(h, { argv, capabilities: ["fs:read,write:**", "exec:run:*"] });
    assert.equal(allowed.outcome.ok, true, allowed.outcome.message);
    assert.equal(await exists(marker), true);
  });
});

Deno.test('bash -c "echo hi; curl x" is denied as a whole and audited as a denial', async () => {
  await withHarness(async (h) => {
    const out = join(h.workspace, "out.txt");
    const { outcome, pid } = await execIn(h, {
      argv: ["bash", "-c", `echo hi > ${out}; curl http://127.0.0.1:9/x`],
      capabilities: ["fs:read:**", "exec:run:bash", "exec:run:echo"],
    });
    assert.equal(outcome.code, "EPERM");
    assert.match(outcome.message!, /"curl"/);
    // Nothing ran: not even the allowed first half of the string.
    assert.equal(await exists(out), false);
    const records = await execAudit(h, pid);
    assert.equal(records.length, 1);
    assert.equal(records[0].decision, "deny");
    assert.equal(records[0].code, "EPERM");
    assert.match(records[0].args, /curl/);
    // Control: the allowed half alone runs.
    const alone = await execIn(h, {
      argv: ["bash", "-c", `echo hi > ${out}`],
      capabilities: ["fs:read,write:**", "exec:run:bash"],
    });
    assert.equal(alone.outcome.ok, true, alone.outcome.message);
    assert.equal(await Deno.readTextFile(out), "hi\n");
  });
});

Deno.test("a policy deny on any analyzed command refuses the call", async () => {
  await withHarness(async (h) => {
    const out = join(h.workspace, "out.txt");
    const policy = { "exec:run:curl": "deny" } as const;
    const denied = await execIn(h, {
      argv: ["sh", "-c", `touch ${out} && curl http://127.0.0.1:9/`],
      capabilities: ["fs:read:**", "exec:run:*"],
      policy,
    });
    assert.equal(denied.outcome.code, "EPERM");
    assert.match(denied.outcome.message!, /denied by policy "exec:run:curl"/);
    assert.equal(await exists(out), false);
    // A script that may run anything may run curl: the deny refuses it too.
    const hidden = await execIn(h, {
      argv: ["sh", "-c", `eval touch ${out}`],
      capabilities: ["fs:read:**", "exec:run:*"],
      policy: { "exec:run:touch": "deny" },
    });
    assert.equal(hidden.outcome.code, "EPERM");
    assert.match(hidden.outcome.message!, /"\*": denied by policy "exec:run:touch"/);
    assert.equal(await exists(out), false);
    const allowed = await execIn(h, {
      argv: ["sh", "-c", `touch ${out}`],
      capabilities: ["fs:read,write:**", "exec:run:*"],
      policy,
    });
    assert.equal(allowed.outcome.ok, true, allowed.outcome.message);
    assert.equal(await exists(out), true);
  });
});

/**
 * Runs each argv of `steps` under `narrow` capabilities and asserts it is
 * refused and `marker` is absent; then runs them again granted any program
 * and asserts `marker` appears, so the analysis is what stopped them. The
 * markers are in the workspace, which both runs may write (the command
 * sandbox would hide any other place).
 */
async function assertGuardStops(
  h: Harness,
  steps: string[][],
  marker: string,
  narrow: string[],
): Promise<void> {
  for (const argv of steps) {
    const { outcome } = await execIn(h, { argv, capabilities: ["fs:read,write:**", ...narrow] });
    assert.equal(outcome.code, "EPERM", `${JSON.stringify(argv)} → ${JSON.stringify(outcome)}`);
    assert.match(outcome.message!, /"\*": no capability grants exec:run/);
  }
  assert.equal(await exists(marker), false, `${JSON.stringify(steps)} ran under ${narrow}`);
  for (const argv of steps) {
    const { outcome } = await execIn(h, {
      argv,
      capabilities: ["fs:read,write:**", "exec:run:*", ...narrow],
    });
    assert.equal(outcome.ok, true, `${JSON.stringify(argv)} → ${JSON.stringify(outcome)}`);
  }
  assert.equal(await exists(marker), true, `${JSON.stringify(steps)} did not run at all`);
}

Deno.test("exec:run:bash does not run what control characters or evaluated text hide", async () => {
  await withHarness(async (h) => {
    const m = (name: string) => join(h.workspace, name);
    const cases: [string, string][] = [
      [m("cr"), `echo\r# ; touch ${m("cr")}`],
      [m("trap"), `trap -- 'touch ${m("trap")}' EXIT`],
      [m("prompt"), `x='$(touch ${m("prompt")})'; echo \${x@P}`],
      [m("ps4"), `printf -v PS4 '$(touch ${m("ps4")})'; set -x; true`],
      [m("bash-env"), `set -a; printf -v BASH_ENV %s '$(touch ${m("bash-env")})'; bash -c true`],
    ];
    for (const [marker, script] of cases) {
      await assertGuardStops(h, [["bash", "-c", script]], marker, ["exec:run:bash"]);
    }
  });
});

Deno.test("exec:run:bash does not follow a cd hidden by quoting to another program", async () => {
  await withHarness(async (h) => {
    const marker = join(h.workspace, "sub-tool-ran");
    // A harmless program granted by its path, and another of the same name in sub/.
    await Deno.mkdir(join(h.workspace, "sub"));
    await Deno.writeTextFile(join(h.workspace, "tool"), "#!/bin/sh\ntrue\n");
    await Deno.writeTextFile(join(h.workspace, "sub", "tool"), `#!/bin/sh\ntouch ${marker}\n`);
    await Deno.chmod(join(h.workspace, "tool"), 0o755);
    await Deno.chmod(join(h.workspace, "sub", "tool"), 0o755);
    await assertGuardStops(h, [["bash", "-c", "c''d sub && ./tool"]], marker, [
      "exec:run:bash",
      `exec:run:${join(h.workspace, "tool")}`,
    ]);
  });
});

Deno.test("exec:run:git does not run what abbreviated options or renamed settings hide", async () => {
  await withHarness(async (h) => {
    const git = (...args: string[]) =>
      new Deno.Command("git", { args, cwd: h.workspace, stdout: "null", stderr: "null" })
        .output();
    await git("init", "-q");
    await Deno.writeTextFile(join(h.workspace, "a.txt"), "hello\n");
    await git("add", "a.txt");
    await git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init");
    // --open-files-in is git's abbreviation of --open-files-in-pager.
    const pager = join(h.workspace, "pager");
    await assertGuardStops(h, [["git", "grep", `--open-files-in=touch ${pager}`, "hello"]], pager, [
      "exec:run:git",
    ]);
    // A harmless setting renamed into an alias, then run by its name.
    const alias = join(h.workspace, "alias");
    await assertGuardStops(
      h,
      [
        ["git", "config", "user.name", `!touch ${alias}`],
        ["git", "config", "--rename-section", "user", "alias"],
        ["git", "name"],
      ],
      alias,
      ["exec:run:git"],
    );
  });
});

Deno.test("exec:run:sed does not run or write what other addresses and options hide", async () => {
  await withHarness(async (h) => {
    await Deno.writeTextFile(join(h.workspace, "f.txt"), "one\ntwo\n");
    const m = (name: string) => join(h.workspace, name);
    const cases: [string, string[]][] = [
      [m("m1"), ["sed", "-n", `0~1e touch ${m("m1")}`, "f.txt"]],
      [m("m2"), ["sed", "-n", `1,+1e touch ${m("m2")}`, "f.txt"]],
      [m("m3"), ["sed", "-n", `w ${m("m3")}`, "f.txt"]],
      [m("m4"), ["sed", `--expr=1e touch ${m("m4")}`, "f.txt"]],
    ];
    for (const [marker, argv] of cases) {
      await assertGuardStops(h, [argv], marker, ["exec:run:sed"]);
    }
  });
});

Deno.test("a workspace program does not pass for the system command of its name", async () => {
  await withHarness(async (h) => {
    const marker = join(h.workspace, "fake-echo-ran");
    const fake = join(h.workspace, "echo");
    await Deno.writeTextFile(fake, `#!/bin/sh\ntouch ${marker}\n`);
    await Deno.chmod(fake, 0o755);
    const denied = await execIn(h, {
      argv: ["./echo", "hi"],
      capabilities: ["fs:read:**", "exec:run:echo"],
    });
    assert.equal(denied.outcome.code, "EPERM");
    assert.match(denied.outcome.message!, /no capability grants exec:run/);
    assert.equal(await exists(marker), false);
    // Granted by its path only, it is still refused: what a script runs cannot be seen.
    const byPath = await execIn(h, {
      argv: ["./echo", "hi"],
      capabilities: ["fs:read,write:**", `exec:run:${fake}`],
    });
    assert.equal(byPath.outcome.code, "EPERM");
    assert.match(byPath.outcome.message!, /"\*": no capability grants exec:run/);
    assert.equal(await exists(marker), false);
    // Granted by its path and any program, it runs.
    const allowed = await execIn(h, {
      argv: ["./echo", "hi"],
      capabilities: ["fs:read,write:**", `exec:run:${fake}`, "exec:run:*"],
    });
    assert.equal(allowed.outcome.ok, true, allowed.outcome.message);
    assert.equal(await exists(marker), true);
  });
});

Deno.test("exec.run needs no capability on its working directory, which the view decides", async () => {
  await withHarness(async (h) => {
    // Outside the view, the working directory is an empty read-only one: nothing lands there.
    const { outcome } = await execIn(h, {
      argv: ["touch", "pwned"],
      options: { cwd: h.outside },
      capabilities: ["fs:read,write:**", "exec:run:touch"],
    });
    assert.equal(outcome.ok, true, outcome.message);
    assert.notEqual(outcome.value!.code, 0);
    assert.match(outcome.value!.stderr, /Permission denied|Read-only file system/);
    assert.equal(await exists(join(h.outside, "pwned")), false);
    // The same command in a directory inside the view runs there.
    await Deno.mkdir(join(h.workspace, "sub"));
    const inside = await execIn(h, {
      argv: ["touch", "made"],
      options: { cwd: "sub" },
      capabilities: ["fs:read,write:**", "exec:run:touch"],
    });
    assert.equal(inside.outcome.ok, true, inside.outcome.message);
    assert.equal(inside.outcome.value!.code, 0, inside.outcome.value!.stderr);
    assert.equal(await exists(join(h.workspace, "sub", "made")), true);
  });
});

Deno.test("exec.run gives commands a scrubbed environment", async () => {
  const canary = `canary-${crypto.randomUUID()}`;
  Deno.env.set("LIBOS_EXEC_CANARY", canary);
  try {
    await withHarness(async (h) => {
      const { outcome } = await execIn(h, {
        argv: ["env"],
        capabilities: ["fs:read:**", "exec:run:env"],
      });
      assert.equal(outcome.ok, true, outcome.message);
      const stdout = outcome.value!.stdout;
      assert.ok(!stdout.includes(canary), "a host variable reached the command");
      const names = stdout.trim().split("\n").map((line) => line.split("=")[0]).sort();
      // PWD is the working directory, which the sandbox sets.
      assert.deepEqual(names, ["HOME", "LANG", "PATH", "PWD"]);
      const home = stdout.match(/^HOME=(.*)$/m)![1];
      assert.equal(home, "/tmp/home", "a fresh HOME, so workspace dotfiles are never read");
    });
  } finally {
    Deno.env.delete("LIBOS_EXEC_CANARY");
  }
});

Deno.test("exec.run kills the command's whole process tree on timeout", async () => {
  await withHarness(async (h) => {
    const marker = `libos-timeout-${crypto.randomUUID()}`;
    const { outcome } = await execIn(h, {
      argv: ["sh", "-c", `: ${marker}; sleep 100 & sleep 100 & echo started; wait`],
      options: { timeoutMs: 2000 },
      capabilities: ["exec:run:*"],
    });
    assert.equal(outcome.ok, true, outcome.message);
    assert.equal(outcome.value!.timedOut, true);
    assert.equal(outcome.value!.stdout, "started\n");
    assert.deepEqual(await leftBehind(marker), []);
  });
});

/** Pids in process group `pgid` that are not zombies (`ps`, as for {@link alive}). */
function groupMembers(pgid: number): number[] {
  const { stdout } = new Deno.Command("ps", { args: ["-e", "-o", "pid=,pgid=,stat="] })
    .outputSync();
  return new TextDecoder().decode(stdout).trim().split("\n")
    .map((line) => line.trim().split(/\s+/))
    .filter(([, group, stat]) => Number(group) === pgid && !stat.startsWith("Z"))
    .map(([pid]) => Number(pid));
}

/** Waits (up to `ms`) until `done()` holds; returns whether it did. */
async function within(ms: number, done: () => boolean | Promise<boolean>): Promise<boolean> {
  const deadline = performance.now() + ms;
  while (!(await done())) {
    if (performance.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return true;
}

/**
 * The kernel options of the tests that look at a command's process group
 * from the host: without the command sandbox, whose PID namespace hides the
 * group's pid from the command itself (the sandbox's own tree is killed as a
 * whole: test/exec_sandbox_test.ts).
 */
const UNSANDBOXED = { execSandbox: "none" } as const;

/**
 * Starts a process whose command appends to `ticks` (outside the workspace)
 * every 50 ms with a background sleep beside it, and waits until it ticks.
 * Returns the process and the command's pid (its process group).
 */
async function startTicking(h: Harness, ticks: string): Promise<{ pid: number; command: number }> {
  const pidFile = join(h.outside, "command.pid");
  // `$$` and a loop are beyond command analysis: the script needs `exec:run:*`.
  const tag = await h.program("ticking", EXEC, {
    capabilities: ["fs:read:**", "exec:run:*"],
  });
  const proc = await h.kernel.spawn({
    image: tag,
    workspace: h.workspace,
    input: {
      argv: [
        "sh",
        "-c",
        `echo $$ > "${pidFile}"; sleep 600 & while :; do echo x >> "${ticks}"; sleep 0.05; done`,
      ],
      // Short enough that a host which does not stop the command still ends the test.
      options: { timeoutMs: 20_000 },
    },
  });
  h.kernel.start(proc.pid);
  const ticking = await within(
    30_000,
    async () => (await exists(ticks)) && (await exists(pidFile)),
  );
  assert.ok(ticking, "the command started");
  const command = Number((await Deno.readTextFile(pidFile)).trim());
  assert.ok(groupMembers(command).length >= 2, "the command and its background sleep run");
  return { pid: proc.pid, command };
}

Deno.test("killing a process kills the command it runs, with its whole process group", async () => {
  await withHarness(async (h) => {
    const ticks = join(h.outside, "ticks");
    const { pid, command } = await startTicking(h, ticks);
    await h.kernel.signal(pid, "kill");
    await within(30_000, () => groupMembers(command).length === 0);
    assert.deepEqual(groupMembers(command), [], "the command outlived its killed process");
    const size = (await Deno.stat(ticks)).size;
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal((await Deno.stat(ticks)).size, size, "the command still writes");
    assert.equal((await h.kernel.processes.require(pid)).state, "killed");
    await h.kernel.executionOf(pid)?.settled();
    const [record] = await execAudit(h, pid);
    assert.equal(record.code, "EINTR", "the killed command is recorded as interrupted");
  }, UNSANDBOXED);
});

Deno.test("closing the host kills the commands its processes run", async () => {
  await withHarness(async (h) => {
    const { command } = await startTicking(h, join(h.outside, "ticks"));
    const closed = h.kernel.close();
    // Without the abort, close waits for the command's own 20 s timeout.
    await within(30_000, () => groupMembers(command).length === 0);
    assert.deepEqual(groupMembers(command), [], "the command outlived the closing host");
    await closed;
  }, UNSANDBOXED);
});

const CLI = new URL("../cli.ts", import.meta.url).pathname;

/** Reads the host's environment and memory through `cat`; input is the host's pid. */
const READ_HOST = `export default async function main(sys, host) {
  const environ = await sys.exec.run(["cat", "/proc/" + host + "/environ"]);
  const mem = await sys.exec.run(["cat", "/proc/" + host + "/mem"]);
  return { environ, mem };
}`;

Deno.test("a command cannot read the host's environment or memory", async () => {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-environ-" }));
  const canary = `canary-${crypto.randomUUID()}`;
  try {
    await Deno.writeTextFile(join(root, "main.ts"), READ_HOST);
    await Deno.writeTextFile(
      join(root, "image.json"),
      JSON.stringify({
        name: "read-host",
        version: "1.0.0",
        entry: "./main.ts",
        tools: [],
        capabilities: ["fs:read:**", "exec:run:cat"],
        policy: {},
      }),
    );
    // The host as an operator starts it, with a secret in its environment;
    // once with FFI (it becomes non-dumpable) and once without.
    for (const ffi of [["--allow-ffi"], []]) {
      const { stdout, stderr } = await new Deno.Command("/bin/sh", {
        // exec keeps the shell's pid, so "$$" is the host's pid.
        args: [
          "-c",
          'exec "$@" --input "$$"',
          "sh",
          Deno.execPath(),
          "run",
          ...HOST_PERMISSIONS,
          ...ffi,
          CLI,
          "run",
          join(root, "image.json"),
          "--workspace",
          root,
          "--kv",
          ":memory:",
          "--json",
          // The guard under test is the one for unsandboxed commands (setpriv,
          // non-dumpable host); the sandbox's is shown in exec_sandbox_test.ts.
          "--exec-sandbox",
          "none",
        ],
        env: { LIBOS_HOST_SECRET: canary },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const out = new TextDecoder().decode(stdout);
      const err = new TextDecoder().decode(stderr);
      assert.ok(!out.includes(canary) && !err.includes(canary), `the host's secret leaked ${ffi}`);
      const end = JSON.parse(out.trim().split("\n").at(-1)!);
      assert.equal(end.state, "exited", err);
      const { environ, mem } = end.result;
      assert.equal(environ.stdout, "");
      assert.match(environ.stderr, /Permission denied/);
      assert.match(mem.stderr, /Permission denied/, "the host's memory could be opened");
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("exec.run caps the output and marks it truncated", async () => {
  await withHarness(async (h) => {
    const { outcome } = await execIn(h, {
      argv: ["yes"],
      options: { maxOutputBytes: 100, timeoutMs: 10_000 },
      capabilities: ["fs:read:**", "exec:run:yes"],
    });
    assert.equal(outcome.ok, true, outcome.message);
    assert.equal(outcome.value!.truncated, true);
    assert.equal(outcome.value!.timedOut, false);
    assert.equal(outcome.value!.stdout, "y\n".repeat(50));
  });
});

Deno.test("a .gitconfig written into the workspace cannot smuggle a command into git", async () => {
  await withHarness(async (h) => {
    const marker = join(h.outside, "pwned");
    // What a compromised agent with fs:write on its workspace could leave behind.
    await Deno.writeTextFile(
      join(h.workspace, ".gitconfig"),
      `[alias]\n\tx = !touch ${marker}\n`,
    );
    // Under exec:run:git an unknown subcommand is refused: it may be an alias.
    const denied = await execIn(h, {
      argv: ["git", "x"],
      capabilities: ["fs:read:**", "exec:run:git"],
    });
    assert.equal(denied.outcome.code, "EPERM");
    assert.equal(await exists(marker), false);
    // Allowed to run anything, git runs with a fresh HOME and does not know the alias.
    const { outcome } = await execIn(h, {
      argv: ["git", "x"],
      capabilities: ["fs:read:**", "exec:run:*"],
    });
    assert.equal(outcome.ok, true, JSON.stringify(outcome));
    assert.notEqual(outcome.value!.code, 0, "git does not know the alias");
    assert.equal(await exists(marker), false);
    // Control: with HOME pointing at the workspace, git runs the alias.
    await new Deno.Command("git", {
      args: ["x"],
      cwd: h.workspace,
      clearEnv: true,
      env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin", HOME: h.workspace },
    }).output();
    assert.equal(await exists(marker), true);
  });
});
