/**
 * `libos serve` as the operator runs it: a subprocess on a store, with the
 * HTTP API on loopback; SIGTERM parks running work, flushes, and exits 0.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { Kernel } from "../runtime/kernel.ts";

const CLI = new URL("../cli.ts", import.meta.url).pathname;

Deno.test("serve answers on loopback, and SIGTERM parks running processes and exits 0", async () => {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-serve-" }));
  const kvPath = join(root, "store.db");
  const tokens = join(root, "tokens.json");
  await Deno.writeTextFile(
    tokens,
    JSON.stringify({ tokens: [{ name: "op", token: "t".repeat(32), role: "operator" }] }),
  );
  try {
    {
      const kernel = await Kernel.open({ store: kvPath });
      const image = await kernel.images.register({
        name: "busy",
        version: "1.0.0",
        entry: "./main.ts",
        tools: [],
        capabilities: [],
        policy: {},
        limits: { syscallsPerSecond: 1_000_000 },
      }, { entrySource: "export default async (sys) => { for (;;) await sys.time.now(); }" });
      await kernel.spawn({ image: image.tag, workspace: root });
      await kernel.close();
    }
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--no-prompt",
        "-A",
        CLI,
        "serve",
        "--kv",
        kvPath,
        "--port",
        "0",
        "--tokens",
        tokens,
      ],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const lines = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
    let port = 0;
    let seen = "";
    while (!port) {
      const { value, done } = await lines.read();
      if (done) throw new Error(`serve ended early: ${seen}`);
      seen += value;
      const match = seen.match(/http:\/\/127\.0\.0\.1:(\d+)/);
      if (match) port = Number(match[1]);
    }
    const health = await fetch(`http://127.0.0.1:${port}/v1/health`);
    assert.equal(health.status, 200);
    assert.equal((await health.json()).ok, true);
    // Wait until the process is running in the server, then stop the server.
    for (;;) {
      const res = await fetch(`http://127.0.0.1:${port}/v1/processes/1`, {
        headers: { authorization: `Bearer ${"t".repeat(32)}` },
      });
      const body = await res.json();
      if (body.state === "running") break;
      await new Promise((r) => setTimeout(r, 20));
    }
    child.kill("SIGTERM");
    const status = await child.status;
    lines.releaseLock();
    await child.stdout.cancel();
    await child.stderr.cancel().catch(() => {});
    assert.equal(status.code, 0);
    const kernel = await Kernel.open({ store: kvPath });
    try {
      const record = await kernel.processes.require(1);
      assert.equal(record.state, "runnable", "the running process was parked for the next start");
      assert.equal((await kernel.audit.verify()).ok, true);
    } finally {
      await kernel.close();
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
