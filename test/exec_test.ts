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
    assert.match(denied.outcome.message!, /git:config-exec/);
    assert.equal(await exists(marker), false);
    // Control: granted both the config-exec and touch, the same alias does run.
    const allowed = await execIn(h, {
      argv,
      capabilities: [
        "fs:read,write:**",
        "exec:run:git",
        "exec:run:git:config-exec",
        "exec:run:touch",
      ],
    });
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
    const allowed = await execIn(h, {
      argv: ["sh", "-c", `touch ${out}`],
      capabilities: ["fs:read,write:**", "exec:run:*"],
      policy,
    });
    assert.equal(allowed.outcome.ok, true, allowed.outcome.message);
    assert.equal(await exists(out), true);
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
    // Granted by its path, it runs.
    const allowed = await execIn(h, {
      argv: ["./echo", "hi"],
      capabilities: ["fs:read,write:**", `exec:run:${fake}`],
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
      capabilities: ["exec:run:sh", "exec:run:sleep"],
    });
    assert.equal(outcome.ok, true, outcome.message);
    assert.equal(outcome.value!.timedOut, true);
    assert.equal(outcome.value!.stdout, "started\n");
    assert.deepEqual(await leftBehind(marker), []);
  });
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

Deno.test("a .gitconfig written into the workspace cannot smuggle a command into an allowed git", async () => {
  await withHarness(async (h) => {
    const marker = join(h.outside, "pwned");
    // What a compromised agent with fs:write on its workspace could leave behind.
    await Deno.writeTextFile(
      join(h.workspace, ".gitconfig"),
      `[alias]\n\tx = !touch ${marker}\n`,
    );
    const { outcome } = await execIn(h, {
      argv: ["git", "x"],
      capabilities: ["fs:read:**", "exec:run:git"],
    });
    assert.equal(outcome.ok, true, JSON.stringify(outcome));
    assert.notEqual(outcome.value!.code, 0, "git does not know the alias");
    assert.equal(await Deno.stat(marker).then(() => true, () => false), false);
    // Control: with HOME pointing at the workspace, git runs the alias.
    await new Deno.Command("git", {
      args: ["x"],
      cwd: h.workspace,
      clearEnv: true,
      env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin", HOME: h.workspace },
    }).output();
    assert.equal(await Deno.stat(marker).then(() => true, () => false), true);
  });
});
