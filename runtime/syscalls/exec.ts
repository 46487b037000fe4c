/**
 * The `exec.run` syscall: runs an argv (never a shell string) through the
 * kernel's shell provider, inside the command sandbox.
 *
 * - `broker/command_analysis.ts` names every command the argv would run,
 *   wrappers and interpreters unwrapped; the call needs
 *   `exec:run:<command>` for each one, and nothing else. A policy `deny`
 *   or `ask` on any of them refuses the call.
 * - The command runs in the OS sandbox of `exec_sandbox.ts`: it sees the
 *   system's read-only runtime and exactly the paths the process's `fs`
 *   capabilities name (`exec_sandbox_view.ts`), has no network unless the
 *   process holds `net:fetch` capabilities, and runs under process, CPU,
 *   memory and file-size limits. When the sandbox cannot start on this
 *   host, the call is refused (`ENOSYS`) with the cause and the fix. With
 *   the operator's `--exec-sandbox none` the command runs unconfined as the
 *   host user, and every audit record of `exec.run` says so.
 * - The working directory is resolved through the filesystem provider's
 *   containment (default: the process's cwd). It needs no capability: a
 *   directory the view does not hold is an empty, read-only one.
 * - A program named by a path that is not a system program directory
 *   (`./build.sh`, `tools/x`) runs as the absolute path it was authorized
 *   as, resolved against the working directory; inside the sandbox it must
 *   be readable through an `fs:read` capability.
 * - The timeout (default {@link DEFAULT_EXEC_TIMEOUT_MS}, at most
 *   {@link MAX_EXEC_TIMEOUT_MS}) and the output cap (default
 *   {@link DEFAULT_EXEC_OUTPUT_BYTES}, at most {@link MAX_EXEC_OUTPUT_BYTES})
 *   end the command's whole process tree. A timeout is not an error: the
 *   result says `timedOut`, with the output read until then.
 * - The command's process group is also killed when the calling process
 *   stops for good (killed, failed, exited) or the host closes
 *   (`CallContext.signal`); the call then fails with `EINTR`, which is what
 *   a process parked by the closing host sees when it replays.
 *
 * @module
 */

import type { HandlerTable } from "../../broker/broker.ts";
import { analyzeCommand } from "../../broker/command_analysis.ts";
import type { Operation } from "../../broker/capability.ts";
import { SyscallError } from "../../broker/errors.ts";
import type { Capability } from "../../broker/capability.ts";
import type { ShellProvider, ShellResult } from "../shell_provider.ts";
import { type ExecSandbox, SANDBOX_OWN_PATHS, sandboxUnavailable } from "../exec_sandbox.ts";
import { sandboxView } from "../exec_sandbox_view.ts";
import { needsProxy, proxyAuditEntry, proxyAuthority, startCommandProxy } from "../exec_proxy.ts";
import { LocalNet, type NetProvider } from "../net_provider.ts";
import type { AuditEntry } from "../../broker/audit.ts";
import type { FsProvider } from "../fs_provider.ts";
import { posix } from "node:path";

/** Timeout of a command when the call names none. */
export const DEFAULT_EXEC_TIMEOUT_MS = 60_000;
/** Longest timeout a call may ask for. */
export const MAX_EXEC_TIMEOUT_MS = 3_600_000;
/** Output cap (stdout and stderr together) when the call names none. */
export const DEFAULT_EXEC_OUTPUT_BYTES: number = 1 << 20;
/** Largest output cap a call may ask for. */
export const MAX_EXEC_OUTPUT_BYTES: number = 8 << 20;

/** What the `exec` handlers need from the kernel. */
export interface ExecKernel {
  /** The shell provider. */
  readonly shell: ShellProvider;
  /** Resolves the working directory with containment; names the reserved paths. */
  readonly fs: Pick<FsProvider, "resolve" | "reservedPaths">;
  /** The process table, for the caller's cwd. */
  readonly processes: { require(pid: number): Promise<{ cwd: string }> };
  /** The capabilities a process holds: its `fs` ones make the command's view. */
  readonly caps: { list(holder: number, now?: number): Promise<Capability[]> };
  /** The clock. */
  readonly now: () => number;
  /** The command sandbox, or undefined when the operator chose `--exec-sandbox none`. */
  readonly sandbox: ExecSandbox | undefined;
  /** Resolves host names for the command proxy. */
  readonly net: Pick<NetProvider, "resolve">;
  /** Records the command proxy's connections in the audit. */
  readonly journal: {
    write(write: { audit: AuditEntry }, options: { durable: boolean }): Promise<void>;
  };
}

/** Limits of {@link execHandlers}. */
export interface ExecHandlerOptions {
  /** Timeout when the call names none (default {@link DEFAULT_EXEC_TIMEOUT_MS}). */
  defaultTimeoutMs?: number;
  /** Longest timeout (default {@link MAX_EXEC_TIMEOUT_MS}). */
  maxTimeoutMs?: number;
  /** Output cap when the call names none (default {@link DEFAULT_EXEC_OUTPUT_BYTES}). */
  defaultOutputBytes?: number;
  /** Largest output cap (default {@link MAX_EXEC_OUTPUT_BYTES}). */
  maxOutputBytes?: number;
}

/** What `exec.run` returns to the program. */
export type ExecResult = ShellResult;

/**
 * Handlers of the `exec` group.
 *
 * @example
 * ```ts ignore
 * const handlers = execHandlers(kernel, { defaultTimeoutMs: 30_000 });
 * ```
 */
export function execHandlers(kernel: ExecKernel, options: ExecHandlerOptions = {}): HandlerTable {
  const maxTimeoutMs = options.maxTimeoutMs ?? MAX_EXEC_TIMEOUT_MS;
  const defaultTimeoutMs = Math.min(
    options.defaultTimeoutMs ?? DEFAULT_EXEC_TIMEOUT_MS,
    maxTimeoutMs,
  );
  const maxOutputBytes = options.maxOutputBytes ?? MAX_EXEC_OUTPUT_BYTES;
  const defaultOutputBytes = Math.min(
    options.defaultOutputBytes ?? DEFAULT_EXEC_OUTPUT_BYTES,
    maxOutputBytes,
  );
  return {
    "exec.run": async (ctx, args) => {
      const name = args.argv[0];
      if (name === "" || args.argv.some((arg) => arg.includes("\0"))) {
        throw new SyscallError(
          "EINVAL",
          `Cannot run "${name.slice(0, 64)}": the command is empty or an argument has a NUL byte`,
        );
      }
      const proc = await kernel.processes.require(ctx.pid);
      const cwd = await kernel.fs.resolve(proc.cwd, args.cwd ?? ".");
      const { commands } = analyzeCommand(args.argv, { cwd });
      const ops = commands.map((target): Operation => ({ resource: "exec", right: "run", target }));
      // The program runs as the path it was authorized as.
      const argv = name.includes("/")
        ? [posix.resolve(cwd, name), ...args.argv.slice(1)]
        : args.argv;
      const sandbox = kernel.sandbox;
      if (sandbox) {
        const status = await sandbox.status();
        if (!status.ok) {
          throw new SyscallError(
            "ENOSYS",
            `Cannot run command "${name.slice(0, 64)}": ${sandboxUnavailable(status)}`,
          );
        }
      }
      const options = {
        cwd,
        timeoutMs: Math.min(args.timeoutMs ?? defaultTimeoutMs, maxTimeoutMs),
        maxOutputBytes: Math.min(args.maxOutputBytes ?? defaultOutputBytes, maxOutputBytes),
        signal: ctx.signal,
      };
      /** A command killed because its process stopped is an interrupted call, not a result. */
      const interrupted = (result: ShellResult): ShellResult => {
        if (result.signal !== null && ctx.signal?.aborted) {
          throw new SyscallError(
            "EINTR",
            `Cannot run "${name.slice(0, 64)}": the calling process stopped while it ran`,
          );
        }
        return result;
      };
      return {
        ops,
        effect: "effect",
        note: sandbox ? "exec-sandbox=bwrap" : "exec-sandbox=none",
        run: async () => {
          if (!sandbox) return interrupted(await kernel.shell.run(argv, options));
          const now = kernel.now();
          const capabilities = await kernel.caps.list(ctx.pid, now);
          const view = await sandboxView({
            capabilities,
            policy: ctx.policy,
            workspace: ctx.workspace,
            fs: kernel.fs,
            now,
            own: SANDBOX_OWN_PATHS,
          });
          const resolver = kernel.net.resolve ? kernel.net : new LocalNet();
          const proxy = needsProxy(capabilities, now)
            ? await startCommandProxy({
              authorize: proxyAuthority({
                capabilities: () => kernel.caps.list(ctx.pid, kernel.now()),
                policy: ctx.policy,
                workspace: ctx.workspace,
                now: kernel.now,
                resolve: (host) => resolver.resolve!(host),
              }),
              audit: async (record) =>
                await kernel.journal.write({
                  audit: await proxyAuditEntry(record, {
                    pid: ctx.pid,
                    image: ctx.image,
                    tool: ctx.tool,
                    at: kernel.now(),
                  }),
                }, { durable: false }),
            })
            : undefined;
          try {
            const run = await sandbox.prepare(view, {
              cwd,
              timeoutMs: options.timeoutMs,
              proxySocket: proxy?.socket,
            });
            try {
              return interrupted(await kernel.shell.run(argv, { ...options, sandbox: run }));
            } finally {
              await run.close();
            }
          } finally {
            await proxy?.close();
          }
        },
      };
    },
  };
}
