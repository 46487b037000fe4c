/**
 * Read-side verbs: `ps`, `images`, `audit`, `audit verify`, `obj`, `logs`.
 *
 * @module
 */

import { int, parse, str, UsageError } from "./args.ts";
import { type Io, openKernel } from "./context.ts";
import { clip, table } from "./table.ts";
import type { Kernel } from "../runtime/kernel.ts";
import type { ProcessRecord } from "../runtime/process_table.ts";

async function withKernel(
  args: string[],
  options: Parameters<typeof parse>[1],
  verb: string,
  body: (kernel: Kernel, parsed: ReturnType<typeof parse>) => Promise<number>,
): Promise<number> {
  const parsed = parse(args, options, verb);
  const kernel = await openKernel(parsed);
  try {
    return await body(kernel, parsed);
  } finally {
    await kernel.close();
  }
}

/** Lines of a process tree, children indented under their parent. */
export function treeLines(processes: readonly ProcessRecord[]): string[][] {
  const byParent = new Map<number | null, ProcessRecord[]>();
  const pids = new Set(processes.map((p) => p.pid));
  for (const p of processes) {
    const parent = p.ppid !== null && pids.has(p.ppid) ? p.ppid : null;
    byParent.set(parent, [...(byParent.get(parent) ?? []), p]);
  }
  const rows: string[][] = [];
  const walk = (parent: number | null, depth: number) => {
    for (const p of byParent.get(parent) ?? []) {
      rows.push([
        "  ".repeat(depth) + String(p.pid),
        p.ppid === null ? "-" : String(p.ppid),
        p.image,
        p.state + (p.waitingOn ? `(${p.waitingOn})` : ""),
        clip(p.error ? p.error.message : JSON.stringify(p.result ?? null), 60),
      ]);
      walk(p.pid, depth + 1);
    }
  };
  walk(null, 0);
  return rows;
}

/** `libos ps [--tree] [--json]` */
export function psVerb(args: string[], io: Io): Promise<number> {
  return withKernel(args, { tree: { type: "boolean" } }, "ps", async (kernel, parsed) => {
    const processes = await kernel.processes.list();
    if (parsed.values.json) {
      for (const p of processes) io.out(JSON.stringify(p));
      return 0;
    }
    const rows = parsed.values.tree ? treeLines(processes) : processes.map((p) => [
      String(p.pid),
      p.ppid === null ? "-" : String(p.ppid),
      p.image,
      p.state + (p.waitingOn ? `(${p.waitingOn})` : ""),
      clip(p.error ? p.error.message : JSON.stringify(p.result ?? null), 60),
    ]);
    io.out(table(["PID", "PPID", "IMAGE", "STATE", "RESULT"], rows));
    return 0;
  });
}

/** `libos images [--json]` */
export function imagesVerb(args: string[], io: Io): Promise<number> {
  return withKernel(args, {}, "images", async (kernel, parsed) => {
    const images = await kernel.images.list();
    if (parsed.values.json) {
      for (const i of images) {
        io.out(JSON.stringify({ tag: i.tag, digest: i.digest, image: i.image }));
      }
      return 0;
    }
    io.out(table(
      ["TAG", "DIGEST", "ENTRY", "DESCRIPTION"],
      images.map((
        i,
      ) => [i.tag, i.digest.slice(0, 12), i.image.entry, clip(i.image.description ?? "", 50)]),
    ));
    return 0;
  });
}

/** The audit trail as a table (`seq: false` leaves out the global sequence column). */
export function auditTable(
  records: readonly {
    seq: number;
    pid: number;
    syscall: string;
    args: string;
    decision: string;
    outcome: string;
    code?: string;
  }[],
  options: { seq?: boolean } = {},
): string {
  const withSeq = options.seq ?? true;
  return table(
    [...(withSeq ? ["SEQ"] : []), "PID", "SYSCALL", "ARGS", "DECISION", "OUTCOME"],
    records.map((r) => [
      ...(withSeq ? [r.seq] : []),
      r.pid,
      r.syscall,
      clip(r.args, 48),
      r.decision,
      r.outcome + (r.code ? ` ${r.code}` : ""),
    ]),
  );
}

/** `libos audit [--pid N] [--json]` and `libos audit verify` */
export function auditVerb(args: string[], io: Io): Promise<number> {
  return withKernel(args, { pid: { type: "string" } }, "audit", async (kernel, parsed) => {
    if (parsed.positionals[0] === "verify") {
      const result = await kernel.audit.verify();
      if (parsed.values.json) io.out(JSON.stringify(result));
      else if (result.ok) io.out(`audit verified: ${result.count} records, chain intact`);
      else io.out(`audit BROKEN at seq ${result.seq}: ${result.reason}`);
      return result.ok ? 0 : 1;
    }
    if (parsed.positionals.length) {
      throw new UsageError(
        `Unknown audit subcommand "${parsed.positionals[0]}": expected "verify"`,
      );
    }
    const pidText = str(parsed, "pid");
    const pid = pidText === undefined ? undefined : int(pidText, "--pid");
    const records = [];
    for await (const record of kernel.audit.list({ pid })) {
      if (parsed.values.json) io.out(JSON.stringify(record));
      else records.push(record);
    }
    if (!parsed.values.json) io.out(auditTable(records));
    return 0;
  });
}

/**
 * `libos obj get NS NAME | put NS NAME JSON [--type T] | list NS`: operator
 * access to Object Memory, outside any process (writes record writer 0).
 */
export function objVerb(args: string[], io: Io): Promise<number> {
  return withKernel(args, { type: { type: "string" } }, "obj", async (kernel, parsed) => {
    const [sub, namespace, name, value] = parsed.positionals;
    if (sub === "list" && namespace) {
      const items = await kernel.objects.list(namespace);
      if (parsed.values.json) { for (const i of items) io.out(JSON.stringify(i)); }
      else {io.out(
          table(
            ["NAME", "VERSION", "TYPE", "WRITER"],
            items.map((i) => [i.name, i.version, i.type, i.writer]),
          ),
        );}
      return 0;
    }
    if (sub === "get" && namespace && name) {
      const record = await kernel.objects.get(namespace, name);
      io.out(parsed.values.json ? JSON.stringify(record) : JSON.stringify(record.value, null, 2));
      return 0;
    }
    if (sub === "put" && namespace && name && value !== undefined) {
      let parsedValue: unknown;
      try {
        parsedValue = JSON.parse(value);
      } catch {
        throw new UsageError(`Cannot put object "${namespace}/${name}": the value is not JSON`);
      }
      const record = await kernel.objects.put(namespace, name, parsedValue, {
        writer: 0,
        type: str(parsed, "type"),
      });
      io.out(
        parsed.values.json
          ? JSON.stringify({ version: record.version })
          : `version ${record.version}`,
      );
      return 0;
    }
    throw new UsageError(
      "Usage: libos obj get NS NAME | obj put NS NAME JSON [--type T] | obj list NS",
    );
  });
}

/** `libos logs PID`: the transcript and transitions of a process. */
export function logsVerb(args: string[], io: Io): Promise<number> {
  return withKernel(args, {}, "logs", async (kernel, parsed) => {
    const pid = int(parsed.positionals[0], "PID");
    await kernel.processes.require(pid);
    for await (const event of kernel.processes.events({ pid })) {
      io.out(
        parsed.values.json
          ? JSON.stringify(event)
          : `event ${event.seq}: ${event.from ?? "new"} → ${event.to}${
            event.reason ? ` (${event.reason})` : ""
          }`,
      );
    }
    for (const message of await kernel.transcript(pid)) {
      io.out(parsed.values.json ? JSON.stringify(message) : transcriptLine(message));
    }
    return 0;
  });
}

/** One transcript message as a line. */
export function transcriptLine(
  message: {
    role: string;
    content?: string;
    tool_calls?: { name: string; arguments: unknown }[];
    name?: string;
  },
): string {
  const calls = message.tool_calls?.map((c) =>
    `${c.name}(${clip(JSON.stringify(c.arguments), 60)})`
  ).join(", ");
  const body = [message.content ? clip(message.content, 100) : "", calls ? `→ ${calls}` : ""]
    .filter(Boolean).join(" ");
  return `${message.role.padEnd(9)} ${message.name ? `[${message.name}] ` : ""}${body}`;
}
