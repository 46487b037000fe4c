/**
 * `bash`, `sh` and `dash` for a command analysis (see
 * `../../command_analysis.ts`): only `-c SCRIPT`, the script read by the
 * strict grammar of `../shell_grammar.ts`, each of its commands analyzed
 * with the shell's builtins first.
 *
 * @module
 */

import { analyzeArgv } from "../argv.ts";
import { parseScript } from "../shell_grammar.ts";
import {
  addAnyCommand,
  type Analyzer,
  printable,
  show,
  type State,
  type Verdict,
} from "../state.ts";

const SHELL_SET_OPTIONS = new Set(["errexit", "nounset", "xtrace", "noglob", "pipefail"]);

/**
 * Reads shell option words from `start` (`-e`, `-eux`, `-o pipefail`; `-c`
 * only for a shell's own options): the index of the first other word and
 * whether `-c` was among them, or why an option is not accepted.
 */
function _shellFlags(
  words: readonly string[],
  start: number,
  allowCommand: boolean,
): { next: number; command: boolean } | string {
  let command = false;
  let i = start;
  for (; i < words.length; i++) {
    const match = /^-([ceufxo]+)$/.exec(words[i]);
    if (!match) break;
    for (const c of match[1]) {
      if (c === "c" && !allowCommand) return `has the option ${show(words[i])}`;
      if (c === "c") command = true;
      if (c === "o" && !SHELL_SET_OPTIONS.has(words[++i])) {
        return `has -o with an option this analysis does not know: ${show(words[i] ?? "")}`;
      }
    }
  }
  return { next: i, command };
}

/** `bash`, `sh`, `dash`: only `[options] -c SCRIPT [NAME ARGS…]`, and the script must be accepted. */
export const analyzeShell: Analyzer = (state, words, depth) => {
  const unprintable = words.find((word) => !printable(word));
  if (unprintable !== undefined) {
    return `has an argument with a control or non-printable character: ${show(unprintable)}`;
  }
  let start = 1;
  while (words[start] === "--norc" || words[start] === "--noprofile") start++;
  const flags = _shellFlags(words, start, true);
  if (typeof flags === "string") return flags;
  let at = flags.next;
  if (words[at] === "--" || words[at] === "-") at++;
  else if (/^[-+]/.test(words[at] ?? "")) {
    return `has an option this analysis does not know: ${show(words[at])}`;
  }
  if (!flags.command) {
    return "without -c SCRIPT runs a script file or reads commands from its input";
  }
  const script = words[at];
  if (script !== undefined) analyzeScript(state, script, depth + 1, `${words[0]} -c`);
  return undefined;
};

/** Builtins of bash and dash: in a script, these names never reach `PATH`. */
const SHELL_BUILTIN_NAMES = new Set(
  (". : [ alias bg bind break builtin caller cd command compgen complete compopt continue " +
    "declare dirs disown echo enable eval exec exit export false fc fg getopts hash help " +
    "history jobs kill let local logout mapfile popd printf pushd pwd read readarray readonly " +
    "return set shift shopt source suspend test times trap true type typeset ulimit umask " +
    "unalias unset wait").split(" "),
);

/** The builtins accepted in a script, each with its check. */
const SHELL_BUILTINS = new Map<string, (args: readonly string[]) => Verdict>([
  ["echo", () => undefined],
  [":", () => undefined],
  ["true", () => undefined],
  ["false", () => undefined],
  [
    "printf",
    (args) =>
      args[0] !== undefined && args[0].startsWith("-") && args[0] !== "--"
        ? "has an option (-v assigns a variable)"
        : undefined,
  ],
  ["pwd", (args) => args.every((a) => a === "-L" || a === "-P") ? undefined : "has an argument"],
  [
    "exit",
    (args) =>
      args.length === 0 || (args.length === 1 && /^[0-9]{1,3}$/.test(args[0]))
        ? undefined
        : "has an argument that is not a status number",
  ],
  ["test", _shellTest],
  ["[", _shellTest],
  [
    "set",
    (args) => {
      const flags = _shellFlags(args, 0, false);
      if (typeof flags === "string") return flags;
      return flags.next === args.length ? undefined : `has ${show(args[flags.next])}`;
    },
  ],
]);

function _shellTest(args: readonly string[]): Verdict {
  return args.some((a) => a === "-v" || a === "-R")
    ? "-v and -R evaluate array subscripts, which can run commands"
    : undefined;
}

/** Analyzes one simple command of a script: the shell's builtins first, then programs. */
function _shellCommand(state: State, words: readonly string[], depth: number, via: string): void {
  const name = words[0];
  const builtin = SHELL_BUILTINS.get(name);
  if (builtin !== undefined) {
    const why = builtin(words.slice(1));
    if (why !== undefined) addAnyCommand(state, `the ${via} builtin ${name} ${why}`);
    return;
  }
  if (SHELL_BUILTIN_NAMES.has(name)) {
    return addAnyCommand(
      state,
      `the ${via} builtin ${show(name)} is not one known to run nothing else`,
    );
  }
  analyzeArgv(state, words, depth, via);
}

/** Analyzes a shell script run `depth` levels deep by `via` (`bash -c`, `sh -c`). */
export function analyzeScript(state: State, script: string, depth: number, via: string): void {
  const parsed = parseScript(script);
  if (typeof parsed === "string") return addAnyCommand(state, `the ${via} script ${parsed}`);
  for (const words of parsed) _shellCommand(state, words, depth, via);
}
