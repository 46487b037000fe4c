/**
 * The `exec.run` syscall: runs an argv (never a shell string) through the
 * kernel's shell provider.
 *
 * - The working directory is resolved through the filesystem provider's
 *   containment (default: the process's cwd) and needs `fs:read` on it.
 * - `broker/command_analysis.ts` names every command the argv would run,
 *   wrappers and interpreters unwrapped; the call needs
 *   `exec:run:<command>` for each one. A policy `deny` or `ask` on any of
 *   them refuses the call.
 * - A program named by a path that is not a system program directory
 *   (`./build.sh`, `tools/x`) runs as the absolute path it was authorized
 *   as, resolved against the working directory.
 * - The timeout (default {@link DEFAULT_EXEC_TIMEOUT_MS}, at most
 *   {@link MAX_EXEC_TIMEOUT_MS}) and the output cap (default
 *   {@link DEFAULT_EXEC_OUTPUT_BYTES}, at most {@link MAX_EXEC_OUTPUT_BYTES})
 *   end the command's whole process group. A timeout is not an error: the
 *   result says `timedOut`, with the output read until then.
 * - The command's process group is also killed when the calling process
 *   stops for good (killed, failed, exited) or the host closes
 *   (`CallContext.signal`); the call then fails with `EINTR`, which is what
 *   a process parked by the closing host sees when it replays.
 *
 * A granted command runs with the host's own permissions; only the command
 * names are checked, not what the command touches. Grant accordingly.
 *
 * @module
 */

import type { HandlerTable } from "../../broker/broker.ts";
import { analyzeCommand } from "../../broker/command_analysis.ts";
import type { Operation } from "../../broker/capability.ts";
import { SyscallError } from "../../broker/errors.ts";
import type { ShellProvider, ShellResult } from "../shell_provider.ts";
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
  /** Resolves the working directory with containment. */
  readonly fs: { resolve(cwd: string, path: string): Promise<string> };
  /** The process table, for the caller's cwd. */
  readonly processes: { require(pid: number): Promise<{ cwd: string }> };
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
      const ops: Operation[] = [
        { resource: "fs", right: "read", target: cwd },
        ...commands.map((target): Operation => ({ resource: "exec", right: "run", target })),
      ];
      // The program runs as the path it was authorized as.
      const argv = name.includes("/")
        ? [posix.resolve(cwd, name), ...args.argv.slice(1)]
        : args.argv;
      return {
        ops,
        effect: "effect",
        run: async () => {
          const result = await kernel.shell.run(argv, {
            cwd,
            timeoutMs: Math.min(args.timeoutMs ?? defaultTimeoutMs, maxTimeoutMs),
            maxOutputBytes: Math.min(args.maxOutputBytes ?? defaultOutputBytes, maxOutputBytes),
            signal: ctx.signal,
          });
          if (result.signal !== null && ctx.signal?.aborted) {
            throw new SyscallError(
              "EINTR",
              `Cannot run "${name.slice(0, 64)}": the calling process stopped while it ran`,
            );
          }
          return result;
        },
      };
    },
  };
}
