/**
 * `libos serve`: the host. Resumes every live process of the store and runs
 * them; with `--until-idle`, exits 0 once none remains. SIGINT and SIGTERM
 * shut down gracefully: running processes are parked (they replay on the
 * next start), the journal is flushed, exit 0.
 *
 * @module
 */

import { loadTokens } from "../api/auth.ts";
import { serveApi } from "../api/server.ts";
import { int, parse, str } from "./args.ts";
import { HOST_OPTIONS, type Io, openKernel } from "./context.ts";
import { humanFlag } from "./human.ts";
import { clip } from "./table.ts";

/** Cells a host keeps started ahead of need unless `--warm-cells` says otherwise. */
const DEFAULT_WARM_CELLS = 2;

/** `libos serve [--until-idle] [--human …] [--warm-cells N] [--exec-sandbox none] [--kv …]` */
export async function serveVerb(args: string[], io: Io): Promise<number> {
  const parsed = parse(args, {
    "until-idle": { type: "boolean" },
    human: { type: "string" },
    port: { type: "string" },
    host: { type: "string" },
    tokens: { type: "string" },
    "warm-cells": { type: "string" },
    ...HOST_OPTIONS,
  }, "serve");
  const human = await humanFlag(str(parsed, "human") ?? "deny", io);
  const warm = str(parsed, "warm-cells");
  const warmCells = warm === undefined
    ? DEFAULT_WARM_CELLS
    : warm === "0"
    ? 0
    : int(warm, "--warm-cells");
  const kernel = await openKernel(parsed, { human, warmCells, runs: true });
  const unsubscribe = kernel.processes.subscribe((record, event) => {
    if (io.interactive) {
      io.err(
        `[pid ${record.pid}] ${event.from ?? "new"} → ${event.to}${
          event.reason ? `: ${clip(event.reason, 80)}` : ""
        }`,
      );
    }
  });
  let stop!: () => void;
  const stopped = new Promise<void>((resolve) => stop = resolve);
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  for (const signal of signals) Deno.addSignalListener(signal, stop);
  let server: ReturnType<typeof serveApi> | undefined;
  try {
    const sandbox = await kernel.execSandboxStatus();
    io.err(`libos serve: exec sandbox ${sandbox.mode}: ${sandbox.detail}`);
    const resumed = await kernel.recover();
    io.err(`libos serve: resumed ${resumed} process(es)`);
    if (parsed.values["until-idle"]) await Promise.race([kernel.idle(), stopped]);
    else {
      const port = str(parsed, "port");
      server = serveApi(kernel, {
        tokens: await loadTokens(str(parsed, "tokens")),
        port: port === undefined ? 7311 : port === "0" ? 0 : int(port, "--port"),
        hostname: str(parsed, "host") ?? "127.0.0.1",
        cwd: Deno.cwd(),
        onListen: ({ port }) =>
          io.err(
            `libos serve: control API on http://${str(parsed, "host") ?? "127.0.0.1"}:${port}/v1`,
          ),
      });
      await stopped;
    }
    return 0;
  } finally {
    for (const signal of signals) Deno.removeSignalListener(signal, stop);
    unsubscribe();
    await server?.shutdown();
    await kernel.close();
  }
}
