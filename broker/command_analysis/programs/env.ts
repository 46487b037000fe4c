/**
 * `env` for a command analysis (see `../../command_analysis.ts`): the
 * command it runs is analyzed in turn.
 *
 * @module
 */

import { analyzeArgv } from "../argv.ts";
import { type Analyzer, show } from "../state.ts";

/** `env` alone prints the environment; `env [--] COMMAND…` runs the command unchanged. */
export const analyzeEnv: Analyzer = (state, words, depth) => {
  if (words.length === 2 && (words[1] === "--help" || words[1] === "--version")) return undefined;
  const start = words[1] === "--" ? 2 : 1;
  const command = words[start];
  if (command === undefined) return undefined;
  if (command.startsWith("-") || command.includes("=")) {
    return `with options or variables may change what it runs (${show(command)})`;
  }
  analyzeArgv(state, words.slice(start), depth + 1, "env");
  return undefined;
};
