/**
 * A host killed with SIGKILL leaves nothing running and nothing behind: its
 * cells, the `deno check` of a JIT tool it was registering and a command
 * (with what the command started in the background) die with it, and the
 * next host to start removes its temporary folders. The host is
 * `_tool_host.ts`.
 */

import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { descendants, killAll, type Proc, processes, running, until } from "./_processes.ts";
import { hostScript } from "./_host_permissions.ts";

const HOST = fileURLToPath(new URL("./_tool_host.ts", import.meta.url));

function host(kvPath: string, workspace: string, tmp: string, mode?: "open"): Deno.Command {
  return hostScript(HOST, [kvPath, workspace, ...(mode ? [mode] : [])], {
    env: { TMPDIR: tmp },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  });
}

/** The `deno check` of a tool's source among `procs`. */
function typeCheck(procs: Proc[]): Proc | undefined {
  return procs.find((p) => /\scheck\s.*\/tool\.ts$/.test(p.args));
}

Deno.test("a host killed during a JIT type check leaves no child running, and the next host removes its temporary folders", async () => {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-killed-" }));
  const workspace = join(root, "ws");
  const tmp = join(root, "tmp");
  const kvPath = join(root, "libos.db");
  await Deno.mkdir(workspace);
  await Deno.mkdir(tmp);
  const child = host(kvPath, workspace, tmp).spawn();
  const stderr = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let children: number[] = [];
  try {
    // The host registers tools one after another: stop one type check, which
    // then cannot end (or notice anything) by itself.
    let stopped: Proc | undefined;
    await until(
      () => {
        const tree = descendants(child.pid);
        const check = typeCheck(tree);
        if (!check || tree.filter((p) => p.args === "sleep 1000").length < 2) return false;
        try {
          Deno.kill(check.pid, "SIGSTOP");
        } catch {
          return false; // it ended meanwhile: wait for the next one
        }
        const now = processes().find((p) => p.pid === check.pid);
        if (!now?.stat.startsWith("T")) return false;
        stopped = check;
        return true;
      },
      "a type check and the command run",
      120_000,
    );
    const tree = descendants(child.pid);
    children = tree.map((p) => p.pid);
    assert.ok(tree.some((p) => p.args.includes("cell_main.ts")), "a cell runs");
    const toolDir = dirname(stopped!.args.split(" ").at(-1)!);

    child.kill("SIGKILL");
    await child.status;
    await until(() => running(children).length === 0, "no child of the killed host runs")
      .catch(() => {});
    assert.deepEqual(running(children).map((p) => p.args), [], "children of the killed host");
    assert.ok((await Deno.stat(toolDir)).isDirectory, "a killed host removes nothing itself");

    const next = await host(kvPath, workspace, tmp, "open").output();
    assert.equal(next.code, 0, new TextDecoder().decode(next.stderr));
    await assert.rejects(Deno.stat(toolDir), Deno.errors.NotFound);
  } finally {
    killAll([child.pid, ...running(children).map((p) => p.pid)]);
    await child.status;
    await stderr.cancel().catch(() => {});
    await Deno.remove(root, { recursive: true });
  }
});
