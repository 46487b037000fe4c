/**
 * Keeps commands (`exec.run`) from reading the host process: its
 * environment (`/proc/<host pid>/environ`, which holds the model API key
 * and the admin token the host was started with), its memory
 * (`/proc/<host pid>/mem`), and whatever else Linux guards with the same
 * ptrace access check (`maps`, `fd/`, `ptrace` itself).
 *
 * Linux lets a process pass that check on another when both run as the same
 * user, the target is dumpable, and the caller's capabilities include every
 * capability the target holds; `CAP_SYS_PTRACE` passes it always. Measured
 * on Debian 12:
 *
 * - a host running as root: its commands (root, every capability) read its
 *   environment, dumpable or not; commands with every capability dropped
 *   cannot, dumpable or not, since the host holds capabilities they lack;
 * - a host running as another user (no capabilities): its commands read its
 *   environment unless the host is non-dumpable.
 *
 * So both are done: the host makes itself non-dumpable
 * (`prctl(PR_SET_DUMPABLE, 0)` through FFI, which needs `--allow-ffi`), and
 * commands start through `setpriv` with no capabilities (inheritable,
 * ambient and bounding sets cleared, so not even a root command gets any
 * back on `exec`) and `no_new_privs` (setuid and file-capability programs
 * gain nothing). A host that neither of them protects (one with no
 * capabilities that could not become non-dumpable, or one with
 * capabilities and no `setpriv`) refuses to run commands.
 *
 * What is left to the OS sandbox: a command still runs as the host's user,
 * so it reads and writes whatever files that user may (the store, the
 * host's Deno cache, other workspaces), sees every process in
 * `/proc`, and reaches the network.
 *
 * @module
 */

/** How commands are started. */
export interface CommandConfinement {
  /** The argv that goes before a command's own (`setpriv` and its options), or none. */
  prefix: readonly string[];
  /** Why commands may not run at all on this host, when they may not. */
  refusal?: string;
}

/** What {@link confineCommands} found about the host. */
export interface HostPrivileges {
  /** The host made itself non-dumpable. */
  nonDumpable: boolean;
  /** The host holds capabilities (its permitted set is not empty). */
  capabilities: boolean;
  /** The `setpriv` program, when there is one. */
  setpriv?: string;
}

const PR_SET_DUMPABLE = 4;
const PR_GET_DUMPABLE = 3;

/**
 * Makes the host non-dumpable, finds out what protects it, and says how
 * commands must start (see the module documentation). Call it once,
 * before the first command runs.
 *
 * @example
 * ```ts ignore
 * const { prefix, refusal } = await confineCommands(setprivPath);
 * if (refusal) throw new Error(refusal);
 * new Deno.Command(prefix[0] ?? program, { args: [...prefix.slice(1), program, ...args] });
 * ```
 */
export async function confineCommands(setpriv: string | undefined): Promise<CommandConfinement> {
  return commandConfinement({
    nonDumpable: _makeHostNonDumpable(),
    capabilities: await _hostHoldsCapabilities(),
    setpriv,
  });
}

/** How commands start on a host with `privileges` (see the module documentation). */
export function commandConfinement(privileges: HostPrivileges): CommandConfinement {
  const { nonDumpable, capabilities, setpriv } = privileges;
  const prefix = setpriv
    ? [
      setpriv,
      "--no-new-privs",
      "--inh-caps=-all",
      "--ambient-caps=-all",
      "--bounding-set=-all",
      "--",
    ]
    : [];
  // Commands without capabilities cannot read a host that holds some; a
  // non-dumpable host is safe from commands without CAP_SYS_PTRACE.
  const safe = setpriv ? nonDumpable || capabilities : nonDumpable && !capabilities;
  if (safe) return { prefix };
  const why = capabilities
    ? "the host runs with capabilities and there is no setpriv to drop them for commands"
    : "the host could not make itself non-dumpable (it needs --allow-ffi)";
  return {
    prefix,
    refusal: `commands could read the host's memory and environment: ${why}`,
  };
}

/**
 * Sets the host process non-dumpable (`prctl(PR_SET_DUMPABLE, 0)` in libc,
 * through FFI); false when FFI is not granted or the call fails.
 */
function _makeHostNonDumpable(): boolean {
  if (Deno.build.os !== "linux") return false;
  if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") return false;
  let libc: Deno.DynamicLibrary<{ prctl: Deno.ForeignFunction }> | undefined;
  try {
    libc = Deno.dlopen(
      "libc.so.6",
      {
        prctl: { parameters: ["i32", "u64", "u64", "u64", "u64"], result: "i32" },
      } as const,
    );
    const prctl = libc.symbols.prctl as (
      ...args: [number, bigint, bigint, bigint, bigint]
    ) => number;
    if (prctl(PR_SET_DUMPABLE, 0n, 0n, 0n, 0n) !== 0) return false;
    return prctl(PR_GET_DUMPABLE, 0n, 0n, 0n, 0n) === 0;
  } catch {
    return false;
  } finally {
    libc?.close();
  }
}

/**
 * Whether the host's permitted capability set is not empty. Deno reads
 * `/proc` only with `--allow-all`, so a shell the host starts reads the
 * host's status (`$PPID`); when that fails, the host is taken to hold
 * capabilities (which then must be dropped for commands).
 */
async function _hostHoldsCapabilities(): Promise<boolean> {
  const script = `while read -r key value; do
  if [ "$key" = CapPrm: ]; then echo "$value"; exit 0; fi
done < "/proc/$PPID/status"
exit 1`;
  try {
    const { code, stdout } = await new Deno.Command("/bin/sh", {
      args: ["-c", script],
      clearEnv: true,
      env: { PATH: "/usr/bin:/bin", LANG: "C" },
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).output();
    const mask = new TextDecoder().decode(stdout).trim();
    if (code !== 0 || !/^[0-9a-f]+$/i.test(mask)) return true;
    return BigInt(`0x${mask}`) !== 0n;
  } catch {
    return true;
  }
}
