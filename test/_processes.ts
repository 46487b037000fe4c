/**
 * Test helpers that look at the machine's processes (through `ps`: Deno
 * reads `/proc` only under `--allow-all`), to check what a killed host left
 * running.
 *
 * @module
 */

/** One process of the machine. */
export interface Proc {
  pid: number;
  ppid: number;
  pgid: number;
  /** `ps` state letters: `Z` for a zombie, `T` for a stopped process. */
  stat: string;
  /** The command line. */
  args: string;
}

/** The processes of this machine. */
export function processes(): Proc[] {
  const { stdout } = new Deno.Command("ps", {
    args: ["-ww", "-eo", "pid=,ppid=,pgid=,stat=,args="],
  }).outputSync();
  return new TextDecoder().decode(stdout).split("\n").filter((l) => l.trim()).map((line) => {
    const [pid, ppid, pgid, stat, ...args] = line.trim().split(/\s+/);
    return {
      pid: Number(pid),
      ppid: Number(ppid),
      pgid: Number(pgid),
      stat,
      args: args.join(" "),
    };
  });
}

/** The processes of this machine that have not ended (a zombie has). */
export function runningProcesses(): Proc[] {
  return processes().filter((p) => !p.stat.startsWith("Z"));
}

/** The running descendants of `root`. */
export function descendants(root: number): Proc[] {
  const all = runningProcesses();
  const found: Proc[] = [];
  const parents = new Set([root]);
  for (let grew = true; grew;) {
    grew = false;
    for (const p of all) {
      if (parents.has(p.ppid) && !parents.has(p.pid)) {
        parents.add(p.pid);
        found.push(p);
        grew = true;
      }
    }
  }
  return found;
}

/** Those of `pids` that still run. */
export function running(pids: readonly number[]): Proc[] {
  return runningProcesses().filter((p) => pids.includes(p.pid));
}

/** Resolves once `check` holds (looked at every 50 ms); fails after `ms`. */
export async function until(
  check: () => boolean,
  what: string,
  ms = 30_000,
): Promise<void> {
  const deadline = performance.now() + ms;
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`Timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Sends SIGKILL to each of `pids` that still exists. */
export function killAll(pids: readonly number[]): void {
  for (const pid of pids) {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch {
      // Already gone.
    }
  }
}
