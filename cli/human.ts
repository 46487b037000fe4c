/**
 * Human-queue verbs: `approvals`, `approve ID [--always] [--ttl D]`,
 * `deny ID [--always]`, and the responders behind `run --human`.
 *
 * @module
 */

import {
  DenyingHuman,
  type HumanAnswer,
  type HumanRequest,
  type HumanResponder,
  ScriptedHuman,
} from "../runtime/human_queue.ts";
import { parse, str, UsageError } from "./args.ts";
import { type Io, openKernel, REMOTE_OPTIONS, remoteClient } from "./context.ts";
import { clip, table } from "./table.ts";

/** One line describing a request: who asks, what exactly, and why. */
export function describeRequest(r: HumanRequest): string {
  const what = r.kind === "question"
    ? `asks "${r.question!.text}"${
      r.question!.choices ? ` (${r.question!.choices.join("/")})` : ""
    }`
    : `wants ${r.operation!.capability} for ${r.operation!.syscall} ${r.operation!.args}`;
  return `pid ${r.pid} (${r.image}) ${what}${r.reason ? ` because ${r.reason}` : ""}`;
}

/** Asks on the terminal, one request at a time (`--human interactive`). */
export class TerminalHuman implements HumanResponder {
  #io: Io;
  #lines: AsyncIterator<string>;
  #busy: Promise<unknown> = Promise.resolve();

  /** Reads answers from stdin, writes questions to stderr. */
  constructor(io: Io) {
    this.#io = io;
    this.#lines = readLines(Deno.stdin.readable);
  }

  /** Prompts for a decision or an answer. */
  respond(request: HumanRequest): Promise<HumanAnswer | undefined> {
    const next = this.#busy.then(async () => {
      this.#io.err(`\n[approval] ${describeRequest(request)}`);
      if (request.kind === "question") {
        this.#io.err("answer> ");
        return { answer: (await this.#lines.next()).value ?? "" };
      }
      this.#io.err("allow once / always / deny / deny always? [o/a/d/D] ");
      const line = ((await this.#lines.next()).value ?? "").trim();
      const decision = ({ o: "allow_once", a: "allow_always", D: "deny_always" } as const)[
        line as "o" | "a" | "D"
      ] ?? "deny_once";
      return { decision } satisfies HumanAnswer;
    });
    this.#busy = next.catch(() => {});
    return next;
  }
}

async function* readLines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buffer = "";
  for await (const chunk of stream) {
    buffer += decoder.decode(chunk, { stream: true });
    let newline: number;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      yield buffer.slice(0, newline);
      buffer = buffer.slice(newline + 1);
    }
  }
  if (buffer) yield buffer;
}

/**
 * The responder a `--human` flag names (default: interactive on a terminal,
 * deny otherwise); `queue` names none: requests wait for `libos approve`,
 * `libos deny` or the HTTP API.
 */
export async function humanFlag(
  value: string | undefined,
  io: Io,
): Promise<HumanResponder | undefined> {
  const mode = value ?? (Deno.stdin.isTerminal() ? "interactive" : "deny");
  if (mode === "queue") return undefined;
  if (mode === "deny") return new DenyingHuman();
  if (mode === "interactive") return new TerminalHuman(io);
  if (mode.startsWith("scripted:")) {
    return await ScriptedHuman.fromFile(mode.slice("scripted:".length));
  }
  throw new UsageError(
    `Cannot use --human "${mode}": expected scripted:FILE, deny, queue or interactive`,
  );
}

/** `libos approvals [--json]` */
export async function approvalsVerb(args: string[], io: Io): Promise<number> {
  const parsed = parse(args, REMOTE_OPTIONS, "approvals");
  const show = (pending: HumanRequest[]): number => {
    if (parsed.values.json) { for (const r of pending) io.out(JSON.stringify(r)); }
    else {
      io.out(table(
        ["ID", "PID", "KIND", "REQUEST"],
        pending.map((r) => [r.id, r.pid, r.kind, clip(describeRequest(r), 100)]),
      ));
    }
    return 0;
  };
  const client = remoteClient(parsed);
  if (client) return show(await client.pendingHumans());
  const kernel = await openKernel(parsed);
  try {
    return show(await kernel.humans.pending());
  } finally {
    await kernel.close();
  }
}

/** The answer `approve` or `deny` gives to `request` (a permission request when unknown). */
function _answerFor(
  request: HumanRequest | undefined,
  parsed: ReturnType<typeof parse>,
  verb: "approve" | "deny",
): HumanAnswer {
  const always = parsed.values.always === true;
  if (request?.kind === "question") {
    if (verb === "deny") {
      throw new UsageError(
        `Cannot deny request "${request.id}": it is a question; answer it with --answer`,
      );
    }
    return { answer: str(parsed, "answer") };
  }
  return verb === "approve"
    ? { decision: always ? "allow_always" : "allow_once", ttl: str(parsed, "ttl") }
    : { decision: always ? "deny_always" : "deny_once" };
}

async function decide(args: string[], io: Io, verb: "approve" | "deny"): Promise<number> {
  const parsed = parse(args, {
    ...REMOTE_OPTIONS,
    always: { type: "boolean" },
    ...(verb === "approve" ? { ttl: { type: "string" }, answer: { type: "string" } } : {}),
  }, verb);
  const id = parsed.positionals[0];
  if (!id) {
    throw new UsageError(
      `Usage: libos ${verb} ID${
        verb === "approve" ? " [--always] [--ttl D] [--answer TEXT]" : " [--always]"
      }`,
    );
  }
  const show = (done: HumanRequest): number => {
    io.out(
      parsed.values.json ? JSON.stringify(done) : `${id}: ${done.answer?.decision ?? "answered"}`,
    );
    return 0;
  };
  const client = remoteClient(parsed);
  if (client) {
    // Only pending requests are listed; the server refuses unknown and answered ones.
    const request = (await client.pendingHumans()).find((r) => r.id === id);
    const answer = _answerFor(request, parsed, verb);
    return show(await client.answer(id, answer));
  }
  const kernel = await openKernel(parsed);
  try {
    const request = await kernel.humans.get(id);
    if (!request) throw new UsageError(`Cannot ${verb} request "${id}": no such request`);
    const done = await kernel.humans.answer(id, _answerFor(request, parsed, verb), { by: "cli" });
    show(done);
    await kernel.journal.flush();
    return 0;
  } finally {
    await kernel.close();
  }
}

/** `libos approve ID [--always] [--ttl D]` (`--answer TEXT` for a question) */
export function approveVerb(args: string[], io: Io): Promise<number> {
  return decide(args, io, "approve");
}

/** `libos deny ID [--always]` */
export function denyVerb(args: string[], io: Io): Promise<number> {
  return decide(args, io, "deny");
}
