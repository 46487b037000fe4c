/**
 * One argv of a command analysis (see `../command_analysis.ts`): the
 * program's name as a command, then its analyzer from the table of known
 * programs, or `*` (any command) when it has none.
 *
 * @module
 */

import { posix } from "node:path";
import { addAnyCommand, addCommand, addReason, printable, show, type State } from "./state.ts";

/** Deepest nesting of programs run by programs (`env bash -c "env …"`). */
const MAX_DEPTH = 8;

const SYSTEM_DIRS = new Set([
  "/bin",
  "/sbin",
  "/usr/bin",
  "/usr/sbin",
  "/usr/local/bin",
  "/usr/local/sbin",
]);

/**
 * Analyzes the argv `words` (`words[0]` is the program), run `depth` levels
 * deep, by the program named `via` when it is run by another one.
 */
export function analyzeArgv(
  state: State,
  words: readonly string[],
  depth: number,
  via: string | undefined,
): void {
  const first = words[0];
  if (first === undefined) return;
  if (depth > MAX_DEPTH) {
    return addAnyCommand(state, `programs nest deeper than ${MAX_DEPTH} levels`);
  }
  if (first === "" || !printable(first)) {
    return addAnyCommand(state, `the program name ${show(first)} is empty or not printable`);
  }
  const name = _commandName(state, first);
  addCommand(state, name);
  if (via !== undefined) addReason(state, `${name}: run by ${via}`);
  const analyzer = name.includes("/") ? undefined : state.programs.get(name);
  if (analyzer === undefined) {
    return addAnyCommand(state, `${show(name)} is not a program known to run nothing else`);
  }
  const why = analyzer(state, words, depth);
  if (why !== undefined) addAnyCommand(state, `${name} ${why}`);
}

function _commandName(state: State, word: string): string {
  if (!word.includes("/")) return word;
  const path = word.startsWith("/")
    ? posix.normalize(word)
    : state.cwd !== undefined
    ? posix.join(state.cwd, word)
    : word;
  if (path.startsWith("/") && SYSTEM_DIRS.has(posix.dirname(path))) return posix.basename(path);
  return path;
}
