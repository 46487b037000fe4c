/**
 * The state of one command analysis (see `../command_analysis.ts`): the
 * commands found so far, the reasons given, the working directory, and the
 * table of known programs an analysis looks names up in. The table is part
 * of the state so that programs which run other programs (`env`, the
 * shells) can analyze those without importing the table that lists them.
 *
 * @module
 */

import { posix } from "node:path";

/** The command that stands for any program: only `exec:run:*` (or `**`) grants it. */
export const ANY_COMMAND = "*";

const MAX_REASONS = 100;

/** Control characters (C0, DEL, C1), format characters, separators other than space, unassigned. */
const UNPRINTABLE = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}]/u;

/** What one analysis has found so far, and what it looks programs up in. */
export interface State {
  /** Every command found, each once, in the order found. */
  commands: string[];
  /** The commands found, for a quick lookup. */
  seen: Set<string>;
  /** One line per command run through another and per reason for {@link ANY_COMMAND}. */
  reasons: string[];
  /** The absolute working directory, when known. */
  cwd?: string;
  /** The programs known to run nothing else, by name, each with its analyzer. */
  programs: ReadonlyMap<string, Analyzer>;
}

/** Why a program may run anything, or undefined when it runs only what it reported. */
export type Verdict = string | undefined;

/** Analyzes one program's argv (`words[0]` is the program); may report the programs it runs. */
export type Analyzer = (state: State, words: readonly string[], depth: number) => Verdict;

/** A fresh analysis in `cwd` that knows `programs`. */
export function newState(
  cwd: string | undefined,
  programs: ReadonlyMap<string, Analyzer>,
): State {
  return {
    commands: [],
    seen: new Set(),
    reasons: [],
    cwd: cwd === undefined ? undefined : posix.resolve("/", cwd),
    programs,
  };
}

/** Adds `command` to what the analysis found, once. */
export function addCommand(state: State, command: string): void {
  if (state.seen.has(command)) return;
  state.seen.add(command);
  state.commands.push(command);
}

/** Adds a line of explanation, once, up to a bound. */
export function addReason(state: State, text: string): void {
  if (state.reasons.length < MAX_REASONS && !state.reasons.includes(text)) {
    state.reasons.push(text);
  }
}

/** The argv may run any program. */
export function addAnyCommand(state: State, why: string): void {
  addCommand(state, ANY_COMMAND);
  addReason(state, `${ANY_COMMAND}: ${why}`);
}

/** Whether `text` has no control or other non-printable character. */
export function printable(text: string): boolean {
  return !UNPRINTABLE.test(text);
}

/** `text` quoted for a reason, shortened, with every non-printable character escaped. */
export function show(text: string): string {
  const short = text.length > 60 ? `${text.slice(0, 59)}…` : text;
  const escaped = [...short].map((c) =>
    c === '"' || c === "\\"
      ? `\\${c}`
      : UNPRINTABLE.test(c)
      ? `\\u{${c.codePointAt(0)!.toString(16)}}`
      : c
  ).join("");
  return `"${escaped}"`;
}
