/**
 * The shell provider: every `exec.run` ends here. {@link LocalShell} runs
 * an argv on the host with `Deno.Command`, never through a shell string:
 *
 * - a scrubbed environment: only `PATH` (the operator's), `LANG=C.UTF-8`
 *   and `HOME=<a fresh empty directory>`, plus what the caller passes in `env`;
 * - no way into the host process: the host is made non-dumpable and the
 *   command starts through `setpriv` with no capabilities and
 *   `no_new_privs`, so it cannot read `/proc/<host pid>/environ` or `mem`
 *   (`command_confinement.ts`); a host that cannot be protected so runs no
 *   command;
 * - standard input closed;
 * - its own process group (the child is started through `setsid` when the
 *   host has it), and the whole group is killed with `SIGKILL` on timeout,
 *   when the output cap is reached, when the caller aborts, and after the
 *   command exits, so no background process outlives the call;
 * - output capped: stdout and stderr together stop at `maxOutputBytes`,
 *   the result is marked `truncated` and the group is killed.
 *
 * Output goes to the caller only. A process that starts a session of its
 * own (`setsid` inside the command) leaves the group and is not killed;
 * reading its output ends `drainMs` after the command exits.
 *
 * @example
 * ```ts ignore
 * import { LocalShell } from "./shell_provider.ts";
 *
 * const shell = new LocalShell();
 * const result = await shell.run(["echo", "hi"], {
 *   cwd: Deno.cwd(),
 *   timeoutMs: 5_000,
 *   maxOutputBytes: 1 << 20,
 * });
 * console.log(result.code, result.stdout); // 0 "hi\n"
 * ```
 *
 * @module
 */

import { posix } from "node:path";
import { SyscallError } from "../broker/errors.ts";
import { type CommandConfinement, confineCommands } from "./command_confinement.ts";
import { findProgram, makeHostTempDir, spawnHostChild } from "./host_children.ts";

/** How one command runs. */
export interface ShellRunOptions {
  /** The absolute working directory. */
  cwd: string;
  /** Wall time after which the whole process group is killed. */
  timeoutMs: number;
  /** Bytes of stdout and stderr together after which output stops and the group is killed. */
  maxOutputBytes: number;
  /** Variables added to the scrubbed environment. */
  env?: Record<string, string>;
  /** Aborting it kills the process group. */
  signal?: AbortSignal;
  /**
   * Runs the command inside an OS sandbox (`exec_sandbox.ts`): it turns the
   * resolved argv, working directory and environment into the ones spawned.
   */
  sandbox?: {
    wrap(
      argv: readonly string[],
      options: { cwd: string; env: Record<string, string> },
    ): { argv: string[]; cwd: string; env: Record<string, string> };
  };
}

/** How one command ended. */
export interface ShellResult {
  /** The exit code (128 + the signal number when a signal ended it). */
  code: number;
  /** The signal that ended it, if one did. */
  signal: string | null;
  /** Standard output, decoded as UTF-8. */
  stdout: string;
  /** Standard error, decoded as UTF-8. */
  stderr: string;
  /** The output reached `maxOutputBytes` and was cut there. */
  truncated: boolean;
  /** The command ran out of `timeoutMs` and was killed. */
  timedOut: boolean;
}

/** Runs commands for `exec.run`. */
export interface ShellProvider {
  /** Runs `argv` (never a shell string) and resolves once it and its process group are gone. */
  run(argv: readonly string[], options: ShellRunOptions): Promise<ShellResult>;
}

/** Options of {@link LocalShell}. */
export interface LocalShellOptions {
  /** `PATH` for commands (default: the absolute entries of the host's `PATH`). */
  path?: string;
  /** The `setsid` program, or `false` to kill only the direct child (default: found on `PATH`). */
  setsid?: string | false;
  /** How long output is still read after the command exited, in ms (default 1000). */
  drainMs?: number;
}

const DEFAULT_DRAIN_MS = 1000;
const FALLBACK_PATH = "/usr/local/bin:/usr/bin:/bin";
/** Where the helper programs (`setsid`, `setpriv`) are looked for. */
const SYSTEM_PATH = "/usr/bin:/bin:/usr/sbin:/sbin";

/**
 * Runs commands on the local host (see the module documentation).
 *
 * @example
 * ```ts ignore
 * import { LocalShell } from "./shell_provider.ts";
 * const shell = new LocalShell({ path: "/usr/bin:/bin" });
 * const options = { cwd: "/tmp", timeoutMs: 1000, maxOutputBytes: 1024 };
 * const { stdout } = await shell.run(["pwd"], options);
 * ```
 */
export class LocalShell implements ShellProvider {
  /** The `PATH` commands run with. */
  readonly path: string;
  #setsid: string | undefined;
  #drainMs: number;
  #confinement: Promise<CommandConfinement> | undefined;

  /** Creates a provider; reads the host's `PATH` once. */
  constructor(options: LocalShellOptions = {}) {
    this.path = options.path ?? _hostPath();
    this.#setsid = options.setsid === false
      ? undefined
      : options.setsid ?? findProgram("setsid", SYSTEM_PATH);
    this.#drainMs = options.drainMs ?? DEFAULT_DRAIN_MS;
  }

  /** Whether commands get a process group of their own that is killed as a whole. */
  get groups(): boolean {
    return this.#setsid !== undefined;
  }

  /** Runs `argv`; see {@link ShellProvider.run}. */
  async run(argv: readonly string[], options: ShellRunOptions): Promise<ShellResult> {
    // A sandboxed command is confined by the sandbox (its own PID namespace and
    // /proc, no capabilities); bwrap needs the host's to map its user. An
    // unconfined one starts through setpriv without them.
    let prefix: readonly string[] = [];
    if (!options.sandbox) {
      this.#confinement ??= confineCommands(findProgram("setpriv", SYSTEM_PATH));
      const confinement = await this.#confinement;
      if (confinement.refusal) {
        throw new SyscallError(
          "EPERM",
          `Cannot run "${String(argv[0]).slice(0, 64)}": ${confinement.refusal}`,
        );
      }
      prefix = confinement.prefix;
    }
    // A fresh, empty HOME per call: dotfiles a program wrote into the
    // workspace (.gitconfig, .bashrc, Python user site) are never read.
    const home = await makeHostTempDir("libos-home-");
    try {
      return await this.#run(argv, options, home, prefix);
    } finally {
      await Deno.remove(home, { recursive: true }).catch(() => {});
    }
  }

  async #run(
    argv: readonly string[],
    options: ShellRunOptions,
    home: string,
    confinement: readonly string[],
  ): Promise<ShellResult> {
    const program = this.#resolve(argv, options.cwd);
    const plain = {
      argv: [program, ...argv.slice(1)],
      cwd: options.cwd,
      env: { PATH: this.path, LANG: "C.UTF-8", HOME: home, ...options.env },
    };
    const spawn = options.sandbox?.wrap(plain.argv, plain) ?? plain;
    // setsid, then setpriv (unconfined commands only), then the program or the
    // sandbox around it: each execs the next, one pid.
    const [first, ...rest] = [
      ...(this.#setsid ? [this.#setsid] : []),
      ...confinement,
      ...spawn.argv,
    ];
    let child: Deno.ChildProcess;
    try {
      child = spawnHostChild(first, {
        args: rest,
        cwd: spawn.cwd,
        clearEnv: true,
        env: spawn.env,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      });
    } catch (error) {
      throw new SyscallError(
        error instanceof Deno.errors.NotFound ? "ENOENT" : "EINVAL",
        `Cannot run "${argv[0]}": ${(error as Error).message}`,
      );
    }
    const group = this.#setsid !== undefined;
    const kill = () => _killGroup(child.pid, group);
    let timedOut = false;
    let truncated = false;
    const budget = { left: Math.max(0, options.maxOutputBytes) };
    const onFull = () => {
      truncated = true;
      kill();
    };
    const timer = setTimeout(() => {
      timedOut = true;
      kill();
    }, Math.max(0, options.timeoutMs));
    const onAbort = () => kill();
    options.signal?.addEventListener("abort", onAbort, { once: true });
    if (options.signal?.aborted) kill();
    const stdout = _collect(child.stdout, budget, onFull);
    const stderr = _collect(child.stderr, budget, onFull);
    try {
      const status = await child.status;
      clearTimeout(timer);
      // Whatever the command left running in its group goes with it. (Without a
      // group the pid is reaped and may be reused: it is not signalled again.)
      if (group) _killGroup(child.pid, true, false);
      const drained = await _within(Promise.all([stdout.done, stderr.done]), this.#drainMs);
      if (!drained) {
        stdout.cancel();
        stderr.cancel();
        await Promise.all([stdout.done, stderr.done]);
      }
      return {
        code: status.code,
        signal: status.signal ?? null,
        stdout: _decode(stdout.chunks),
        stderr: _decode(stderr.chunks),
        truncated,
        timedOut,
      };
    } finally {
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
    }
  }

  /** The absolute program path: `PATH` lookup for a bare name, `cwd` for a relative path. */
  #resolve(argv: readonly string[], cwd: string): string {
    const name = argv[0];
    if (name === undefined || name === "") {
      throw new SyscallError("EINVAL", "Cannot run a command: argv is empty");
    }
    const nul = argv.findIndex((arg) => arg.includes("\0"));
    if (nul >= 0) {
      throw new SyscallError("EINVAL", `Cannot run "${name}": argument ${nul} contains a NUL byte`);
    }
    if (!posix.isAbsolute(cwd)) {
      throw new SyscallError("EINVAL", `Cannot run "${name}": cwd "${cwd}" is not absolute`);
    }
    if (name.includes("/")) return posix.resolve(cwd, name);
    const found = findProgram(name, this.path);
    if (!found) throw new SyscallError("ENOENT", `Cannot run "${name}": command not found`);
    return found;
  }
}

function _hostPath(): string {
  let path: string | undefined;
  try {
    path = Deno.env.get("PATH");
  } catch {
    path = undefined;
  }
  const dirs = (path ?? "").split(":").filter((dir) => posix.isAbsolute(dir));
  return dirs.length ? [...new Set(dirs)].join(":") : FALLBACK_PATH;
}

/**
 * Kills the group led by `pid` and, while it may not be reaped yet, `pid`
 * itself: right after the spawn `setsid` may not have made the group yet.
 */
function _killGroup(pid: number, group: boolean, leader = true): void {
  for (const target of group ? (leader ? [-pid, pid] : [-pid]) : [pid]) {
    try {
      Deno.kill(target, "SIGKILL");
    } catch {
      // Already gone.
    }
  }
}

interface Collector {
  chunks: Uint8Array[];
  done: Promise<void>;
  cancel(): void;
}

/** Reads a stream while the shared byte budget lasts, then cancels it and calls `onFull`. */
function _collect(
  stream: ReadableStream<Uint8Array>,
  budget: { left: number },
  onFull: () => void,
): Collector {
  const chunks: Uint8Array[] = [];
  const reader = stream.getReader();
  const done = (async () => {
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        if (value.length > budget.left) {
          if (budget.left > 0) chunks.push(value.subarray(0, budget.left));
          budget.left = 0;
          onFull();
          await reader.cancel().catch(() => {});
          return;
        }
        budget.left -= value.length;
        chunks.push(value);
      }
    } catch {
      // Cancelled or broken pipe: keep what was read.
    } finally {
      reader.releaseLock();
    }
  })();
  return { chunks, done, cancel: () => void reader.cancel().catch(() => {}) };
}

async function _within(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), ms));
  try {
    return await Promise.race([promise.then(() => true as const), deadline]);
  } finally {
    clearTimeout(timer);
  }
}

function _decode(chunks: readonly Uint8Array[]): string {
  const decoder = new TextDecoder();
  let text = "";
  for (const chunk of chunks) text += decoder.decode(chunk, { stream: true });
  return text + decoder.decode();
}
