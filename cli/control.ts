/**
 * Verbs that change running processes: `kill PID` and `signal PID SIG`.
 *
 * @module
 */

import { int, parse, UsageError } from "./args.ts";
import { type Io, openKernel, REMOTE_OPTIONS, remoteClient } from "./context.ts";

const SIGNALS = ["pause", "resume", "interrupt", "terminate", "kill"] as const;

async function deliver(
  args: string[],
  io: Io,
  verb: string,
  fixed?: typeof SIGNALS[number],
): Promise<number> {
  const parsed = parse(args, REMOTE_OPTIONS, verb);
  const pid = int(parsed.positionals[0], "PID");
  const signal = fixed ?? parsed.positionals[1];
  if (!SIGNALS.includes(signal as typeof SIGNALS[number])) {
    throw new UsageError(`Unknown signal "${signal ?? ""}": expected one of ${SIGNALS.join(", ")}`);
  }
  const client = remoteClient(parsed);
  if (client) {
    const { state } = await client.signal(pid, signal);
    io.out(parsed.values.json ? JSON.stringify({ pid, state }) : `pid ${pid} ${state}`);
    return 0;
  }
  const kernel = await openKernel(parsed);
  try {
    await kernel.signal(pid, signal as typeof SIGNALS[number], { by: "operator" });
    const record = await kernel.processes.require(pid);
    io.out(
      parsed.values.json
        ? JSON.stringify({ pid, state: record.state })
        : `pid ${pid} ${record.state}`,
    );
    return 0;
  } finally {
    await kernel.close();
  }
}

/** `libos kill PID` */
export function killVerb(args: string[], io: Io): Promise<number> {
  return deliver(args, io, "kill", "kill");
}

/** `libos signal PID SIG` */
export function signalVerb(args: string[], io: Io): Promise<number> {
  return deliver(args, io, "signal");
}
