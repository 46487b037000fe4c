/**
 * The `libos` command line: `deno task libos VERB …`, or `deno run` of this
 * module. Every verb takes `--kv PATH|URL` (or `LIBOS_KV`) and `--json`;
 * every verb but `demo`, `serve` and `checkpoint` also works against a
 * running server with `--server URL --token T` (or `LIBOS_SERVER` and
 * `LIBOS_TOKEN`). Errors are one line on stderr and a non-zero exit:
 * 1 for bad input or an unreachable server, 2 for a process that ended
 * other than `exited`.
 *
 * @example
 * ```ts ignore
 * import { main } from "./cli.ts";
 * Deno.exit(await main(["ps", "--kv", ".libos/libos.db"]));
 * ```
 *
 * @module
 */

import { type Io, TERMINAL_IO, type Verb } from "./cli/context.ts";
import { killVerb, signalVerb } from "./cli/control.ts";
import { demoVerb } from "./cli/demo.ts";
import { auditVerb, imagesVerb, logsVerb, objVerb, psVerb, statusVerb } from "./cli/inspect.ts";
import { runVerb, spawnVerb } from "./cli/run.ts";
import { approvalsVerb, approveVerb, denyVerb } from "./cli/human.ts";
import { checkpointVerb } from "./cli/checkpoint.ts";
import { serveVerb } from "./cli/serve.ts";

export type { Io } from "./cli/context.ts";

const VERBS: Record<string, Verb> = {
  demo: demoVerb,
  run: runVerb,
  spawn: spawnVerb,
  status: statusVerb,
  ps: psVerb,
  images: imagesVerb,
  audit: auditVerb,
  obj: objVerb,
  logs: logsVerb,
  kill: killVerb,
  signal: signalVerb,
  approvals: approvalsVerb,
  approve: approveVerb,
  deny: denyVerb,
  checkpoint: checkpointVerb,
  serve: serveVerb,
};

const USAGE = `Usage: libos VERB [flags]
  demo                                   run the built-in demo
  run IMAGE [--workspace DIR] [--model scripted:FILE|openai:NAME] [--input TEXT]
            [--human scripted:FILE|deny|queue|interactive]
            [--cap CAP]... [--policy PATTERN=DECISION]... [--exec-sandbox none] [--json]
  spawn IMAGE [same flags as run]        create a process, print its pid
  serve [--until-idle] [--human ...] [--exec-sandbox none] [--warm-cells N]
                                         run every live process of the store
  status                                 how commands are confined and cells shared
run, serve, status also take --cell-sharing tree|principal, --isolation shared|process,
  --cell-workers N, --wait-grace-ms N    who shares a cell (see docs/cli.md)
  ps [--tree]      images      logs PID [--follow]      kill PID      signal PID SIG
  approvals        approve ID [--always] [--ttl D] [--answer TEXT]   deny ID [--always]
  checkpoint save PID | list | restore ID | fork ID
  obj get NS NAME | obj put NS NAME JSON [--type T] | obj list NS
  audit [--pid N] [--denied] [--json] | audit verify
Every verb takes --kv PATH|URL (or LIBOS_KV) and --json. All but demo, serve and
checkpoint also work against a server: --server URL --token T (or LIBOS_SERVER, LIBOS_TOKEN).`;

/** Verbs that only work on a store, never against a server. */
const LOCAL_ONLY = new Set(["demo", "serve"]);

/** Runs one CLI invocation and returns its exit code. */
export async function main(args: string[], io: Io = TERMINAL_IO): Promise<number> {
  const [verb, ...rest] = args;
  if (!verb || verb === "help" || verb === "--help" || verb === "-h") {
    io.out(USAGE);
    return verb ? 0 : 1;
  }
  const run = VERBS[verb];
  if (!run) {
    io.err(`libos: unknown verb "${verb}" (try "libos help")`);
    return 1;
  }
  if (LOCAL_ONLY.has(verb) && rest.some((a) => /^--(server|token)(=|$)/.test(a))) {
    io.err(
      `libos ${verb}: Cannot ${verb} against a server: it works only on a local store (--kv)`,
    );
    return 1;
  }
  try {
    return await run(rest, io);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    io.err(`libos ${verb}: ${message.split("\n")[0]}`);
    return 1;
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
