/**
 * The messages between the host, a cell subprocess and the Worker in it.
 * Host and cell speak NDJSON over the cell's stdin and stdout; every line
 * the cell writes starts with the per-cell token the host sent first, so
 * output a program writes to stdout can never pass for a protocol message.
 *
 * This is a contract both sides read: it holds types and one pure function,
 * and imports nothing but the ABI.
 *
 * @module
 */

import type { SyscallReply } from "../../broker/abi.ts";

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
  | { kind: "module"; source: string };

/** Host → cell, the first line: the token and the cell's limits. */
export interface CellHello {
  t: "hello";
  token: string;
  maxMessageBytes: number;
  /** Memory the program may use beyond the idle cell, in MiB (the cell's own watchdog). */
  memoryMb: number;
}

/** Host → cell → Worker. */
export type CellToWorker =
  | {
    t: "start";
    pid: number;
    entry: ProgramEntry;
    input: unknown;
    /** Seed of the program's deterministic randomness. */
    seed: number;
    /** The process's start time: its clock starts here. */
    epoch: number;
    /** The state of the latest checkpoint, when the program resumes from one. */
    checkpoint?: unknown;
  }
  | ({ t: "reply"; at?: number } & SyscallReply);

/** Worker → cell → host. */
export type WorkerToCell =
  | { t: "syscall"; id: number; name: string; args: unknown }
  | { t: "fail"; code?: string; message: string };

/** Worker → cell, once, before any process is assigned: the Worker is up. */
export interface WorkerLoaded {
  t: "loaded";
}

/** Cell → host (besides relayed Worker messages). */
export type CellToHost =
  | WorkerToCell
  /**
   * The cell's Worker is up: the cell can take a `start`. `pid` is the OS
   * pid of the cell's Deno process, whose memory the host caps.
   */
  | { t: "ready"; pid: number }
  | { t: "crash"; message: string };

/** The one-line reason a process fails with when its cell goes over `memoryMb`. */
export function memoryLimitReason(pid: number, memoryMb: number): string {
  return `Process ${pid} exceeded its memory limit of ${memoryMb} MB`;
}
