/**
 * `libos checkpoint save PID | list | restore ID | fork ID`: operator
 * snapshots of a process subtree.
 *
 * @module
 */

import { int, parse, UsageError } from "./args.ts";
import { type Io, notRemote, openKernel, REMOTE_OPTIONS, remoteClient } from "./context.ts";
import { table } from "./table.ts";

/** `libos checkpoint …` */
export async function checkpointVerb(args: string[], io: Io): Promise<number> {
  const parsed = parse(args, REMOTE_OPTIONS, "checkpoint");
  const [sub, ref] = parsed.positionals;
  const json = parsed.values.json === true;
  if (!["save", "list", "restore", "fork"].includes(sub) || (sub !== "list" && !ref)) {
    throw new UsageError("Usage: libos checkpoint save PID | list | restore ID | fork ID");
  }
  if (remoteClient(parsed)) notRemote("checkpoint processes");
  const kernel = await openKernel(parsed);
  try {
    if (sub === "save") {
      const snap = await kernel.snapshots.save(int(ref, "PID"));
      io.out(json ? JSON.stringify({ id: snap.id, processes: snap.processes.length }) : snap.id);
    } else if (sub === "list") {
      const all = await kernel.snapshots.list();
      if (json) {
        for (const s of all) {
          io.out(JSON.stringify({
            id: s.id,
            at: s.at,
            root: s.root,
            pids: s.processes.map((p) => p.record.pid),
          }));
        }
      } else {
        io.out(table(
          ["ID", "ROOT", "PROCESSES", "AT"],
          all.map((
            s,
          ) => [
            s.id,
            s.root,
            s.processes.map((p) => p.record.pid).join(","),
            new Date(s.at).toISOString(),
          ]),
        ));
      }
    } else if (sub === "restore") {
      const report = await kernel.snapshots.restore(ref);
      if (json) io.out(JSON.stringify(report));
      else {
        io.out(
          `restored ${report.restored.join(", ")}${
            report.killed.length ? `; killed ${report.killed.join(", ")}` : ""
          }`,
        );
        if (report.notRestored.length) {
          io.out(
            `capabilities revoked since the snapshot stay revoked: ${report.notRestored.length}`,
          );
        }
        io.out(`external effects after the snapshot (not undone): ${report.effectsAfter.length}`);
        for (const e of report.effectsAfter) {
          io.out(`  pid ${e.pid} seq ${e.seq} ${e.syscall} (${e.outcome})`);
        }
      }
    } else {
      const proc = await kernel.snapshots.fork(ref);
      io.out(json ? JSON.stringify({ pid: proc.pid }) : String(proc.pid));
    }
    return 0;
  } finally {
    await kernel.close();
  }
}
