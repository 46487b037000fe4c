/**
 * What every CLI verb shares: where output goes, how the kernel is opened
 * from `--kv` / `LIBOS_KV`, and how a verb reaches a server instead with
 * `--server` / `LIBOS_SERVER` and `--token` / `LIBOS_TOKEN`.
 *
 * @module
 */

import { printable } from "../broker/printable.ts";
import type { ExecSandboxMode } from "../runtime/exec_sandbox.ts";
import { Kernel, type KernelOptions } from "../runtime/kernel.ts";
import { resolveModelSpec } from "../runtime/model_spec.ts";
import { int, type Parsed, str, UsageError } from "./args.ts";
import { RemoteClient, remoteTarget } from "./remote.ts";

/** Output streams of a CLI invocation (swappable in tests). */
export interface Io {
  /** Writes one line of regular output (stdout). */
  out(line: string): void;
  /** Writes one line of diagnostics (stderr). */
  err(line: string): void;
  /** True when stderr is a terminal: show progress. */
  interactive: boolean;
}

/** Each line of `text` made {@link printable}; the line breaks between them are kept. */
function _printableLines(text: string): string {
  return text.split("\n").map(printable).join("\n");
}

/**
 * The real terminal. Whatever a verb prints is made printable on the way
 * out, so no text a process chose (even in JSON output) reaches the
 * terminal as a control character.
 */
export const TERMINAL_IO: Io = {
  out: (line) => console.log(_printableLines(line)),
  err: (line) => console.error(_printableLines(line)),
  interactive: Deno.stderr.isTerminal(),
};

/**
 * Opens the kernel over the store the flags name, with the `--exec-sandbox`
 * they choose. It runs no process unless `options.runs` says so (only `run`
 * and `serve` do): a verb that answers, signals, spawns or restores changes
 * the store, and the host serving the store sees the change and runs what it
 * made runnable.
 */
export function openKernel(parsed: Parsed, options: KernelOptions = {}): Promise<Kernel> {
  return Kernel.open({
    store: str(parsed, "kv"),
    resolveModel: resolveModelSpec,
    runs: false,
    execSandbox: execSandboxFlag(parsed),
    ...cellFlags(parsed),
    ...options,
  });
}

/** The `--exec-sandbox bwrap|none` flag of the verbs that host processes (`run`, `serve`). */
export const SANDBOX_OPTIONS = { "exec-sandbox": { type: "string" } } as const;

/** The `--exec-sandbox` choice, or undefined for the default (`bwrap`). */
export function execSandboxFlag(parsed: Parsed): ExecSandboxMode | undefined {
  const value = str(parsed, "exec-sandbox");
  if (value === undefined || value === "bwrap" || value === "none") return value;
  throw new UsageError(`Expected --exec-sandbox to be "bwrap" or "none", got "${value}"`);
}

/**
 * The flags of the verbs that host processes (`run`, `serve`; `status`
 * shows them): the exec sandbox, and how programs share cells
 * (`--cell-sharing tree|principal`, `--isolation shared|process`,
 * `--cell-workers N`, `--wait-grace-ms N`).
 */
export const HOST_OPTIONS = {
  ...SANDBOX_OPTIONS,
  "cell-sharing": { type: "string" },
  isolation: { type: "string" },
  "cell-workers": { type: "string" },
  "wait-grace-ms": { type: "string" },
} as const;

/** The kernel options the cell flags choose (none given: the kernel's defaults). */
function cellFlags(parsed: Parsed): Partial<KernelOptions> {
  const out: Partial<KernelOptions> = {};
  const sharing = str(parsed, "cell-sharing");
  if (sharing !== undefined) {
    if (sharing !== "tree" && sharing !== "principal") {
      throw new UsageError(`Expected --cell-sharing to be "tree" or "principal", got "${sharing}"`);
    }
    out.cellSharing = sharing;
  }
  const isolation = str(parsed, "isolation");
  if (isolation !== undefined) {
    if (isolation !== "shared" && isolation !== "process") {
      throw new UsageError(`Expected --isolation to be "shared" or "process", got "${isolation}"`);
    }
    out.isolation = isolation;
  }
  const workers = str(parsed, "cell-workers");
  if (workers !== undefined) out.cellWorkers = int(workers, "--cell-workers");
  const grace = str(parsed, "wait-grace-ms");
  if (grace !== undefined) out.waitGraceMs = grace === "0" ? 0 : int(grace, "--wait-grace-ms");
  return out;
}

/** A verb: takes its own arguments, returns the exit code. */
export type Verb = (args: string[], io: Io) => Promise<number>;

/** The flags of every verb that can work against a server. */
export const REMOTE_OPTIONS = {
  server: { type: "string" },
  token: { type: "string" },
} as const;

/**
 * A client of the server the flags (or `LIBOS_SERVER` / `LIBOS_TOKEN`)
 * name, or undefined to work in-process on the store.
 */
export function remoteClient(parsed: Parsed): RemoteClient | undefined {
  const target = remoteTarget({
    server: str(parsed, "server"),
    token: str(parsed, "token"),
    kv: str(parsed, "kv"),
  });
  return target ? new RemoteClient(target.server, { token: target.token }) : undefined;
}

/** Fails with one line: `what` has no HTTP API route, so it works only on a store. */
export function notRemote(what: string): never {
  throw new UsageError(
    `Cannot ${what} over the HTTP API: it has no route for that; run it with --kv on the server's host`,
  );
}
