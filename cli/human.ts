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
import { printable } from "../broker/printable.ts";
import { parse, str, UsageError } from "./args.ts";
import { readLines } from "./lines.ts";
import { type Io, openKernel, REMOTE_OPTIONS, remoteClient } from "./context.ts";
import { wrap } from "./table.ts";

/** Width of the text beside a label in {@link requestLines}. */
const TEXT_WIDTH = 90;

/** How many lines of a request the interactive prompt shows before it waits for Enter. */
const PAGE_LINES = 20;

/**
 * One line naming a request: who asks for what (and why). The arguments are
 * left out: {@link requestLines} shows them in full.
 */
export function describeRequest(r: HumanRequest): string {
  const what = r.kind === "question"
    ? `asks "${r.question!.text}"`
    : `wants ${r.operation!.capability} for ${r.operation!.syscall}`;
  return printable(`pid ${r.pid} (${r.image}) ${what}${r.reason ? ` because ${r.reason}` : ""}`);
}

/**
 * A request as a human reads it before answering: who asks, the capability
 * an approval grants, the call with its arguments in full (wrapped, never
 * cut) and their digest, and the reason. Every line is printable: nothing
 * the asking process wrote can move the cursor or fake a line.
 */
export function requestLines(r: HumanRequest): string[] {
  const lines = [printable(`request ${r.id}  pid ${r.pid} (${r.image})  ${r.kind}`)];
  const field = (label: string, text: string) =>
    wrap(text, TEXT_WIDTH).forEach((part, i) =>
      lines.push(`  ${(i === 0 ? label : "").padEnd(8)}${part}`)
    );
  if (r.question) {
    field("asks", r.question.text);
    if (r.question.choices) field("choices", JSON.stringify(r.question.choices));
    field("answer", r.question.kind);
  }
  if (r.operation) {
    field("wants", r.operation.capability);
    field("call", r.operation.syscall);
    field("args", r.operation.args);
    field("digest", `sha256 ${r.operation.argsDigest}`);
  }
  if (r.reason) field("reason", r.reason);
  return lines;
}

/** Asks on the terminal, one request at a time (`--human interactive`). */
export class TerminalHuman implements HumanResponder {
  #io: Io;
  #lines: AsyncIterator<string>;
  #busy: Promise<unknown> = Promise.resolve();

  /** Reads answers from `input` (default stdin), writes the requests and prompts to stderr. */
  constructor(io: Io, input: ReadableStream<Uint8Array> = Deno.stdin.readable) {
    this.#io = io;
    this.#lines = readLines(input);
  }

  /**
   * Shows the whole request, a page at a time (Enter for the next page, `d`
   * to deny at once), then prompts for a decision or an answer.
   */
  respond(request: HumanRequest): Promise<HumanAnswer | undefined> {
    const next = this.#busy.then(async () => {
      const read = async () => (await this.#lines.next()).value ?? "";
      const lines = requestLines(request);
      this.#io.err(`\n[approval] ${lines[0]}`);
      for (let shown = 1; shown < lines.length; shown += PAGE_LINES) {
        for (const line of lines.slice(shown, shown + PAGE_LINES)) this.#io.err(line);
        const left = lines.length - shown - PAGE_LINES;
        if (left <= 0) break;
        this.#io.err(`-- ${left} more lines: Enter to see them, d to deny --`);
        if ((await read()).trim() === "d") return { decision: "deny_once" } satisfies HumanAnswer;
      }
      if (request.kind === "question") {
        this.#io.err("answer> ");
        return { answer: await read() };
      }
      this.#io.err("allow once / always / deny / deny always? [o/a/d/D] ");
      const line = (await read()).trim();
      const decision = ({ o: "allow_once", a: "allow_always", D: "deny_always" } as const)[
        line as "o" | "a" | "D"
      ] ?? "deny_once";
      return { decision } satisfies HumanAnswer;
    });
    this.#busy = next.catch(() => {});
    return next;
  }
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

/** `libos approvals [--json]`: every pending request in full, oldest first. */
export async function approvalsVerb(args: string[], io: Io): Promise<number> {
  const parsed = parse(args, REMOTE_OPTIONS, "approvals");
  const show = (pending: HumanRequest[]): number => {
    if (parsed.values.json) { for (const r of pending) io.out(printable(JSON.stringify(r))); }
    else if (pending.length === 0) io.out("no pending requests");
    else io.out(pending.map((r) => requestLines(r).join("\n")).join("\n\n"));
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
