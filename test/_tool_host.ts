/**
 * The host program of `killed_host_test.ts`, which runs it as a subprocess
 * and kills it with SIGKILL:
 *
 * ```sh
 * deno run --no-prompt --allow-read --allow-write --allow-run --allow-env \
 *   test/_tool_host.ts KV_PATH WORKSPACE [open]
 * ```
 *
 * It opens the kernel over the KV file and, unless told only to `open` (a
 * host start, and nothing else), runs one process that registers JIT tools
 * one after another for ever (so a `deno check` of a tool's source is nearly
 * always running) and one command that leaves a process running in the
 * background, then waits to be killed.
 *
 * @module
 */

import { Kernel } from "../runtime/kernel.ts";

const REGISTRAR = `export default async function main(sys) {
  for (let i = 0; ; i++) {
    await sys.tool.register({
      name: "t" + i,
      description: "returns its number",
      input: { type: "object" },
      manifest: { capabilities: [] },
      source: "export function run(): number { return " + i + "; }",
    });
  }
}`;

async function hostMain(args: string[]): Promise<number> {
  const [kvPath, workspace, mode] = args;
  if (!kvPath || !workspace) {
    console.error("usage: _tool_host.ts KV_PATH WORKSPACE [open]");
    return 1;
  }
  const kernel = await Kernel.open({ store: kvPath });
  if (mode === "open") {
    await kernel.close();
    return 0;
  }
  const image = await kernel.images.register({
    name: "registrar",
    version: "1.0.0",
    entry: "./main.ts",
    tools: [],
    capabilities: ["tool:register:*"],
    policy: {},
  }, { entrySource: REGISTRAR });
  const proc = await kernel.spawn({ image: image.tag, workspace });
  kernel.start(proc.pid);
  kernel.shell.run(["/bin/sh", "-c", "sleep 1000 & sleep 1000"], {
    cwd: workspace,
    timeoutMs: 1_000_000,
    maxOutputBytes: 1024,
  }).catch((error) => console.error(`tool host: the command failed: ${error.message}`));
  setInterval(() => {}, 1 << 30); // until killed
  return await new Promise<number>(() => {});
}

if (import.meta.main) {
  Deno.exit(await hostMain(Deno.args));
}
