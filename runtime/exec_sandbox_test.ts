import assert from "node:assert/strict";
import { join } from "node:path";
import type { Capability } from "../broker/capability.ts";
import {
  ExecSandbox,
  SANDBOX_HOME,
  SANDBOX_OWN_PATHS,
  sandboxUnavailable,
} from "./exec_sandbox.ts";
import { type SandboxView, sandboxView } from "./exec_sandbox_view.ts";
import { LocalFs } from "./fs_provider.ts";
import { LocalShell, type ShellResult } from "./shell_provider.ts";

interface Fixture {
  sandbox: ExecSandbox;
  ws: string;
  root: string;
  /** Runs `argv` in the sandbox with `fs` capabilities `scopes` (text form). */
  run(argv: string[], scopes: string[], cwd?: string, change?: Change): Promise<ShellResult>;
}

/** Something done between making the view and starting the command; may edit the view. */
type Change = (view: SandboxView) => Promise<SandboxView>;

/** A real sandbox over a temp workspace; fails (never skips) when bwrap cannot start. */
async function withSandbox(body: (f: Fixture) => Promise<void>): Promise<void> {
  const sandbox = new ExecSandbox();
  const status = await sandbox.status();
  assert.ok(status.ok, sandboxUnavailable(status));
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos_sandbox_" }));
  const ws = join(root, "ws");
  await Deno.mkdir(join(ws, "src"), { recursive: true });
  await Deno.writeTextFile(join(ws, "src", "a.txt"), "inside");
  await Deno.writeTextFile(join(root, "secret.txt"), "outside");
  const fs = new LocalFs();
  const shell = new LocalShell();
  const run: Fixture["run"] = async (argv, scopes, cwd = ws, change) => {
    const capabilities = scopes.map((text, i): Capability => {
      const [resource, rights, ...scope] = text.split(":");
      return {
        id: `c${i}`,
        holder: 1,
        resource: resource as Capability["resource"],
        rights: rights.split(","),
        scope: scope.join(":"),
        delegable: false,
        grantedBy: "operator",
        createdAt: 0,
      };
    });
    let view = await sandboxView({
      capabilities,
      policy: [],
      workspace: ws,
      fs,
      now: Date.now(),
      own: SANDBOX_OWN_PATHS,
    });
    if (change) view = await change(view);
    const prepared = await sandbox.prepare(view, { cwd, timeoutMs: 20_000 });
    try {
      return await shell.run(argv, {
        cwd,
        timeoutMs: 20_000,
        maxOutputBytes: 1 << 20,
        sandbox: prepared,
      });
    } finally {
      await prepared.close();
    }
  };
  try {
    await body({ sandbox, ws, root, run });
  } finally {
    await sandbox.close();
    await Deno.remove(root, { recursive: true });
  }
}

Deno.test("the sandbox shows the granted tree and nothing else of the host's files", async () => {
  await withSandbox(async (f) => {
    const inside = await f.run(["cat", "src/a.txt"], [`fs:read:${f.ws}/**`]);
    assert.equal(inside.stdout, "inside", inside.stderr);
    const outside = await f.run(["cat", join(f.root, "secret.txt")], [`fs:read:${f.ws}/**`]);
    assert.notEqual(outside.code, 0);
    assert.equal(outside.stdout, "");
    assert.match(outside.stderr, /No such file or directory/);
    const write = await f.run(["sh", "-c", "echo x > src/a.txt"], [`fs:read:${f.ws}/**`]);
    assert.notEqual(write.code, 0);
    assert.equal(await Deno.readTextFile(join(f.ws, "src", "a.txt")), "inside");
  });
});

Deno.test("the sandbox's /etc is minimal and synthesized: no shadow, no host accounts", async () => {
  await withSandbox(async (f) => {
    const result = await f.run(
      ["sh", "-c", "cat /etc/passwd; ls /etc; test -e /etc/shadow && echo SHADOW; echo $HOME"],
      [],
    );
    assert.equal(result.code, 0, result.stderr);
    assert.ok(!result.stdout.includes("SHADOW"));
    assert.ok(!/^daemon:/m.test(result.stdout), "a host account is listed");
    assert.match(result.stdout, /^root:x:0:0:root:\/tmp\/home:/m);
    assert.ok(result.stdout.trim().endsWith(SANDBOX_HOME));
  });
});

Deno.test("the sandbox has its own PID namespace, no capabilities and a read-only /proc/sys", async () => {
  await withSandbox(async (f) => {
    const script = [
      `test -e /proc/${Deno.pid} && echo HOST-PID-VISIBLE`,
      "ls /proc | grep -c '^[0-9]'",
      "grep '^CapEff' /proc/self/status",
      "cat /proc/sys/kernel/pid_max > /proc/sys/kernel/pid_max && echo SYSCTL-WRITTEN",
    ].join("; ");
    const result = await f.run(["sh", "-c", script], []);
    assert.ok(!result.stdout.includes("HOST-PID-VISIBLE"), result.stdout);
    assert.ok(!result.stdout.includes("SYSCTL-WRITTEN"), result.stdout);
    const [count, caps] = result.stdout.trim().split("\n");
    assert.ok(Number(count) < 10, `the sandbox sees ${count} processes`);
    assert.equal(caps, "CapEff:\t0000000000000000");
  });
});

Deno.test("a working directory outside the view holds only the view and cannot be written", async () => {
  await withSandbox(async (f) => {
    const result = await f.run(
      ["sh", "-c", "ls -A; touch made"],
      [`fs:read,write:${f.ws}/**`],
      f.root,
    );
    assert.notEqual(result.code, 0);
    assert.equal(result.stdout, "ws\n", "secret.txt is not there");
    assert.equal(await Deno.stat(join(f.root, "made")).then(() => true, () => false), false);
  });
});

Deno.test("a bind source swapped for a symlink after the view was made fails the command", async () => {
  await withSandbox(async (f) => {
    const outside = join(f.root, "outside");
    await Deno.mkdir(outside);
    await Deno.writeTextFile(join(outside, "a.txt"), "outside secret");
    // What a concurrent writer could do between the view and the mount.
    const swap: Change = async (view) => {
      await Deno.rename(join(f.ws, "src"), join(f.ws, "src.real"));
      await Deno.symlink(outside, join(f.ws, "src"));
      return view;
    };
    const swapped = await f.run(["cat", "src/a.txt"], [`fs:read:${f.ws}/src/**`], f.ws, swap);
    assert.equal(swapped.code, 125, swapped.stderr);
    assert.equal(swapped.stdout, "");
    assert.match(swapped.stderr, /a path of the command's view changed while it started/);
    // Without the identity check, bwrap would have bound what the symlink names.
    await Deno.remove(join(f.ws, "src"));
    await Deno.rename(join(f.ws, "src.real"), join(f.ws, "src"));
    const unchecked = await f.run(
      ["cat", "src/a.txt"],
      [`fs:read:${f.ws}/src/**`],
      f.ws,
      async (view) => {
        await swap(view);
        return { ...view, identities: [] };
      },
    );
    assert.equal(unchecked.stdout, "outside secret");
  });
});
