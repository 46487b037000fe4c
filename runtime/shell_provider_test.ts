import assert from "node:assert/strict";
import { join } from "node:path";
import { SyscallError } from "../broker/errors.ts";
import { LocalShell, type ShellRunOptions } from "./shell_provider.ts";

async function withDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos_shell_" }));
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function options(cwd: string, extra: Partial<ShellRunOptions> = {}): ShellRunOptions {
  return { cwd, timeoutMs: 10_000, maxOutputBytes: 1 << 20, ...extra };
}

/**
 * True while `pid` exists and is not a zombie. (`ps`, because Deno lets
 * only `--allow-all` read `/proc/<pid>/stat`.)
 */
function alive(pid: number): boolean {
  const { code, stdout } = new Deno.Command("ps", { args: ["-o", "stat=", "-p", String(pid)] })
    .outputSync();
  const stat = new TextDecoder().decode(stdout).trim();
  return code === 0 && stat !== "" && !stat.startsWith("Z");
}

/**
 * Waits until none of `pids` is alive (a generous deadline for a loaded
 * machine: the loop ends as soon as they are gone); returns those still alive.
 */
async function survivors(pids: number[]): Promise<number[]> {
  const deadline = performance.now() + 30_000;
  while (pids.some(alive) && performance.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return pids.filter(alive);
}

function pidsIn(text: string): number[] {
  return text.trim().split(/\s+/).filter(Boolean).map(Number);
}

Deno.test("LocalShell runs an argv and returns its output and exit code", async () => {
  await withDir(async (dir) => {
    const shell = new LocalShell();
    const ok = await shell.run(["echo", "hi"], options(dir));
    assert.deepEqual(ok, {
      code: 0,
      signal: null,
      stdout: "hi\n",
      stderr: "",
      truncated: false,
      timedOut: false,
    });
    const failed = await shell.run(["sh", "-c", "echo oops >&2; exit 3"], options(dir));
    assert.equal(failed.code, 3);
    assert.equal(failed.stderr, "oops\n");
  });
});

Deno.test("LocalShell passes arguments literally, never through a shell", async () => {
  await withDir(async (dir) => {
    const result = await new LocalShell().run(["echo", "$HOME; id `id`"], options(dir));
    assert.equal(result.stdout, "$HOME; id `id`\n");
  });
});

Deno.test("LocalShell scrubs the environment: host variables do not reach commands", async () => {
  await withDir(async (dir) => {
    const canary = `canary-${crypto.randomUUID()}`;
    Deno.env.set("LIBOS_SHELL_CANARY", canary);
    try {
      const shell = new LocalShell({ path: "/usr/bin:/bin" });
      const result = await shell.run(["env"], options(dir));
      assert.ok(!result.stdout.includes(canary));
      const names = result.stdout.trim().split("\n").map((line) => line.split("=")[0]).sort();
      assert.deepEqual(names, ["HOME", "LANG", "PATH"]);
      const home = result.stdout.match(/^HOME=(.*)$/m)![1];
      assert.match(home, /libos-home-/);
      assert.notEqual(home, dir, "HOME is never the workspace");
      assert.match(result.stdout, /^LANG=C\.UTF-8$/m);
      assert.match(result.stdout, /^PATH=\/usr\/bin:\/bin$/m);
      // The same command does print what it is given.
      const given = await shell.run(["env"], options(dir, { env: { GIVEN: canary } }));
      assert.match(given.stdout, new RegExp(`^GIVEN=${canary}$`, "m"));
    } finally {
      Deno.env.delete("LIBOS_SHELL_CANARY");
    }
  });
});

Deno.test("LocalShell closes standard input", async () => {
  await withDir(async (dir) => {
    const result = await new LocalShell().run(["cat"], options(dir, { timeoutMs: 30_000 }));
    assert.equal(result.timedOut, false);
    assert.equal(result.code, 0);
    assert.equal(result.stdout, "");
  });
});

Deno.test("LocalShell kills the whole process group on timeout", async () => {
  await withDir(async (dir) => {
    const shell = new LocalShell();
    assert.ok(shell.groups, "this host has no setsid");
    const result = await shell.run(
      ["sh", "-c", "echo $$; sleep 100 & echo $!; sleep 100 & echo $!; wait"],
      options(dir, { timeoutMs: 2000 }),
    );
    assert.equal(result.timedOut, true);
    assert.equal(result.signal, "SIGKILL");
    const pids = pidsIn(result.stdout);
    assert.equal(pids.length, 3);
    assert.deepEqual(await survivors(pids), []);
    // The check sees live processes: a sleep started here is alive until killed.
    const control = new Deno.Command("sleep", { args: ["100"] }).spawn();
    assert.equal(alive(control.pid), true);
    control.kill("SIGKILL");
    await control.status;
  });
});

Deno.test("without a process group the children of a timed-out command survive", async () => {
  await withDir(async (dir) => {
    const result = await new LocalShell({ setsid: false, drainMs: 100 }).run(
      ["sh", "-c", "sleep 100 & echo $!; sleep 100"],
      options(dir, { timeoutMs: 2000 }),
    );
    const [orphan] = pidsIn(result.stdout);
    try {
      assert.equal(result.timedOut, true);
      assert.equal(alive(orphan), true);
    } finally {
      Deno.kill(orphan, "SIGKILL");
    }
  });
});

Deno.test("LocalShell kills what a command left running when it exits", async () => {
  await withDir(async (dir) => {
    const started = performance.now();
    const result = await new LocalShell().run(
      ["sh", "-c", "sleep 100 & echo $!"],
      options(dir, { timeoutMs: 30_000 }),
    );
    assert.equal(result.code, 0);
    assert.equal(result.timedOut, false);
    assert.ok(performance.now() - started < 60_000, "waited for the 100 s sleep it left behind");
    assert.deepEqual(await survivors(pidsIn(result.stdout)), []);
  });
});

Deno.test("LocalShell caps stdout and stderr together, marks it truncated and kills", async () => {
  await withDir(async (dir) => {
    const shell = new LocalShell();
    const endless = await shell.run(["yes"], options(dir, { maxOutputBytes: 1000 }));
    assert.equal(endless.truncated, true);
    assert.equal(endless.timedOut, false);
    assert.equal(endless.stdout.length, 1000);
    assert.equal(endless.stdout.slice(0, 4), "y\ny\n");
    const both = await shell.run(
      ["sh", "-c", "printf 12345678 >&2; printf abcdefgh; sleep 100"],
      options(dir, { maxOutputBytes: 10 }),
    );
    assert.equal(both.truncated, true);
    assert.equal(both.timedOut, false);
    // Whichever stream was read first, the two together stop at 10 bytes.
    assert.equal(both.stderr.length + both.stdout.length, 10);
    assert.ok("12345678".startsWith(both.stderr), both.stderr);
    assert.ok("abcdefgh".startsWith(both.stdout), both.stdout);
    const small = await shell.run(["printf", "1234567890"], options(dir, { maxOutputBytes: 10 }));
    assert.equal(small.truncated, false);
    assert.equal(small.stdout, "1234567890");
  });
});

Deno.test("LocalShell stops a command when the caller aborts", async () => {
  await withDir(async (dir) => {
    const controller = new AbortController();
    const running = new LocalShell().run(
      ["sleep", "100"],
      options(dir, {
        signal: controller.signal,
      }),
    );
    controller.abort();
    const result = await running;
    assert.equal(result.signal, "SIGKILL");
    assert.equal(result.timedOut, false);
  });
});

Deno.test("LocalShell resolves relative programs against cwd, reports missing ones", async () => {
  await withDir(async (dir) => {
    const script = join(dir, "run.sh");
    await Deno.writeTextFile(script, "#!/bin/sh\necho script in $PWD\n");
    await Deno.chmod(script, 0o755);
    const shell = new LocalShell();
    const result = await shell.run(["./run.sh"], options(dir));
    assert.equal(result.stdout, `script in ${dir}\n`);
    await assert.rejects(
      shell.run(["no-such-command-here"], options(dir)),
      (error: unknown) => error instanceof SyscallError && error.code === "ENOENT",
    );
    await assert.rejects(
      shell.run([""], options(dir)),
      (error: unknown) => error instanceof SyscallError && error.code === "EINVAL",
    );
    await assert.rejects(
      shell.run(["echo", "a\0b"], options(dir)),
      (error: unknown) => error instanceof SyscallError && error.code === "EINVAL",
    );
  });
});
