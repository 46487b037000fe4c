/**
 * Read-side verbs: `status`, `ps`, `images`, `audit`, `audit verify`, `obj`, `logs`.
 *
 * @module
 */

import { int, parse, str, UsageError } from "./args.ts";
import { HOST_OPTIONS, type Io, openKernel, REMOTE_OPTIONS, remoteClient } from "./context.ts";
import { clip, table } from "./table.ts";
import type { RemoteClient } from "./remote.ts";
import type { AuditDecision, AuditRecord } from "../broker/audit.ts";
import { printable } from "../broker/printable.ts";
import type { CellPolicy, Kernel, RunQueue, TranscriptEntry } from "../runtime/kernel.ts";
import { END_STATES, type ProcessEvent, type ProcessRecord } from "../runtime/process_table.ts";

type _Parsed = ReturnType<typeof parse>;

/** How often `logs --follow` reads the store when nothing wakes it, in milliseconds. */
const FOLLOW_POLL_MS = 200;

/** Runs a verb against the server the flags name, or in-process on the store. */
async function withTarget(
  args: string[],
  options: Parameters<typeof parse>[1],
  verb: string,
  local: (kernel: Kernel, parsed: _Parsed) => Promise<number>,
  remote: (client: RemoteClient, parsed: _Parsed) => Promise<number>,
): Promise<number> {
  const parsed = parse(args, { ...REMOTE_OPTIONS, ...options }, verb);
  const client = remoteClient(parsed);
  if (client) return await remote(client, parsed);
  const kernel = await openKernel(parsed);
  try {
    return await local(kernel, parsed);
  } finally {
    await kernel.close();
  }
}

/** The columns of `libos ps`. */
export const PS_HEADER: readonly string[] = ["PID", "PPID", "IMAGE", "MODEL", "STATE", "RESULT"];

/** One process as a `ps` row: the model is the one it calls, `-` for a record that names none. */
function psColumns(p: ProcessRecord): string[] {
  return [
    String(p.pid),
    p.ppid === null ? "-" : String(p.ppid),
    p.image,
    p.ownModel ?? "-",
    p.state + (p.waitingOn ? `(${p.waitingOn})` : ""),
    clip(p.error ? p.error.message : JSON.stringify(p.result ?? null), 60),
  ];
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
      rows.push(["  ".repeat(depth) + String(p.pid), ...psColumns(p).slice(1)]);
      walk(p.pid, depth + 1);
    }
  };
  walk(null, 0);
  return rows;
}

/** `libos ps [--tree] [--json]` */
export function psVerb(args: string[], io: Io): Promise<number> {
  const show = (processes: ProcessRecord[], parsed: _Parsed): number => {
    if (parsed.values.json) {
      for (const p of processes) io.out(printable(JSON.stringify(p)));
      return 0;
    }
    const rows = parsed.values.tree ? treeLines(processes) : processes.map(psColumns);
    io.out(table(PS_HEADER, rows));
    return 0;
  };
  return withTarget(
    args,
    { tree: { type: "boolean" } },
    "ps",
    async (kernel, parsed) => show(await kernel.processes.list(), parsed),
    async (client, parsed) => show(await client.processes(), parsed),
  );
}

/**
 * `libos status [--json]`: how commands are confined on this host (or on the
 * server's), and how many processes are live.
 */
export function statusVerb(args: string[], io: Io): Promise<number> {
  const show = (
    sandbox: { mode: string; detail?: string },
    processes: ProcessRecord[],
    parsed: _Parsed,
    cells?: CellPolicy,
    runQueue?: RunQueue,
  ): number => {
    const live = processes.filter((p) => !END_STATES.has(p.state)).length;
    if (parsed.values.json) {
      io.out(
        JSON.stringify({
          execSandbox: sandbox.mode,
          detail: sandbox.detail,
          live,
          cells,
          runQueue,
        }),
      );
    } else {
      io.out(`exec sandbox: ${sandbox.mode}${sandbox.detail ? ` (${sandbox.detail})` : ""}`);
      if (cells) {
        const who = cells.isolation === "process"
          ? "a cell of its own per process"
          : cells.sharing === "principal"
          ? "shared by the process trees of one principal"
          : "shared by one process tree";
        io.out(
          `cells: ${who}, at most ${cells.workersPerCell} Workers each; a blocked process keeps its Worker ${cells.waitGraceMs} ms`,
        );
      }
      io.out(`live processes: ${live}`);
      if (runQueue) {
        io.out(
          `run queue: ${runQueue.queued} queued, ${runQueue.starting} starting (at most ${runQueue.maxStarting}), ${runQueue.running} holding a Worker (at most ${runQueue.maxRunning}); ${runQueue.cells} of ${runQueue.maxCells} cells, ${runQueue.waitingForCell} starts waiting for one`,
        );
      }
    }
    return 0;
  };
  return withTarget(
    args,
    HOST_OPTIONS,
    "status",
    async (kernel, parsed) =>
      show(
        await kernel.execSandboxStatus(),
        await kernel.processes.list(),
        parsed,
        kernel.cellPolicy,
        kernel.runQueue,
      ),
    async (client, parsed) => {
      const health = await client.health();
      return show(
        { mode: health.execSandbox ?? "unknown" },
        await client.processes(),
        parsed,
        health.cells,
        health.runQueue,
      );
    },
  );
}

/** `libos images [--json]` */
export function imagesVerb(args: string[], io: Io): Promise<number> {
  const show = (
    images: { tag: string; digest: string; image: { entry: string; description?: string } }[],
    parsed: _Parsed,
  ): number => {
    if (parsed.values.json) {
      for (const i of images) {
        io.out(printable(JSON.stringify({ tag: i.tag, digest: i.digest, image: i.image })));
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
  };
  return withTarget(
    args,
    {},
    "images",
    async (kernel, parsed) => show(await kernel.images.list(), parsed),
    async (client, parsed) => show(await client.images(), parsed),
  );
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

/**
 * `libos audit [--pid N] [--denied] [--json]` and `libos audit verify`.
 * `--denied` lists only the refusals (decision `deny`).
 */
export function auditVerb(args: string[], io: Io): Promise<number> {
  type Filter = { pid?: number; decision?: AuditDecision };
  type Source = {
    verify(): Promise<{ ok: boolean; count: number; seq?: number; reason?: string }>;
    list(filter: Filter): AsyncIterable<AuditRecord>;
  };
  const show = async (source: Source, parsed: _Parsed): Promise<number> => {
    if (parsed.positionals[0] === "verify") {
      const result = await source.verify();
      if (parsed.values.json) io.out(printable(JSON.stringify(result)));
      else if (result.ok) io.out(`audit verified: ${result.count} records, chain intact`);
      else io.out(printable(`audit BROKEN at seq ${result.seq}: ${result.reason}`));
      return result.ok ? 0 : 1;
    }
    if (parsed.positionals.length) {
      throw new UsageError(
        `Unknown audit subcommand "${parsed.positionals[0]}": expected "verify"`,
      );
    }
    const pidText = str(parsed, "pid");
    const pid = pidText === undefined ? undefined : int(pidText, "--pid");
    const decision = parsed.values.denied ? "deny" : undefined;
    const records = [];
    for await (const record of source.list({ pid, decision })) {
      if (parsed.values.json) io.out(printable(JSON.stringify(record)));
      else records.push(record);
    }
    if (!parsed.values.json) io.out(auditTable(records));
    return 0;
  };
  return withTarget(
    args,
    { pid: { type: "string" }, denied: { type: "boolean" } },
    "audit",
    (kernel, parsed) =>
      show({
        verify: () => kernel.audit.verify(),
        list: (filter) => kernel.audit.list(filter),
      }, parsed),
    (client, parsed) =>
      show({
        verify: () => client.verifyAudit(),
        list: (filter) => client.audit(filter),
      }, parsed),
  );
}

const OBJ_USAGE = "Usage: libos obj get NS NAME | obj put NS NAME JSON [--type T] | obj list NS";

/**
 * `libos obj get NS NAME | put NS NAME JSON [--type T] | list NS`: operator
 * access to Object Memory, outside any process (writes record writer 0).
 * Over the HTTP API only `get` and `list` work: it has no route for writing.
 */
export function objVerb(args: string[], io: Io): Promise<number> {
  return withTarget(args, { type: { type: "string" } }, "obj", async (kernel, parsed) => {
    const [sub, namespace, name, value] = parsed.positionals;
    if (sub === "list" && namespace) {
      showObjects(await kernel.objects.list(namespace), parsed, io);
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
    throw new UsageError(OBJ_USAGE);
  }, async (client, parsed) => {
    const [sub, namespace, name, value] = parsed.positionals;
    if (sub === "list" && namespace) {
      showObjects(await client.objects(namespace), parsed, io);
      return 0;
    }
    if (sub === "get" && namespace && name) {
      const record = await client.object(namespace, name);
      io.out(parsed.values.json ? JSON.stringify(record) : JSON.stringify(record.value, null, 2));
      return 0;
    }
    if (sub === "put" && namespace && name && value !== undefined) {
      throw new UsageError(
        `Cannot put object "${namespace}/${name}" over the HTTP API: it has no route for writing objects`,
      );
    }
    throw new UsageError(OBJ_USAGE);
  });
}

function showObjects(
  items: { name: string; version: number; type?: string; writer: number }[],
  parsed: _Parsed,
  io: Io,
): void {
  if (parsed.values.json) {
    for (const i of items) io.out(printable(JSON.stringify(i)));
    return;
  }
  io.out(table(
    ["NAME", "VERSION", "TYPE", "WRITER"],
    items.map((i) => [i.name, i.version, i.type, i.writer]),
  ));
}

/** One entry of a process's log: a transition, an audit record or a transcript message. */
export type LogEntry =
  | { kind: "transition"; data: ProcessEvent }
  | { kind: "audit"; data: AuditRecord }
  | { kind: "message"; data: TranscriptEntry };

/** A log entry as a line: its JSON with `json`, or a short human-readable form. */
export function logLine(entry: LogEntry, options: { json?: boolean } = {}): string {
  if (options.json) return printable(JSON.stringify(entry.data));
  if (entry.kind === "message") return transcriptLine(entry.data);
  if (entry.kind === "audit") {
    const r = entry.data;
    return printable(
      `audit ${r.seq}: ${r.syscall} ${clip(r.args, 60)} ${r.decision} ${r.outcome}${
        r.code ? ` ${r.code}` : ""
      }`,
    );
  }
  const e = entry.data;
  return printable(
    `event ${e.seq}: ${e.from ?? "new"} → ${e.to}${e.reason ? ` (${e.reason})` : ""}`,
  );
}

/**
 * `libos logs PID [--follow]`: the transitions and transcript of a process;
 * with `--follow`, its transitions, audit records and transcript messages
 * as they happen, until it ends.
 */
export function logsVerb(args: string[], io: Io): Promise<number> {
  const print = (parsed: _Parsed) => (entry: LogEntry) =>
    io.out(logLine(entry, { json: parsed.values.json === true }));
  return withTarget(args, { follow: { type: "boolean" } }, "logs", async (kernel, parsed) => {
    const pid = int(parsed.positionals[0], "PID");
    await kernel.processes.require(pid);
    if (parsed.values.follow) {
      await _followLocal(kernel, pid, print(parsed));
      return 0;
    }
    for await (const event of kernel.processes.events({ pid })) {
      print(parsed)({ kind: "transition", data: event });
    }
    for (const message of await kernel.transcript(pid)) {
      print(parsed)({ kind: "message", data: message });
    }
    return 0;
  }, async (client, parsed) => {
    const pid = int(parsed.positionals[0], "PID");
    const record = await client.process(pid);
    if (parsed.values.follow) {
      await _followRemote(client, pid, print(parsed));
      return 0;
    }
    let events = await client.events(pid);
    if (!events) {
      if (!END_STATES.has(record.state)) {
        throw new UsageError(
          `Cannot list the transitions of live process ${pid}: the server has no events route; use --follow`,
        );
      }
      events = [];
      for await (const event of client.stream({ pid, kinds: ["transition"] })) {
        if (event.kind !== "transition") continue;
        events.push(event.data);
        if (END_STATES.has(event.data.to)) break;
      }
    }
    for (const event of events) print(parsed)({ kind: "transition", data: event });
    for (const message of await client.transcript(pid) ?? []) {
      print(parsed)({ kind: "message", data: message });
    }
    return 0;
  });
}

/**
 * Prints a process's transitions and audit records (in time order) and its
 * new transcript messages, reading the store until the process has ended.
 * A transition this host commits wakes it at once; others (committed by a
 * `serve` elsewhere) are seen at the next poll.
 */
async function _followLocal(
  kernel: Kernel,
  pid: number,
  print: (entry: LogEntry) => void,
): Promise<void> {
  let afterEvent = 0;
  let afterAudit = 0;
  let shown = 0;
  let wake: (() => void) | undefined;
  const off = kernel.processes.subscribe((record) => {
    if (record.pid === pid) wake?.();
  });
  try {
    for (;;) {
      let ended = false;
      const entries: (LogEntry & { at: number })[] = [];
      for await (const event of kernel.processes.events({ pid, afterSeq: afterEvent })) {
        entries.push({ kind: "transition", data: event, at: event.at });
        afterEvent = event.seq;
        ended = END_STATES.has(event.to);
      }
      for await (const record of kernel.audit.list({ pid, afterSeq: afterAudit })) {
        entries.push({ kind: "audit", data: record, at: record.at });
        afterAudit = record.seq;
      }
      entries.sort((a, b) => a.at - b.at);
      for (const { at: _, ...entry } of entries) print(entry as LogEntry);
      const transcript = await kernel.transcript(pid);
      for (const message of transcript.slice(shown)) print({ kind: "message", data: message });
      shown = Math.max(shown, transcript.length);
      if (ended) return;
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        wake = resolve;
        timer = setTimeout(resolve, FOLLOW_POLL_MS);
      });
      clearTimeout(timer);
      wake = undefined;
    }
  } finally {
    off();
  }
}

/**
 * Prints a process's transitions and audit records from the server's event
 * stream, and its transcript messages when the server has a transcript
 * route, until the process has ended.
 */
async function _followRemote(
  client: RemoteClient,
  pid: number,
  print: (entry: LogEntry) => void,
): Promise<void> {
  let afterAudit = 0;
  let shown = 0;
  let hasTranscript = true;
  const messages = async () => {
    if (!hasTranscript) return;
    const transcript = await client.transcript(pid);
    if (!transcript) {
      hasTranscript = false;
      return;
    }
    for (const message of transcript.slice(shown)) print({ kind: "message", data: message });
    shown = Math.max(shown, transcript.length);
  };
  for await (const event of client.stream({ pid, kinds: ["transition", "audit"] })) {
    if (event.kind === "audit") {
      print({ kind: "audit", data: event.data });
      afterAudit = event.data.seq;
    } else if (event.kind === "transition") {
      print({ kind: "transition", data: event.data });
      await messages();
      if (END_STATES.has(event.data.to)) break;
    }
  }
  // Audit records committed after the stream's last read of them.
  for await (const record of client.audit({ pid, after: afterAudit })) {
    print({ kind: "audit", data: record });
  }
  await messages();
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
  return printable(`${message.role.padEnd(9)} ${message.name ? `[${message.name}] ` : ""}${body}`);
}
