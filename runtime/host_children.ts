/**
 * Children and temporary folders of a host die with it. Every subprocess
 * the host starts (cells, `deno check` of JIT tools, commands) goes through
 * {@link spawnHostChild}, and every temporary folder it makes through
 * {@link makeHostTempDir}. A host killed with SIGKILL runs no cleanup of its
 * own, so:
 *
 * - each child gets the parent-death signal `SIGKILL` (`setpriv
 *   --pdeathsig`, from util-linux, when the machine has it): the kernel
 *   kills the child as soon as the host is gone;
 * - the host writes the pid of each child to a file (`children`, one
 *   `+pid` or `-pid` line per start and end, with a synchronous write right
 *   after the spawn), and a watchman (`/bin/sh`, started with the first
 *   child) reads a pipe that only the host holds open, on which the host
 *   sends each child's pid as it starts (the watchman notes its start time).
 *   The pipe ends however the host ends; then the watchman kills every child
 *   the file still lists and the process group each one leads (a command
 *   started through `setsid`, with whatever it left running in the
 *   background), but never a pid the system has since given to another
 *   process;
 * - the host's temporary folders live in one folder of its own,
 *   `$TMPDIR/libos-host-<pid>-<random>`, which holds a lock file the host
 *   keeps locked; the next host to start removes every such folder whose lock
 *   it can take, since only a dead host has let go of its lock.
 *
 * @module
 */

import { basename, dirname, join } from "node:path";

const HOST_PREFIX = "libos-host-";
const STAGING_PREFIX = "libos-staging-";
const LOCK = ".lock";
const CHILDREN = "children";
const SYSTEM_PATH = "/usr/bin:/bin:/usr/sbin:/sbin";
/** Lines the children file may hold before it is rewritten with the live pids only. */
const COMPACT_AT = 4096;

/**
 * The watchman (`$1` is the children file, `$2` the proc file system). It ignores the signals a
 * terminal sends to the host's group, so it outlives the host. The host
 * writes `+pid` to its input right after each spawn: the watchman notes that
 * process's start time (from `/proc/<pid>/stat`). When its input ends (the
 * host is gone), it kills every child the file still lists, and the group it
 * leads, unless the pid now belongs to a process that started at another
 * time: a pid reused by the system is never killed. It echoes each pid it
 * noted (the host discards its output).
 */
export const _WATCHMAN = `trap '' HUP INT QUIT TERM PIPE
proc=$2
start() {
  at=
  { read -r stat < "$proc/$1/stat"; } 2>/dev/null || return 0
  set -- \${stat##*) }
  shift 19
  at=$1
}
seen=' '
while read -r line; do
  id=\${line#+}
  case $id in ''|*[!0-9]*) continue ;; esac
  start "$id"
  [ -n "$at" ] && seen="$seen$id:$at "
  echo "$id"
done
live=' '
while IFS= read -r line; do
  id=\${line#?}
  case $id in ''|*[!0-9]*) continue ;; esac
  case $line in
    +*) live="$live$id " ;;
    -*) case $live in *" $id "*) live="\${live%% $id *} \${live#* $id }" ;; esac ;;
  esac
done < "$1"
for id in $live; do
  start "$id"
  [ -n "$at" ] || continue
  case $seen in *" $id:"*)
    was=\${seen#* $id:}
    [ "\${was%% *}" = "$at" ] || continue ;;
  esac
  kill -s KILL -- "-$id" 2>/dev/null
  kill -s KILL "$id" 2>/dev/null
done
`;

/** The folder and the children file of this host, made on first use. */
interface HostState {
  folder: string;
  children: Deno.FsFile;
  /** Lines written to the children file since it was last rewritten. */
  lines: number;
  /** The watchman's input: the pid of each child, as it starts; its end means the host is gone. */
  watchman?: { alive: boolean; input: WritableStreamDefaultWriter<Uint8Array> };
}

let state: HostState | undefined;
const live = new Set<number>();
let pdeathsig: string[] | undefined;

/** This host's folder (made and locked on first use) and its children file. */
function hostState(): HostState {
  if (state) return state;
  // Made under another name and renamed once locked, so that no other host
  // ever sees the folder unlocked.
  const staging = Deno.makeTempDirSync({ prefix: STAGING_PREFIX });
  const lock = Deno.openSync(join(staging, LOCK), { create: true, write: true });
  if (!lock.tryLockSync(true)) {
    lock.close();
    throw new Error(`Cannot lock the temporary folder "${staging}"`);
  }
  const folder = join(
    dirname(staging),
    `${HOST_PREFIX}${Deno.pid}-${basename(staging).slice(STAGING_PREFIX.length)}`,
  );
  Deno.renameSync(staging, folder);
  const children = Deno.openSync(join(folder, CHILDREN), { create: true, append: true });
  globalThis.addEventListener("unload", () => {
    // An orderly exit: the host ends its children itself, then its folder.
    for (const pid of live) {
      for (const target of [-pid, pid]) {
        try {
          Deno.kill(target, "SIGKILL");
        } catch {
          // Not a group leader, or gone.
        }
      }
    }
    try {
      lock.close();
      Deno.removeSync(folder, { recursive: true });
    } catch {
      // Left for the next host.
    }
  });
  state = { folder, children, lines: 0 };
  return state;
}

/** `setpriv --pdeathsig KILL --` when this machine's `setpriv` supports it, else nothing. */
function parentDeathPrefix(): string[] {
  if (pdeathsig) return pdeathsig;
  pdeathsig = [];
  const setpriv = findProgram("setpriv");
  if (setpriv) {
    const prefix = [setpriv, "--pdeathsig", "KILL", "--"];
    try {
      const probe = new Deno.Command(setpriv, {
        args: [...prefix.slice(1), setpriv, "--version"],
        stdout: "null",
        stderr: "null",
      }).outputSync();
      if (probe.success) pdeathsig = prefix;
    } catch {
      // Not runnable here: the watchman alone covers the children.
    }
  }
  return pdeathsig;
}

/** Starts the watchman when none runs. */
function ensureWatchman(host: HostState): void {
  if (host.watchman?.alive) return;
  const child = new Deno.Command("/bin/sh", {
    args: ["-c", _WATCHMAN, "libos-watchman", join(host.folder, CHILDREN), "/proc"],
    cwd: "/",
    clearEnv: true,
    env: { PATH: SYSTEM_PATH },
    stdin: "piped",
    stdout: "null",
    stderr: "null",
  }).spawn();
  child.unref();
  const watchman = { alive: true, input: child.stdin.getWriter() };
  child.status.then(() => watchman.alive = false);
  host.watchman = watchman;
}

/** Appends one line to the children file, rewriting it with the live pids when it grew long. */
function record(host: HostState, line: string): void {
  if (host.lines >= COMPACT_AT) {
    const path = join(host.folder, CHILDREN);
    const text = [...live].map((pid) => `+${pid}\n`).join("");
    Deno.writeTextFileSync(`${path}.new`, text);
    Deno.renameSync(`${path}.new`, path); // the watchman reads the path only at the end
    host.children.close();
    host.children = Deno.openSync(path, { append: true });
    host.lines = live.size;
  }
  host.children.writeSync(new TextEncoder().encode(line + "\n"));
  host.lines++;
}

/**
 * Starts `program` like `new Deno.Command(program, options).spawn()`, as a
 * child that dies with the host (see the module documentation). The child's
 * pid is the program's pid.
 *
 * @example
 * ```ts ignore
 * const child = spawnHostChild(Deno.execPath(), { args: ["--version"], stdout: "piped" });
 * const { stdout } = await child.output();
 * ```
 */
export function spawnHostChild(
  program: string,
  options: Deno.CommandOptions = {},
): Deno.ChildProcess {
  const host = hostState();
  ensureWatchman(host);
  // setpriv runs the program by path; a bare name is left to Deno's lookup.
  const prefix = program.startsWith("/") ? parentDeathPrefix() : [];
  if (prefix.length) Deno.statSync(program); // a missing program fails here, as without setpriv
  const child = prefix.length
    ? new Deno.Command(prefix[0], {
      ...options,
      args: [...prefix.slice(1), program, ...(options.args ?? [])],
    }).spawn()
    : new Deno.Command(program, options).spawn();
  live.add(child.pid);
  record(host, `+${child.pid}`);
  host.watchman?.input.write(new TextEncoder().encode(`+${child.pid}\n`)).catch(() => {});
  child.status.then(() => {
    live.delete(child.pid);
    record(host, `-${child.pid}`);
  });
  return child;
}

/**
 * Makes a temporary folder inside this host's own folder: removed by the
 * next host to start if this one dies before it removes the folder itself.
 */
export async function makeHostTempDir(prefix: string): Promise<string> {
  return await Deno.makeTempDir({ dir: hostState().folder, prefix });
}

/**
 * Removes the temporary folders of hosts that have ended (their lock is
 * free); a host calls it when it starts. Returns the folders removed.
 */
export async function removeDeadHostFolders(): Promise<string[]> {
  const removed: string[] = [];
  let own: string;
  let owner: number | null;
  let entries: Deno.DirEntry[];
  try {
    own = hostState().folder;
    owner = (await Deno.lstat(own)).uid;
    entries = await Array.fromAsync(Deno.readDir(dirname(own)));
  } catch {
    return removed; // no temporary folder here: nothing of ours to clean either
  }
  const root = dirname(own);
  for (const entry of entries) {
    if (!entry.isDirectory || !entry.name.startsWith(HOST_PREFIX)) continue;
    const folder = join(root, entry.name);
    if (folder === own) continue;
    let lock: Deno.FsFile;
    try {
      const info = await Deno.lstat(folder);
      if (!info.isDirectory || info.uid !== owner) continue; // another user's
      lock = await Deno.open(join(folder, LOCK), { write: true });
    } catch {
      continue; // gone already, or not a host's folder
    }
    try {
      if (!(await lock.tryLock(true))) continue; // its host is alive
      await Deno.remove(folder, { recursive: true });
      removed.push(folder);
    } catch {
      // Removed by another host meanwhile, or not ours to remove.
    } finally {
      lock.close();
    }
  }
  return removed;
}

/**
 * The absolute path of the executable file `name` in the first directory of
 * `path` (a `PATH`-style list; relative entries are skipped) that has one.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { findProgram } from "./host_children.ts";
 * assert.equal(findProgram("sh", "/bin"), "/bin/sh");
 * assert.equal(findProgram("no-such-program", "/bin"), undefined);
 * ```
 */
export function findProgram(name: string, path: string = SYSTEM_PATH): string | undefined {
  for (const dir of path.split(":")) {
    if (!dir.startsWith("/")) continue;
    const candidate = join(dir, name);
    try {
      const stat = Deno.statSync(candidate);
      if (stat.isFile && stat.mode !== null && (stat.mode & 0o111) !== 0) return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}
