/**
 * The messages between the host, a cell subprocess and the Workers in it.
 * Host and cell speak NDJSON over the cell's stdin and stdout; every line
 * the cell writes starts with the per-cell token the host sent first, so
 * output a program writes to stdout can never pass for a protocol message.
 *
 * This is a contract both sides read: it holds types and pure functions
 * (the memory-limit reason, the conversation digest transcript references
 * carry), and imports nothing but the ABI.
 *
 * @module
 */

import type { SyscallReply } from "../../broker/abi.ts";
import { canonicalJson } from "../../broker/canonical_json.ts";

/** What the host tells the agent loop about its image. */
export interface AgentConfig {
  /** The image's system prompt. */
  system?: string;
  /** The image's tool table (built-in tool names). */
  tools: string[];
  /** Upper bound on model turns, a guard against a runaway loop. */
  maxSteps?: number;
}

/** How the program of a process is given to its Worker. */
export type ProgramEntry =
  | { kind: "agent"; config: AgentConfig }
  | {
    kind: "module";
    source: string;
    /** The source is JavaScript (its types erased on the host): the Worker transpiles nothing. */
    javascript?: boolean;
  };

/** Host → cell, the first line: the token and the cell's limits. */
export interface CellHello {
  t: "hello";
  token: string;
  maxMessageBytes: number;
  /** Memory each program may use, in MiB (the cell's own watchdog). */
  memoryMb: number;
  /** Most Workers the cell runs at once. */
  maxWorkers: number;
  /** Workers the cell keeps loaded ahead of need. */
  warmWorkers: number;
}

/** Cell → Worker: what the host sends a program. */
export type CellToWorker =
  | StartProgram
  | ({ t: "reply"; at?: number } & SyscallReply)
  /** The Worker is ending: it acknowledges and closes itself. */
  | { t: "close" };

/**
 * Cell → Worker: run a program (once per Worker). It names no process: the
 * cell never needs to know which process a program runs as, and a program
 * may start while its process is still being made (its calls wait on the
 * host until it is).
 */
export interface StartProgram {
  /** The message kind. */
  t: "start";
  /** The program: a built-in or a module's source. */
  entry: ProgramEntry;
  /** The process's input, as given at spawn. */
  input: unknown;
  /** Seed of the program's deterministic randomness. */
  seed: number;
  /** The process's start time: its clock starts here. */
  epoch: number;
  /** The state of the latest checkpoint, when the program resumes from one. */
  checkpoint?: unknown;
}

/**
 * Host → cell, after the hello. A Worker is named by its slot, a number the
 * host picks when it opens one; `open` starts a Worker in a new slot (or
 * gives it a warm one), `close` ends it, and the rest goes to its program.
 */
export type HostToCell =
  /**
   * Its program's memory limit and largest message (at most the cell's),
   * and, when given, the program to start as soon as the slot has a Worker
   * (no round trip between the two).
   */
  | {
    t: "open";
    slot: number;
    memoryMb: number;
    maxMessageBytes: number;
    start?: StartProgram;
  }
  | { t: "close"; slot: number }
  | ({ slot: number } & Exclude<CellToWorker, { t: "close" }>);

/** Worker → cell. */
export type WorkerToCell =
  | { t: "syscall"; id: number; name: string; args: unknown }
  | { t: "fail"; code?: string; message: string };

/**
 * Worker → cell, outside the program's messages: `loaded` once, when the
 * Worker is up; `closing` when it acknowledges a `close` (its event loop
 * was free, so it ends at once).
 */
export interface WorkerControl {
  t: "loaded" | "closing";
}

/**
 * Cell main thread → a program Worker, its first message: the port it
 * speaks on from then on (transferred with the message). The other end is
 * the switchboard's, so what arrives on it comes from that Worker alone.
 */
export interface WorkerPort {
  t: "port";
}

/**
 * Switchboard → the cell's main thread (the maker), which alone makes and
 * ends Workers: `make` one more program Worker; `end` Worker `id`; `halt`
 * every program Worker now (the cell is crashing); `exit` the process.
 */
export type SwitchboardToMaker =
  | { t: "make" }
  | { t: "end"; id: number }
  | { t: "halt" }
  | { t: "exit"; code: number };

/**
 * Maker → switchboard: Worker `id` was made, its port's other end
 * transferred with the message (Deno names its OS thread `worker-<id>`);
 * Worker `id` failed with an uncaught `error`; or it sent a `stray`
 * message on its Worker object instead of its port.
 */
export type MakerToSwitchboard =
  | { t: "made"; id: number }
  | { t: "error"; id: number; message: string }
  | { t: "stray"; id: number };

/** Cell → host. */
export type CellToHost =
  /**
   * A program's message. The cell sets `slot` from the Worker object the
   * message came from: a program can neither choose nor forge it.
   */
  | ({ slot: number } & WorkerToCell)
  /**
   * The cell is up with its warm Workers loaded. `pid` is the OS pid of the
   * cell's Deno process, whose memory the host caps.
   */
  | { t: "ready"; pid: number }
  /** The Worker of `slot` is up: it can take a `start`. */
  | { t: "opened"; slot: number }
  /**
   * The Worker of `slot` has ended. `clean` is false when it did not
   * acknowledge the `close` in time (it may still be running code the
   * cell cannot stop: only the end of the cell stops it).
   */
  | {
    t: "closed";
    slot: number;
    clean: boolean;
    /**
     * The name of the OS thread its Worker ran on (`worker-N`), so the host
     * can see that the thread is gone: a program can forge the
     * acknowledgement and keep a loop running that only the end of the
     * cell stops.
     */
    thread?: string;
  }
  /**
   * The cell is ending. `slot` names the Worker that caused it, when the
   * cell knows (a protocol break, or memory over the limit with one program
   * running); without it the cause is any of its Workers. `memory`: that
   * Worker's program went over its memory limit.
   */
  | { t: "crash"; message: string; slot?: number; memory?: true };

/**
 * The digest of a conversation `previous` (a digest) followed by `message`.
 * The host keeps it for every prefix of a process's transcript, and a
 * `model.complete` request or an agent loop checkpoint that references the
 * transcript carries it, so a reference names only the very messages the
 * process exchanged. Each link is the
 * SHA-256 (hex) of the previous link, a newline, and the message in
 * canonical JSON (object keys sorted at every depth, `undefined` members
 * dropped): the digest does not depend on key order, which the host's
 * argument parsing may change. The empty conversation's digest is `""`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { nextConversationDigest } from "./cell_protocol.ts";
 * const a = await nextConversationDigest("", { role: "user", content: "hi" });
 * const b = await nextConversationDigest("", { content: "hi", role: "user" });
 * assert(a === b && a.length === 64);
 * ```
 */
export async function nextConversationDigest(
  previous: string,
  message: unknown,
): Promise<string> {
  const text = conversationLink(previous, message);
  const bytes = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * The text a conversation digest hashes: the digest `previous`, a newline,
 * and `message` in canonical JSON. Both sides hash it their own way (the
 * Worker with `crypto.subtle`, see {@link nextConversationDigest}).
 */
export function conversationLink(previous: string, message: unknown): string {
  return `${previous}\n${canonicalJson(message)}`;
}
