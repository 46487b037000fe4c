/**
 * The OS sandbox every `exec.run` command runs in: bubblewrap (`bwrap`)
 * with new user, mount, PID, IPC, UTS, network and (where the kernel has
 * them) cgroup namespaces, no capabilities, and a filesystem view made of
 *
 * - the system's read-only runtime: `/usr`, and `/bin`, `/sbin`, `/lib*`
 *   as the host has them (symlinks into `/usr`, or read-only binds);
 * - a minimal read-only `/etc`, assembled once per host start: a
 *   synthesized `passwd`, `group`, `hosts`, `hostname` and `nsswitch.conf`,
 *   and copies of `ld.so.*`, `alternatives`, `ssl/certs`,
 *   `ssl/openssl.cnf`, `protocols`, `services`, `localtime` and
 *   `os-release` (never `shadow`, `ssl/private` or the rest of `/etc`);
 * - a fresh, read-only `/proc` of its own PID namespace (so no host
 *   process, nor its environment, is visible, and no sysctl can be
 *   written), a minimal `/dev`, and a private, size-limited `/tmp` holding
 *   a fresh `HOME` (`/tmp/home`);
 * - exactly the paths the process's `fs` capabilities name
 *   (`exec_sandbox_view.ts`), at the same paths as on the host;
 * - the working directory: inside a bound path, or else an empty read-only
 *   directory at the same path. The rest of the root is read-only.
 *
 * Limits: CPU seconds, data size (memory), file size and the number of
 * processes. On an unprivileged host `prlimit` sets them inside the
 * sandbox, where the process limit counts the sandbox's own user namespace.
 * Linux does not enforce the process limit for root, so a host running as
 * root puts each command into a `pids` cgroup instead (found at start,
 * kept in a pool and reused; without one, commands are refused), and sets
 * the other limits in the small shell that enters it. The wall timeout and
 * the output cap stay with the shell provider: killing `bwrap` kills its
 * PID namespace, so the whole tree dies with it (`--die-with-parent` does
 * the same when the host dies).
 *
 * Network: none (`--unshare-net`), unless the process holds `net:fetch`
 * capabilities; then only through the host-side proxy of `exec_proxy.ts`,
 * reached through a Unix socket bound into the sandbox and a relay that
 * listens on the sandbox's own loopback (`HTTP_PROXY` and friends point at it).
 *
 * @module
 */

import { posix } from "node:path";
import { SyscallError } from "../broker/errors.ts";
import type { SandboxMount, SandboxView } from "./exec_sandbox_view.ts";
import { RELAY_SOURCE } from "./exec_proxy.ts";
import { findProgram } from "./host_children.ts";

/** How `exec.run` confines commands: `bwrap`, or `none` (commands run as the host user, unconfined). */
export type ExecSandboxMode = "bwrap" | "none";

/** Limits of one sandboxed command. */
export interface SandboxLimits {
  /** CPU seconds per process (RLIMIT_CPU). */
  cpuSeconds: number;
  /** Processes (and threads, with a cgroup) the command may have at once. */
  processes: number;
  /** Largest file the command may write, in bytes (RLIMIT_FSIZE). */
  fileBytes: number;
  /** Data memory per process, in bytes (RLIMIT_DATA: heap and private mappings). */
  memoryBytes: number;
  /** Size of the private `/tmp` (and the `HOME` inside it), in bytes. */
  tmpBytes: number;
}

/** Limits when the kernel names none. `cpuSeconds` follows the call's timeout. */
export const DEFAULT_SANDBOX_LIMITS: Omit<SandboxLimits, "cpuSeconds"> = {
  processes: 256,
  fileBytes: 1 << 30,
  memoryBytes: 2 * (1 << 30),
  tmpBytes: 512 * (1 << 20),
};

/** `HOME` inside the sandbox: an empty directory in its private `/tmp`. */
export const SANDBOX_HOME = "/tmp/home";

/** Paths every sandbox mounts itself; a granted tree is never bound over them. */
export const SANDBOX_OWN_PATHS: readonly string[] = ["/proc", "/dev", "/sys", "/tmp", SANDBOX_HOME];

/** Whether commands can be sandboxed on this host, and why not. */
export type SandboxStatus =
  | { ok: true; bwrap: string; processLimit: "rlimit" | "cgroup" }
  | { ok: false; cause: string; fix: string };

/** Options of {@link ExecSandbox}. */
export interface ExecSandboxOptions {
  /** The `bwrap` program (default: found on `PATH` and the system directories). */
  bwrap?: string;
  /** Limits other than `cpuSeconds` (default {@link DEFAULT_SANDBOX_LIMITS}). */
  limits?: Partial<Omit<SandboxLimits, "cpuSeconds">>;
}

/** One command's sandbox, ready to wrap the argv the shell provider spawns. */
export interface SandboxedRun {
  /** The argv, environment and host working directory that run `argv` inside the sandbox. */
  wrap(
    argv: readonly string[],
    options: { cwd: string; env: Record<string, string> },
  ): { argv: string[]; cwd: string; env: Record<string, string> };
  /** Kills what is left of the command and frees its cgroup. */
  close(): Promise<void>;
}

/** What {@link ExecSandbox.prepare} needs besides the view. */
export interface PrepareOptions {
  /** The working directory (a resolved absolute path). */
  cwd: string;
  /** The command's wall timeout: CPU seconds per process follow it. */
  timeoutMs: number;
  /** A Unix socket of the host proxy, for a process with `net:fetch` capabilities. */
  proxySocket?: string;
}

const SYSTEM_DIRS = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] as const;
/** `/etc` entries copied from the host into the sandbox's `/etc` (paths under `/etc`). */
const ETC_FROM_HOST = [
  "ld.so.cache",
  "ld.so.conf",
  "ld.so.conf.d",
  "alternatives",
  "ssl/certs",
  "ssl/openssl.cnf",
  "protocols",
  "services",
  "localtime",
  "os-release",
] as const;
const PROXY_PORT = 3128;
const RELAY_DIR = "/run/libos";
const FIX_INSTALL = "install bubblewrap (Debian and Ubuntu: apt-get install bubblewrap)";
const FIX_NONE = "or start the host with --exec-sandbox none to run commands unconfined";

/**
 * The sandbox of one host: probes once whether `bwrap` works, keeps the
 * synthesized `/etc` files in a runtime directory, and prepares each
 * command's run.
 *
 * @example
 * ```ts ignore
 * const sandbox = new ExecSandbox();
 * const status = await sandbox.status();
 * if (status.ok) {
 *   const run = await sandbox.prepare(view, { cwd: "/ws", timeoutMs: 10_000 });
 *   try {
 *     await shell.run(["cat", "a.txt"], { cwd: "/ws", timeoutMs: 10_000, maxOutputBytes: 1 << 20, sandbox: run });
 *   } finally {
 *     await run.close();
 *   }
 * }
 * await sandbox.close();
 * ```
 */
export class ExecSandbox {
  #options: ExecSandboxOptions;
  #limits: Omit<SandboxLimits, "cpuSeconds">;
  #status: Promise<_Probe> | undefined;
  #closed = false;
  /** Cgroups whose command is over, ready for the next one. */
  #cgroups: string[] = [];
  /** Every cgroup made, removed at close. */
  #made = new Set<string>();

  /** Creates a sandbox; nothing runs until {@link ExecSandbox.status} or a command. */
  constructor(options: ExecSandboxOptions = {}) {
    this.#options = options;
    this.#limits = { ...DEFAULT_SANDBOX_LIMITS, ...options.limits };
  }

  /** Whether commands can run sandboxed here (probed once, on first use). */
  async status(): Promise<SandboxStatus> {
    return (await this.#probe()).status;
  }

  /**
   * Prepares one command's sandbox.
   *
   * @throws {SyscallError} `ENOSYS` when the sandbox cannot start on this host.
   */
  async prepare(view: SandboxView, options: PrepareOptions): Promise<SandboxedRun> {
    const probe = await this.#probe();
    if (!probe.status.ok || !probe.host) {
      throw new SyscallError("ENOSYS", `Cannot run a command: ${sandboxUnavailable(probe.status)}`);
    }
    const host = probe.host;
    const limits: SandboxLimits = {
      ...this.#limits,
      cpuSeconds: Math.max(1, Math.ceil(options.timeoutMs / 1000)),
    };
    // A pids cgroup from the pool: made on first use, reused once its command is over.
    const cgroup = host.cgroupBase
      ? this.#cgroups.pop() ?? posix.join(host.cgroupBase, `libos-exec-${crypto.randomUUID()}`)
      : undefined;
    if (cgroup) this.#made.add(cgroup);
    let released = false;
    return {
      wrap: (argv, { env }) => ({
        argv: launchArguments(host, view, {
          argv,
          cwd: options.cwd,
          limits,
          cgroup,
          proxySocket: options.proxySocket,
        }),
        cwd: "/",
        env: {
          ...env,
          HOME: SANDBOX_HOME,
          ...(options.proxySocket === undefined ? {} : _proxyEnv()),
        },
      }),
      // deno-lint-ignore require-await -- part of the async SandboxedRun contract
      close: async () => {
        if (released || !cgroup) return;
        released = true;
        if (!this.#closed) this.#cgroups.push(cgroup);
      },
    };
  }

  /** Removes the runtime directory and the cgroups, killing whatever is left in them. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const probe = await this.#status?.catch(() => undefined);
    if (this.#made.size) await _run(["/bin/sh", "-c", CGROUP_CLEAN, "sh", ...this.#made]);
    if (probe?.host) await Deno.remove(probe.host.runtime, { recursive: true }).catch(() => {});
  }

  #probe(): Promise<_Probe> {
    this.#status ??= _probe(this.#options.bwrap, this.#limits);
    return this.#status;
  }
}

/**
 * Why commands are refused on this host, and the fix, in one line.
 *
 * @example
 * ```ts
 * import { sandboxUnavailable } from "./exec_sandbox.ts";
 * const text = sandboxUnavailable({ ok: false, cause: "bwrap was not found", fix: "install bubblewrap" });
 * console.assert(text.startsWith("the command sandbox cannot start: bwrap was not found"));
 * ```
 */
export function sandboxUnavailable(status: SandboxStatus): string {
  if (status.ok) return "the command sandbox is available";
  return `the command sandbox cannot start: ${status.cause}; ${status.fix}, ${FIX_NONE}`;
}

/** What the probe learned about the host. */
export interface SandboxHost {
  /** The `bwrap` program. */
  bwrap: string;
  /** The `prlimit` program (under `/usr`, so visible inside). */
  prlimit: string;
  /** The Deno binary, for the network relay. */
  deno: string;
  /** The runtime directory with the synthesized files. */
  runtime: string;
  /** Where per-command `pids` cgroups are made (a root host), or undefined. */
  cgroupBase?: string;
  /** `/bin`, `/lib`…: the symlink target, or `null` for a directory. */
  system: { name: string; target: string | null }[];
}

interface _Probe {
  status: SandboxStatus;
  host?: SandboxHost;
}

/**
 * The bubblewrap arguments (before `--` and the command) for one command.
 *
 * @example
 * ```ts ignore
 * const args = bwrapArguments(host, { mounts: [] }, { cwd: "/ws", limits });
 * ```
 */
export function bwrapArguments(
  host: SandboxHost,
  view: SandboxView,
  options: { cwd: string; limits: SandboxLimits; proxySocket?: string },
): string[] {
  const args = [
    "--unshare-user",
    "--unshare-pid",
    "--unshare-ipc",
    "--unshare-uts",
    "--unshare-net",
    "--unshare-cgroup-try",
    "--die-with-parent",
    "--new-session",
    "--cap-drop",
    "ALL",
    "--hostname",
    "libos",
    "--ro-bind",
    "/usr",
    "/usr",
  ];
  for (const { name, target } of host.system) {
    if (target === null) args.push("--ro-bind", `/${name}`, `/${name}`);
    else args.push("--symlink", target, `/${name}`);
  }
  args.push("--ro-bind", posix.join(host.runtime, "etc"), "/etc");
  args.push("--proc", "/proc", "--remount-ro", "/proc");
  args.push(
    "--dev",
    "/dev",
    "--size",
    String(options.limits.tmpBytes),
    "--perms",
    "1777",
    "--tmpfs",
    "/tmp",
    "--perms",
    "0700",
    "--dir",
    SANDBOX_HOME,
  );
  args.push(..._viewArguments(view.mounts, posix.join(host.runtime, "empty")));
  if (!_visible(view.mounts, options.cwd)) {
    // A directory the view does not hold: only what the view binds below it, read-only.
    args.push("--perms", "0555", "--dir", options.cwd, "--chmod", "0555", options.cwd);
  }
  if (options.proxySocket !== undefined) {
    args.push(
      "--dir",
      RELAY_DIR,
      "--bind",
      options.proxySocket,
      `${RELAY_DIR}/proxy.sock`,
      "--ro-bind",
      posix.join(host.runtime, "relay.js"),
      `${RELAY_DIR}/relay.js`,
      "--ro-bind",
      host.deno,
      `${RELAY_DIR}/deno`,
    );
  }
  args.push("--remount-ro", "/", "--chdir", options.cwd);
  return args;
}

function _viewArguments(mounts: readonly SandboxMount[], empty: string): string[] {
  const args: string[] = [];
  for (const mount of mounts) {
    switch (mount.kind) {
      case "bind":
        args.push(mount.writable ? "--bind-try" : "--ro-bind-try", mount.path, mount.path);
        break;
      case "symlink":
        args.push("--symlink", mount.target, mount.path);
        break;
      case "shell":
        args.push("--perms", "0555", "--tmpfs", mount.path);
        break;
      case "hide":
        if (mount.dir) args.push("--perms", "0555", "--tmpfs", mount.path);
        else args.push("--ro-bind", empty, mount.path);
        break;
    }
  }
  return args;
}

/** True when `path` lies in (or is) a bound tree or a path the view creates. */
function _visible(mounts: readonly SandboxMount[], path: string): boolean {
  return mounts.some((mount) =>
    (mount.kind === "bind" || mount.kind === "shell") &&
    (path === mount.path || path.startsWith(`${mount.path}/`) || mount.path === "/")
  );
}

/**
 * The whole argv the shell provider spawns for `options.argv`: on a root
 * host the shell that enters the command's cgroup and sets its limits, then
 * bwrap and its arguments, then (on an unprivileged host) `prlimit`, then
 * (with a proxy) the shell that starts the network relay, then the command.
 *
 * @example
 * ```ts ignore
 * const argv = launchArguments(host, view, { argv: ["/usr/bin/true"], cwd: "/ws", limits });
 * ```
 */
export function launchArguments(
  host: SandboxHost,
  view: SandboxView,
  options: {
    argv: readonly string[];
    cwd: string;
    limits: SandboxLimits;
    cgroup?: string;
    proxySocket?: string;
  },
): string[] {
  const { limits } = options;
  const inner = _innerScript(view.identities, options.proxySocket !== undefined);
  let command = inner === undefined
    ? [...options.argv]
    : ["/bin/sh", "-c", inner, "sh", ...view.identities.map((x) => x.path), ...options.argv];
  if (!options.cgroup) {
    command = [
      host.prlimit,
      `--cpu=${limits.cpuSeconds}`,
      `--data=${limits.memoryBytes}`,
      `--fsize=${limits.fileBytes}`,
      `--nproc=${limits.processes}`,
      "--core=0",
      "--",
      ...command,
    ];
  }
  const sandboxed = [host.bwrap, ...bwrapArguments(host, view, options), "--", ...command];
  if (!options.cgroup) return sandboxed;
  return [
    "/bin/sh",
    "-c",
    CGROUP_ENTER,
    "sh",
    options.cgroup,
    // bwrap and its init besides the command's own processes.
    String(limits.processes + 2),
    String(limits.cpuSeconds),
    String(Math.floor(limits.memoryBytes / 1024)),
    String(Math.floor(limits.fileBytes / 512)),
    ...sandboxed,
  ];
}

function _proxyEnv(): Record<string, string> {
  const proxy = `http://127.0.0.1:${PROXY_PORT}`;
  return {
    HTTP_PROXY: proxy,
    HTTPS_PROXY: proxy,
    http_proxy: proxy,
    https_proxy: proxy,
    NO_PROXY: "",
    no_proxy: "",
  };
}

/**
 * The shell that runs first inside the sandbox, when there is something to
 * do before the command: check that every bind is what the view was made
 * of (its paths are the first arguments), start the network relay.
 * Undefined when there is nothing to do.
 */
function _innerScript(
  identities: SandboxView["identities"],
  relay: boolean,
): string | undefined {
  if (identities.length === 0 && !relay) return undefined;
  const lines: string[] = [];
  if (identities.length) {
    // Only digits, ":" and newlines are written into the script; paths are arguments.
    const refs = identities.map((_, i) => `"\${${i + 1}}"`).join(" ");
    const want = identities.map((x) => x.id).join("\n");
    lines.push(
      `got=$(stat -c %d:%i -- ${refs} 2>/dev/null)`,
      `[ "$got" = "${want}" ] || { echo "libos: a path of the command's view changed while it started" >&2; exit 125; }`,
      `shift ${identities.length}`,
    );
  }
  if (relay) lines.push(RELAY_START);
  lines.push('exec "$@"');
  return lines.join("\n");
}

/**
 * Starts the relay (detached, so the command does not see it as a child)
 * and waits until it listens.
 */
const RELAY_START = `
mkfifo /tmp/.libos-relay-ready || exit 125
( ( DENO_DIR=/tmp/.libos-deno DENO_NO_UPDATE_CHECK=1 ${RELAY_DIR}/deno run --quiet --no-prompt \\
    --no-config --no-lock \\
    --allow-net=127.0.0.1:${PROXY_PORT},unix:${RELAY_DIR}/proxy.sock \\
    --allow-read=${RELAY_DIR},/tmp/.libos-relay-ready --allow-write=${RELAY_DIR},/tmp/.libos-relay-ready \\
    ${RELAY_DIR}/relay.js 127.0.0.1:${PROXY_PORT} unix:${RELAY_DIR}/proxy.sock /tmp/.libos-relay-ready \\
    </dev/null >/dev/null 2>&1; echo failed > /tmp/.libos-relay-ready ) & )
read ready < /tmp/.libos-relay-ready
rm -f /tmp/.libos-relay-ready
[ "$ready" = ready ] || { echo "libos: the network relay did not start" >&2; exit 125; }`;

/**
 * Enters the command's `pids` cgroup (`$1`, limit `$2`; made on first use)
 * and sets CPU seconds (`$3`), data KiB (`$4`) and file size in 512-byte
 * blocks (`$5`) with shell builtins, then runs bwrap.
 */
const CGROUP_ENTER = `cg=$1; max=$2; cpu=$3; data=$4; fsize=$5; shift 5
{ [ -d "$cg" ] || mkdir "$cg"; } && echo "$max" > "$cg/pids.max" && echo $$ > "$cg/cgroup.procs" ||
  { echo "libos: cannot enter the process-limit cgroup $cg" >&2; exit 125; }
ulimit -t "$cpu" && ulimit -d "$data" && ulimit -f "$fsize" && ulimit -c 0 ||
  { echo "libos: cannot set the command's limits" >&2; exit 125; }
exec "$@"`;

/** Kills whatever is left in the cgroups named by the arguments and removes them. */
const CGROUP_CLEAN = `for cg in "$@"; do
  [ -d "$cg" ] || continue
  n=0
  while procs=$(cat "$cg/cgroup.procs" 2>/dev/null) && [ -n "$procs" ] && [ $n -lt 500 ]; do
    kill -KILL $procs 2>/dev/null
    n=$((n + 1))
    sleep 0.01
  done
  rmdir "$cg" 2>/dev/null
done
exit 0`;

/** Finds a directory where a `pids` cgroup can be made and limited, and prints it. */
const CGROUP_FIND = `
try() {
  d="$1/libos-probe-$$"
  mkdir "$d" 2>/dev/null || return 1
  if [ -e "$d/pids.max" ] && echo 1 > "$d/pids.max" 2>/dev/null; then
    rmdir "$d"; echo "$1"; exit 0
  fi
  rmdir "$d" 2>/dev/null
  return 1
}
v1=$(awk '{ for (i = 7; i < NF; i++) if ($i == "-") { if ($(i+1) == "cgroup" && $(i+3) ~ /(^|,)pids(,|$)/) print $5; break } }' /proc/self/mountinfo | head -n 1)
v2=$(awk '{ for (i = 7; i < NF; i++) if ($i == "-") { if ($(i+1) == "cgroup2") print $5; break } }' /proc/self/mountinfo | head -n 1)
rel1=$(sed -n 's/^[0-9]*:\\([^:]*,\\)\\{0,1\\}pids\\(,[^:]*\\)\\{0,1\\}://p' /proc/self/cgroup | head -n 1)
rel2=$(sed -n 's/^0:://p' /proc/self/cgroup | head -n 1)
[ -n "$v1" ] && try "$v1$rel1"
[ -n "$v2" ] && try "$v2$rel2"
exit 0`;

async function _probe(
  bwrapOption: string | undefined,
  limits: Omit<SandboxLimits, "cpuSeconds">,
): Promise<_Probe> {
  const fail = (cause: string, fix: string): _Probe => ({ status: { ok: false, cause, fix } });
  const search = `/usr/bin:/bin:/usr/sbin:/sbin:/usr/local/bin:${_envPath()}`;
  const bwrap = bwrapOption ?? findProgram("bwrap", search);
  if (!bwrap) return fail("bwrap was not found", FIX_INSTALL);
  const prlimit = findProgram("prlimit", "/usr/bin:/usr/sbin");
  if (!prlimit) return fail("prlimit was not found under /usr", "install util-linux");
  const id = await _run(["id", "-u"]);
  const gid = await _run(["id", "-g"]);
  const uid = Number(id.stdout.trim());
  if (id.code !== 0 || !Number.isSafeInteger(uid)) {
    return fail("cannot tell the host's user id", "install coreutils (id)");
  }
  let cgroupBase: string | undefined;
  if (uid === 0) {
    const found = await _run(["/bin/sh", "-c", CGROUP_FIND]);
    cgroupBase = found.stdout.trim().split("\n")[0] || undefined;
    if (!cgroupBase) {
      return fail(
        "the host runs as root, where Linux does not enforce the process limit (RLIMIT_NPROC), " +
          "and no writable pids cgroup was found",
        "run the host as an unprivileged user, or give it a writable pids cgroup",
      );
    }
  }
  const runtime = await Deno.makeTempDir({ prefix: "libos-sandbox-" });
  try {
    const host: SandboxHost = {
      bwrap,
      prlimit,
      deno: Deno.realPathSync(Deno.execPath()),
      runtime,
      cgroupBase,
      system: _layout("/", SYSTEM_DIRS),
    };
    await _writeRuntime(runtime, uid, Number(gid.stdout.trim()) || 0);
    // A real command through the whole path, cgroup included.
    const cgroup = cgroupBase
      ? posix.join(cgroupBase, `libos-probe-${crypto.randomUUID()}`)
      : undefined;
    const launch = launchArguments(host, { mounts: [], identities: [] }, {
      argv: ["/bin/sh", "-c", "echo sandboxed"],
      cwd: "/",
      limits: { ...limits, cpuSeconds: 5, processes: 16 },
      cgroup,
    });
    const result = await _run(launch, { PATH: "/usr/bin:/bin" });
    if (cgroup) await _run(["/bin/sh", "-c", CGROUP_CLEAN, "sh", cgroup]);
    if (result.code !== 0 || result.stdout.trim() !== "sandboxed") {
      await Deno.remove(runtime, { recursive: true }).catch(() => {});
      const reason = result.stderr.trim().split("\n")[0] || `bwrap exited with code ${result.code}`;
      return fail(
        `bwrap cannot start a sandbox (${reason})`,
        /namespace|not permitted|permission/i.test(reason)
          ? "allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, or " +
            "on Ubuntu kernel.apparmor_restrict_unprivileged_userns=0)"
          : "reinstall bubblewrap 0.5 or later",
      );
    }
    return { status: { ok: true, bwrap, processLimit: cgroupBase ? "cgroup" : "rlimit" }, host };
  } catch (error) {
    await Deno.remove(runtime, { recursive: true }).catch(() => {});
    return fail(`the sandbox probe failed (${(error as Error).message})`, FIX_INSTALL);
  }
}

/** The host's layout of `names` under `dir`: symlink targets, `null` for what is bound. */
function _layout(dir: string, names: readonly string[]): { name: string; target: string | null }[] {
  const out: { name: string; target: string | null }[] = [];
  for (const name of names) {
    let info: Deno.FileInfo;
    try {
      info = Deno.lstatSync(dir + name);
    } catch {
      continue;
    }
    if (info.isSymlink) out.push({ name, target: Deno.readLinkSync(dir + name) });
    else if (info.isDirectory || info.isFile) out.push({ name, target: null });
  }
  return out;
}

async function _writeRuntime(runtime: string, uid: number, gid: number): Promise<void> {
  const etc = posix.join(runtime, "etc");
  await Deno.mkdir(etc);
  const users = [`root:x:0:0:root:${SANDBOX_HOME}:/bin/sh`];
  const groups = ["root:x:0:"];
  if (uid !== 0) users.push(`libos:x:${uid}:${gid}:libos:${SANDBOX_HOME}:/bin/sh`);
  if (gid !== 0) groups.push(`libos:x:${gid}:`);
  users.push("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin");
  groups.push("nogroup:x:65534:");
  const files: Record<string, string> = {
    passwd: users.join("\n") + "\n",
    group: groups.join("\n") + "\n",
    hosts: "127.0.0.1 localhost libos\n::1 localhost\n",
    hostname: "libos\n",
    "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files dns\n",
  };
  for (const [name, text] of Object.entries(files)) {
    await Deno.writeTextFile(posix.join(etc, name), text);
  }
  // Copies, not binds: one read-only bind of this directory is /etc inside.
  await Deno.mkdir(posix.join(etc, "ssl"));
  for (const name of ETC_FROM_HOST) {
    const from = `/etc/${name}`;
    if (!(await Deno.lstat(from).then(() => true, () => false))) continue;
    const copied = await _run(["cp", "-a", from, posix.join(etc, name)]);
    if (copied.code !== 0) throw new Error(`cannot copy ${from}: ${copied.stderr.trim()}`);
  }
  await Deno.writeTextFile(posix.join(runtime, "empty"), "");
  await Deno.writeTextFile(posix.join(runtime, "relay.js"), RELAY_SOURCE);
  await Deno.chmod(runtime, 0o700);
}

async function _run(
  argv: string[],
  env?: Record<string, string>,
): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const out = await new Deno.Command(argv[0], {
      args: argv.slice(1),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      ...(env ? { clearEnv: true, env } : {}),
    }).output();
    const text = new TextDecoder();
    return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
  } catch (error) {
    return { code: 127, stdout: "", stderr: (error as Error).message };
  }
}

function _envPath(): string {
  try {
    return Deno.env.get("PATH") ?? "";
  } catch {
    return "";
  }
}
