import assert from "node:assert/strict";
import { join } from "node:path";
import { descendants, killAll, running, runningProcesses, until } from "../test/_processes.ts";

const MODULE = new URL("./host_children.ts", import.meta.url).href;

/**
 * A host for these tests. `hold`: makes a temporary folder and starts two
 * children (a command in its own process group that leaves a background
 * process, and a plain one), prints `{ folder, group, plain }`, and waits to
 * be killed. `sweep`: prints what removeDeadHostFolders removed.
 */
const HOST = `
import { makeHostTempDir, removeDeadHostFolders, spawnHostChild } from ${JSON.stringify(MODULE)};
if (Deno.args[0] === "sweep") {
  console.log(JSON.stringify(await removeDeadHostFolders()));
} else {
  const folder = await makeHostTempDir("work-");
  const setsid = ["/usr/bin/setsid", "/bin/setsid"].find((p) => {
    try { return Deno.statSync(p).isFile; } catch { return false; }
  });
  if (!setsid) throw new Error("this machine has no setsid");
  const group = spawnHostChild(setsid, { args: ["/bin/sh", "-c", "sleep 1000 & sleep 1000"] });
  const plain = spawnHostChild("/bin/sleep", { args: ["1000"] });
  console.log(JSON.stringify({ folder, group: group.pid, plain: plain.pid }));
  setInterval(() => {}, 1 << 30);
}
`;

interface Host {
  child: Deno.ChildProcess;
  /** The first line the host printed, parsed. */
  first: Promise<unknown>;
}

function startHost(dir: string, mode: "hold" | "sweep"): Host {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", "--allow-read", "--allow-write", "--allow-run", "host.ts", mode],
    cwd: dir,
    env: { TMPDIR: join(dir, "tmp") },
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const first = (async () => {
    let text = "";
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      text += chunk;
      if (text.includes("\n")) break;
    }
    return JSON.parse(text.split("\n")[0]);
  })();
  return { child, first };
}

async function withHostDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-hosts-" }));
  await Deno.mkdir(join(dir, "tmp"));
  await Deno.writeTextFile(join(dir, "host.ts"), HOST);
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("the children of a host killed with SIGKILL die with it, with what they left running", async () => {
  await withHostDir(async (dir) => {
    const host = startHost(dir, "hold");
    let children: number[] = [];
    try {
      const { group, plain } = await host.first as { group: number; plain: number };
      await until(
        () => descendants(group).filter((p) => p.args === "sleep 1000").length === 2,
        "the command's background process runs",
      );
      // A stopped child cannot notice anything by itself.
      Deno.kill(plain, "SIGSTOP");
      children = descendants(host.child.pid).map((p) => p.pid);
      assert.ok(children.includes(group) && children.includes(plain));
      assert.ok(children.length >= 5, "two children, two background sleeps, the watchman");
      host.child.kill("SIGKILL");
      await host.child.status;
      await until(() => running(children).length === 0, "no child of the killed host runs")
        .catch(() => {});
      assert.deepEqual(running(children).map((p) => p.args), []);
    } finally {
      killAll([host.child.pid, ...running(children).map((p) => p.pid)]);
      await host.child.status;
      await host.child.stdout.cancel().catch(() => {});
    }
  });
});

Deno.test("the next host removes the temporary folders of a dead host, never those of a live one", async () => {
  await withHostDir(async (dir) => {
    const dead = startHost(dir, "hold");
    const live = startHost(dir, "hold");
    const spawned: number[] = [];
    try {
      const a = await dead.first as { folder: string; group: number; plain: number };
      const b = await live.first as { folder: string; group: number; plain: number };
      spawned.push(a.group, a.plain, b.group, b.plain);
      // Killed at once: whatever the command started by now goes with it.
      dead.child.kill("SIGKILL");
      await dead.child.status;
      const group = () => runningProcesses().filter((p) => p.pgid === a.group).length;
      await until(
        () => group() === 0 && running([a.plain]).length === 0,
        "the dead host's children end",
      )
        .catch(() => {});
      assert.equal(group(), 0, "the dead host's command group is gone");
      await Deno.stat(a.folder); // left behind: a killed host cleans nothing
      const next = startHost(dir, "sweep");
      const removed = await next.first as string[];
      await next.child.status;
      assert.deepEqual(removed, [join(a.folder, "..")]);
      await assert.rejects(Deno.stat(a.folder), Deno.errors.NotFound);
      assert.ok((await Deno.stat(b.folder)).isDirectory, "a live host keeps its folder");
    } finally {
      killAll([dead.child.pid, live.child.pid]);
      await Promise.all([dead.child.status, live.child.status]);
      await until(() => running(spawned).length === 0, "the test's hosts' children end");
    }
  });
});

/** A `/proc/<pid>/stat` line whose start time (field 22) is `start`. */
function statLine(pid: number, start: number): string {
  const fields = Array.from({ length: 18 }, (_, i) => i + 1);
  return `${pid} (sle ep) S ${fields.join(" ")} ${start} 0 0\n`;
}

Deno.test("the watchman never kills a pid the system gave to another process", async () => {
  const dir = await Deno.makeTempDir({ prefix: "libos-watchman-" });
  const { _WATCHMAN } = await import("./host_children.ts");
  try {
    for (const reused of [false, true]) {
      const victim = new Deno.Command("/bin/sleep", { args: ["1000"] }).spawn();
      // A fake proc file system: the watchman reads start times from it.
      const proc = join(dir, reused ? "proc-reused" : "proc-same");
      await Deno.mkdir(join(proc, String(victim.pid)), { recursive: true });
      const stat = join(proc, String(victim.pid), "stat");
      await Deno.writeTextFile(stat, statLine(victim.pid, 1111));
      const children = join(dir, "children");
      await Deno.writeTextFile(children, `+${victim.pid}\n`);
      const watchman = new Deno.Command("/bin/sh", {
        args: ["-c", _WATCHMAN, "libos-watchman", children, proc],
        stdin: "piped",
        stdout: "piped",
      }).spawn();
      const input = watchman.stdin.getWriter();
      const noted = watchman.stdout.pipeThrough(new TextDecoderStream()).getReader();
      await input.write(new TextEncoder().encode(`+${victim.pid}\n`));
      // The watchman echoes the pid once it has noted its start time.
      let echoed = "";
      while (!echoed.includes("\n")) {
        const { value, done } = await noted.read();
        if (done) break;
        echoed += value;
      }
      assert.equal(echoed.trim(), String(victim.pid));
      // Then the pid comes to name a process that started later: the system reused it.
      if (reused) await Deno.writeTextFile(stat, statLine(victim.pid, 2222));
      await input.close(); // the host is gone
      while (!(await noted.read()).done); // the watchman ends
      await watchman.status;
      const alive = running([victim.pid]).length === 1;
      if (alive) victim.kill("SIGKILL");
      await victim.status;
      assert.equal(alive, reused, reused ? "a reused pid was killed" : "the child survived");
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
