/**
 * Command analysis for `exec.run`: every program an argv would run, so that
 * a grant for one program cannot be used to run another. The broker asks for
 * one `exec:run:<command>` capability per name this module returns.
 *
 * Pure functions only: nothing here touches the host.
 *
 * ## Fail closed
 *
 * The analysis proves, from the argv alone, that nothing but the named
 * programs runs. Whatever it cannot prove adds {@link ANY_COMMAND} (`*`):
 * the call may run any program and needs `exec:run:*` (or `exec:run:**`),
 * which no narrower grant covers. A policy `deny` or `ask` on any command
 * applies to `*` as well (see `broker/policy.ts`). `*` is added for:
 *
 * - a program that is not in the table of programs known to run nothing
 *   else (`make`, `ssh`, `tar`, `xargs`, `awk`, `sqlite3`, …), and every
 *   program named by a path outside the system program directories;
 * - every interpreter (`python3`, `node`, `deno`, `perl`, `ruby`, …), with
 *   a script file too: a program runs whatever its code says, and the
 *   process may have written that code itself. To run interpreters, grant
 *   `exec:run:*` and rely on the OS sandbox;
 * - an option of a known program that is not in its option table, that is
 *   an ambiguous prefix of options in the table, or that runs another
 *   program (`sort --compress-program`, `diff --paginate`, `git grep -O`);
 * - a control or other non-printable character in a program name, an
 *   option, or anywhere in a shell's arguments;
 * - a shell script outside the small grammar below; a `sed` script outside
 *   the commands that only edit text; a `find` expression with `-exec`.
 *
 * Long options match as GNU `getopt_long` and git's option parser match
 * them: exactly, or by a prefix of exactly one option in the table
 * (`--compress-p` is `--compress-program`). A prefix of several options in
 * the table is ambiguous and adds `*`. The tables list a subset of each
 * program's real options, so a prefix the table resolves to one option
 * resolves to the same one in the program, or the program refuses it as
 * ambiguous.
 *
 * ## Known programs
 *
 * `cat` `head` `tail` `wc` `ls` `grep` `sort` `uniq` `cut` `tee` `tr` `diff`
 * `mkdir` `touch` `rm` `cp` `mv` `pwd` `basename` `dirname` `sleep` `yes`
 * `echo` `printf` `true` `false` with their GNU options; `sed` whose script
 * uses only text-editing commands (not `e`, `w`, `W`, `r`, `R`, `v`, the
 * `s///e` or `s///w` flags, or `-f`); `find` without `-exec`, `-execdir`,
 * `-ok`, `-okdir` or the actions that write files; `env` with a command
 * and no options or variables; `git` with the global options that only
 * choose the repository and the subcommands `status`, `log`, `show`,
 * `diff`, `rev-parse`, `ls-files`, `blame`, `grep`, listing `branch`,
 * `version` and reading `config` (not `-c`, `--config-env`, `--exec-path`, an alias or
 * any other subcommand); `bash`, `sh` and `dash` with `-c SCRIPT`.
 *
 * ## Shell scripts
 *
 * A script is accepted only when it resolves to simple commands whose words
 * are all literal: unquoted letters, digits and `_-./:,+=%@!^]`, a lone
 * `[`, backslash escapes, single quotes, and double quotes without `$` or
 * backticks; joined by `;`, `&`, `&&`, `||` and `|`; with redirections
 * (`<`, `>`, `>>`, `>|`, `<>`, `N>&M` with one-digit descriptors) to literal
 * targets outside `/dev` (but `/dev/null`, `/dev/stdout`, `/dev/stderr`,
 * `/dev/stdin`). Everything else adds `*`: any `$` (parameters, `${x@P}`,
 * `${!x}`, arithmetic, `$(…)`), backticks, globs, braces, `~`, comments,
 * parentheses (subshells, functions, process substitution), here-documents,
 * newlines and tabs, reserved words, and what bash and dash read
 * differently (`&>`, `|&`, descriptors above 9). Each command is then analyzed
 * like an argv, where the shell's builtins come first: `echo`, `true`,
 * `false`, `:`, `printf` without options, `pwd`, `test` and `[` without
 * `-v` or `-R` (which evaluate array subscripts), `exit N` and `set` with
 * `-e`, `-u`, `-x`, `-f` and `-o pipefail` are accepted; every other builtin
 * (`cd`, `eval`, `trap`, `source`, `.`, `exec`, `command`, `builtin`,
 * `read`, `declare`, `export`, `alias`, …) adds `*`. A variable assignment
 * is a command named `NAME=value`, which is no known program.
 *
 * ## Command names
 *
 * - A bare name is itself: `git` → `git`. The shell provider looks it up in
 *   the operator's `PATH`.
 * - An absolute path in a system program directory (`/bin`, `/sbin`,
 *   `/usr/bin`, `/usr/sbin`, `/usr/local/bin`, `/usr/local/sbin`) is named by
 *   its basename: `/usr/bin/git` → `git`.
 * - Any other path is a path, normalized and made absolute against `cwd`
 *   when one is given: `./build.sh` in `/ws` → `/ws/build.sh`, and it adds
 *   `*` (what it runs cannot be seen): grant it by path and `exec:run:*`.
 *
 * ## What this cannot see
 *
 * What a known program reads from files: git runs programs that the
 * repository's own configuration and hooks name (`core.fsmonitor`, filter
 * and diff drivers, `log.showSignature`). A process that can write a
 * repository's `.git` directory can make an allowed `git status` run a
 * program. Nor does it check what a granted program reads or writes
 * (`cp`, `sed -i`, a redirection): that is for the filesystem view the
 * command runs with. The analysis is a policy on which programs run.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { analyzeCommand } from "./command_analysis.ts";
 *
 * const { commands } = analyzeCommand(["bash", "-c", "git status && grep -rn TODO . | wc -l"]);
 * assert(commands.join() === "bash,git,grep,wc");
 * assert(analyzeCommand(["bash", "-c", "echo $(id)"]).commands.join() === "bash,*");
 * ```
 *
 * @module
 */

import { posix } from "node:path";

/** The command that stands for any program: only `exec:run:*` (or `**`) grants it. */
export const ANY_COMMAND = "*";

/** What {@link analyzeCommand} found. */
export interface CommandAnalysis {
  /** Every command the argv would run, each once, in the order found; {@link ANY_COMMAND} when unbounded. */
  commands: string[];
  /** One line per command run through another and per reason for {@link ANY_COMMAND}. */
  reasons: string[];
}

/** Options of {@link analyzeCommand}. */
export interface AnalyzeCommandOptions {
  /** The absolute working directory; relative command paths are made absolute against it. */
  cwd?: string;
}

/**
 * Every command that `argv` would run (see the module documentation).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { analyzeCommand } from "./command_analysis.ts";
 *
 * assert(analyzeCommand(["git", "log", "--oneline"]).commands.join() === "git");
 * assert(analyzeCommand(["git", "-c", "alias.x=!id", "x"]).commands.join() === "git,*");
 * assert(analyzeCommand(["./run.sh"], { cwd: "/ws" }).commands.join() === "/ws/run.sh,*");
 * ```
 */
export function analyzeCommand(
  argv: readonly string[],
  options: AnalyzeCommandOptions = {},
): CommandAnalysis {
  const state = _newState(options.cwd);
  _analyzeArgv(state, argv, 0, undefined);
  return { commands: state.commands, reasons: state.reasons };
}

/**
 * Every command that a shell script would run, as `sh -c SCRIPT` runs it,
 * without `sh` itself.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { analyzeShellScript } from "./command_analysis.ts";
 * const { commands } = analyzeShellScript("git status --short | grep -c M > count.txt");
 * assert(commands.join() === "git,grep");
 * ```
 */
export function analyzeShellScript(
  script: string,
  options: AnalyzeCommandOptions = {},
): CommandAnalysis {
  const state = _newState(options.cwd);
  _analyzeScript(state, script, 0, "sh -c");
  return { commands: state.commands, reasons: state.reasons };
}

// ---------------------------------------------------------------------------
// State

/** Deepest nesting of programs run by programs (`env bash -c "env …"`). */
const MAX_DEPTH = 8;
const MAX_REASONS = 100;

const SYSTEM_DIRS = new Set([
  "/bin",
  "/sbin",
  "/usr/bin",
  "/usr/sbin",
  "/usr/local/bin",
  "/usr/local/sbin",
]);

/** Control characters (C0, DEL, C1), format characters, separators other than space, unassigned. */
const UNPRINTABLE = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}]/u;

interface State {
  commands: string[];
  seen: Set<string>;
  reasons: string[];
  cwd?: string;
}

/** Why a program may run anything, or undefined when it runs only what it reported. */
type Verdict = string | undefined;

/** Analyzes one program's argv (`words[0]` is the program); may report the programs it runs. */
type Analyzer = (state: State, words: readonly string[], depth: number) => Verdict;

function _newState(cwd: string | undefined): State {
  return {
    commands: [],
    seen: new Set(),
    reasons: [],
    cwd: cwd === undefined ? undefined : posix.resolve("/", cwd),
  };
}

function _add(state: State, command: string): void {
  if (state.seen.has(command)) return;
  state.seen.add(command);
  state.commands.push(command);
}

function _reason(state: State, text: string): void {
  if (state.reasons.length < MAX_REASONS && !state.reasons.includes(text)) {
    state.reasons.push(text);
  }
}

/** The argv may run any program. */
function _any(state: State, why: string): void {
  _add(state, ANY_COMMAND);
  _reason(state, `${ANY_COMMAND}: ${why}`);
}

function _printable(text: string): boolean {
  return !UNPRINTABLE.test(text);
}

/** `text` quoted for a reason, shortened, with every non-printable character escaped. */
function _show(text: string): string {
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

// ---------------------------------------------------------------------------
// Argv

function _analyzeArgv(
  state: State,
  words: readonly string[],
  depth: number,
  via: string | undefined,
): void {
  const first = words[0];
  if (first === undefined) return;
  if (depth > MAX_DEPTH) return _any(state, `programs nest deeper than ${MAX_DEPTH} levels`);
  if (first === "" || !_printable(first)) {
    return _any(state, `the program name ${_show(first)} is empty or not printable`);
  }
  const name = _commandName(state, first);
  _add(state, name);
  if (via !== undefined) _reason(state, `${name}: run by ${via}`);
  const analyzer = name.includes("/") ? undefined : PROGRAMS.get(name);
  if (analyzer === undefined) {
    return _any(state, `${_show(name)} is not a program known to run nothing else`);
  }
  const why = analyzer(state, words, depth);
  if (why !== undefined) _any(state, `${name} ${why}`);
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

// ---------------------------------------------------------------------------
// Option models

/** What an option does with the words after it. */
type Arity = "flag" | "value" | "optional" | "runs";

/** The options of a program, in a compact text form. */
interface OptionSpec {
  /** Short options without a value. */
  flags?: string;
  /** Short options with a value, attached or in the next word. */
  values?: string;
  /** Short options with an optional value, attached only. */
  optional?: string;
  /** Short options that make the program run another program. */
  runs?: string;
  /**
   * Long options without the dashes, separated by spaces: `name` takes no
   * value, `name=` a value (`--name=v` or `--name v`), `name[=]` an optional
   * value (`--name=v` only), `!name` runs another program.
   */
  long?: string;
  /** `-NUM` is an option (`head -5`). */
  digits?: boolean;
}

interface OptionModel {
  short: Map<string, Arity>;
  long: Map<string, Arity>;
  digits: boolean;
}

interface ParsedOption {
  /** `-x` or `--long-name`, the long name in full even when abbreviated. */
  name: string;
  value?: string;
}

interface ParsedArgs {
  options: ParsedOption[];
  operands: string[];
  /** Index of the first operand when parsing stopped there. */
  stop: number;
}

function _model(spec: OptionSpec): OptionModel {
  const short = new Map<string, Arity>();
  for (const c of spec.flags ?? "") short.set(c, "flag");
  for (const c of spec.values ?? "") short.set(c, "value");
  for (const c of spec.optional ?? "") short.set(c, "optional");
  for (const c of spec.runs ?? "") short.set(c, "runs");
  const long = new Map<string, Arity>();
  for (const item of (spec.long ?? "").split(" ").filter((item) => item !== "")) {
    if (item.startsWith("!")) long.set(item.slice(1), "runs");
    else if (item.endsWith("[=]")) long.set(item.slice(0, -3), "optional");
    else if (item.endsWith("=")) long.set(item.slice(0, -1), "value");
    else long.set(item, "flag");
  }
  return { short, long, digits: spec.digits ?? false };
}

/** The long option `given` names: exactly, or as the prefix of exactly one. */
function _longOption(model: OptionModel, given: string): [string, Arity] | string {
  const exact = model.long.get(given);
  if (exact !== undefined) return [given, exact];
  const candidates = given === "" ? [] : [...model.long.keys()].filter((n) => n.startsWith(given));
  if (candidates.length === 0) return `has an option this analysis does not know: --${given}`;
  if (candidates.length > 1) {
    return `has an ambiguous option --${given} (${candidates.map((c) => `--${c}`).join(", ")})`;
  }
  return [candidates[0], model.long.get(candidates[0])!];
}

/**
 * Reads `words` from `start` as GNU `getopt_long` does: options anywhere
 * before `--` (or up to the first operand with `stopAtOperand`), short
 * options clustered, values attached or in the next word. Returns the
 * parse, or why the words may run anything.
 */
function _parseOptions(
  words: readonly string[],
  start: number,
  model: OptionModel,
  stopAtOperand = false,
): ParsedArgs | string {
  const options: ParsedOption[] = [];
  const operands: string[] = [];
  let stop = words.length;
  let only = false;
  for (let i = start; i < words.length; i++) {
    const word = words[i];
    if (only || word === "-" || !word.startsWith("-")) {
      if (stopAtOperand && stop === words.length) {
        stop = i;
        only = true;
      }
      operands.push(word);
      continue;
    }
    if (word === "--") {
      only = true;
      continue;
    }
    if (!_printable(word)) return `has an option with a non-printable character: ${_show(word)}`;
    if (word.startsWith("--")) {
      const eq = word.indexOf("=");
      const found = _longOption(model, eq < 0 ? word.slice(2) : word.slice(2, eq));
      if (typeof found === "string") return found;
      const [name, arity] = found;
      if (arity === "runs") return `--${name} runs another program`;
      if (eq >= 0 && arity === "flag") return `--${name} takes no value`;
      const value = eq >= 0 ? word.slice(eq + 1) : arity === "value" ? words[++i] : undefined;
      options.push({ name: `--${name}`, value });
      continue;
    }
    if (model.digits && /^-[0-9]+$/.test(word)) {
      options.push({ name: "-NUM", value: word.slice(1) });
      continue;
    }
    for (let j = 1; j < word.length; j++) {
      const c = word[j];
      const arity = model.short.get(c);
      if (arity === undefined) return `has an option this analysis does not know: -${c}`;
      if (arity === "runs") return `-${c} runs another program`;
      if (arity === "flag") {
        options.push({ name: `-${c}` });
        continue;
      }
      const rest = word.slice(j + 1);
      const value = rest !== "" ? rest : arity === "value" ? words[++i] : undefined;
      options.push({ name: `-${c}`, value });
      break;
    }
  }
  return { options, operands, stop };
}

function _has(parsed: ParsedArgs, ...names: string[]): boolean {
  return parsed.options.some((o) => names.includes(o.name));
}

/** A program with GNU options, none of which runs anything unless marked, and an optional check. */
function _gnu(spec: OptionSpec, check?: (parsed: ParsedArgs) => Verdict): Analyzer {
  const model = _model(spec);
  return (_state, words) => {
    const parsed = _parseOptions(words, 1, model);
    if (typeof parsed === "string") return parsed;
    return check?.(parsed);
  };
}

/** A program whose arguments are all data (`echo`, `true`). */
const _operandsOnly: Analyzer = () => undefined;

const HELP = "help version";

// ---------------------------------------------------------------------------
// sed

const SED_OPTIONS: OptionSpec = {
  flags: "nrEsuz",
  values: "efl",
  optional: "i",
  long: "quiet silent debug expression= file= follow-symlinks in-place[=] line-length= posix " +
    `regexp-extended separate sandbox unbuffered null-data zero-terminated ${HELP}`,
};

function _sed(parsed: ParsedArgs): Verdict {
  if (_has(parsed, "-f", "--file")) return "reads its script from a file this analysis cannot see";
  const expressions = parsed.options.filter((o) => o.name === "-e" || o.name === "--expression");
  const script = expressions.length > 0
    ? expressions.map((o) => o.value ?? "").join("\n")
    : parsed.operands[0];
  return script === undefined ? undefined : _sedScript(script);
}

/** Delimiters accepted for `s`, `y` and `\cREGEXc`. */
const SED_DELIMITERS = "/|,:#@!%_+=~.;-";
const SED_SIMPLE_COMMANDS = "=dDgGhHnNpPxzF";
const SED_LABEL = /^[A-Za-z0-9_.-]+/;

/**
 * Why a GNU sed script may do more than edit text, or undefined. The
 * grammar is a strict subset of GNU sed's: sed compiles the whole script
 * before it runs any of it, so a script this accepts and sed reads
 * differently is one sed refuses.
 */
function _sedScript(script: string): Verdict {
  if (!_printable(script.replaceAll("\n", ""))) {
    return "script has a control or non-printable character";
  }
  const s = script;
  let p = 0;
  let blocks = 0;
  const spaces = () => {
    while (s[p] === " ") p++;
  };
  /** The rest of a command: spaces, then its end. */
  const end = (): Verdict => {
    spaces();
    return p >= s.length || ";\n}#".includes(s[p])
      ? undefined
      : `script has text after a command at ${_show(s.slice(p, p + 20))}`;
  };
  while (true) {
    while (p < s.length && " \n;".includes(s[p])) p++;
    if (p >= s.length) break;
    if (s[p] === "#") {
      while (p < s.length && s[p] !== "\n") p++;
      continue;
    }
    const address = _sedAddress(s, p, false);
    if (typeof address === "string") return address;
    if (address !== p) {
      p = address;
      spaces();
      if (s[p] === ",") {
        p++;
        spaces();
        const second = _sedAddress(s, p, true);
        if (typeof second === "string") return second;
        if (second === p) return "script has a range without an end address";
        p = second;
      }
    }
    spaces();
    if (s[p] === "!") {
      p++;
      spaces();
    }
    const command = s[p++];
    let why: Verdict;
    if (command === undefined) return "script ends after an address";
    if (command === "{") {
      blocks++;
      continue;
    } else if (command === "}") {
      if (--blocks < 0) return "script closes a block it did not open";
      why = end();
    } else if (SED_SIMPLE_COMMANDS.includes(command)) {
      why = end();
    } else if ("lqQ".includes(command)) {
      spaces();
      while (/[0-9]/.test(s[p] ?? "")) p++;
      why = end();
    } else if ("aic".includes(command)) {
      const eol = s.indexOf("\n", p) < 0 ? s.length : s.indexOf("\n", p);
      if (s.slice(p, eol).includes("\\")) {
        return `script has a backslash in the text of "${command}", which this analysis does not read`;
      }
      p = eol;
    } else if (":btT".includes(command)) {
      spaces();
      const label = SED_LABEL.exec(s.slice(p))?.[0] ?? "";
      if (command === ":" && label === "") return "script has a label this analysis does not read";
      p += label.length;
      why = end();
    } else if (command === "s" || command === "y") {
      const after = _sedReplace(s, p, command);
      if (typeof after === "string") return after;
      p = after;
      why = end();
    } else if (command === "e") {
      return "script uses the e command, which runs a shell command";
    } else if ("wW".includes(command)) {
      return `script uses the ${command} command, which writes to a file the script names`;
    } else {
      return `script uses ${_show(command)}, which is not a command that only edits text`;
    }
    if (why !== undefined) return why;
  }
  return blocks === 0 ? undefined : "script leaves a block open";
}

/** After `s` or `y` at `p`: the index after the command's arguments, or why not accepted. */
function _sedReplace(s: string, p: number, command: "s" | "y"): number | string {
  const delimiter = s[p];
  if (delimiter === undefined || !SED_DELIMITERS.includes(delimiter)) {
    return `script uses ${
      _show(delimiter ?? "")
    } as a delimiter, which this analysis does not read`;
  }
  const first = command === "s" ? _sedRegex(s, p + 1, delimiter) : _sedText(s, p + 1, delimiter);
  if (typeof first === "string") return first;
  const second = _sedText(s, first, delimiter);
  if (typeof second === "string" || command === "y") return second;
  let q = second;
  while (q < s.length && /[gpiImM0-9ew]/.test(s[q])) {
    if (s[q] === "e") return "script uses the s///e flag, which runs the result as a command";
    if (s[q] === "w") return "script uses the s///w flag, which writes to a file the script names";
    q++;
  }
  return q;
}

/** A replacement or `y` part from `p` up to its delimiter: the index after it, or why not. */
function _sedText(s: string, p: number, delimiter: string): number | string {
  for (let q = p; q < s.length; q++) {
    if (s[q] === "\n") return "script has a line break inside a command";
    if (s[q] === "\\") {
      if (q + 1 >= s.length || s[q + 1] === "\n") return "script has a line break inside a command";
      q++;
    } else if (s[q] === delimiter) {
      return q + 1;
    }
  }
  return "script has an unterminated command";
}

/**
 * A regular expression from `p` up to its delimiter. A bracket expression is
 * accepted only in a form where sed and a reader that ignores brackets end
 * the expression at the same place: no delimiter, backslash or `[` inside
 * (but `[:class:]`), and not starting with `]`.
 */
function _sedRegex(s: string, p: number, delimiter: string): number | string {
  for (let q = p; q < s.length; q++) {
    const c = s[q];
    if (c === "\n") return "script has a line break inside a regular expression";
    if (c === "\\") {
      if (q + 1 >= s.length || s[q + 1] === "\n") {
        return "script has a line break inside a regular expression";
      }
      q++;
    } else if (c === delimiter) {
      return q + 1;
    } else if (c === "[") {
      let r = q + 1;
      if (s[r] === "^") r++;
      const open = r;
      while (s[r] !== "]" || r === open) {
        const cls = /^\[:[a-z]+:\]/.exec(s.slice(r, r + 12));
        if (cls) {
          r += cls[0].length;
          continue;
        }
        if (r >= s.length || "[]\\\n".includes(s[r]) || s[r] === delimiter) {
          return "script has a bracket expression this analysis does not read";
        }
        r++;
      }
      q = r;
    }
  }
  return "script has an unterminated regular expression";
}

/** An address at `p` (`N`, `$`, `N~M`, `/re/I`, `\cREc`; with `second`, also `+N` and `~N`): the index after it. */
function _sedAddress(s: string, p: number, second: boolean): number | string {
  const c = s[p];
  if (c === undefined) return p;
  if (/[0-9]/.test(c) || (second && (c === "+" || c === "~"))) {
    let q = p + 1;
    while (/[0-9]/.test(s[q] ?? "")) q++;
    if (s[q] === "~" && !second) {
      q++;
      while (/[0-9]/.test(s[q] ?? "")) q++;
    }
    return q;
  }
  if (c === "$") return p + 1;
  let q: number | string;
  if (c === "/") q = _sedRegex(s, p + 1, "/");
  else if (c === "\\") {
    const delimiter = s[p + 1];
    if (delimiter === undefined || !SED_DELIMITERS.includes(delimiter)) {
      return `script uses ${
        _show(delimiter ?? "")
      } as a delimiter, which this analysis does not read`;
    }
    q = _sedRegex(s, p + 2, delimiter);
  } else return p;
  if (typeof q === "string") return q;
  while (s[q] === "I" || s[q] === "M") q++;
  return q;
}

// ---------------------------------------------------------------------------
// find

const FIND_FLAGS = new Set(
  ("( ) ! , -not -a -and -o -or -depth -mount -xdev -noleaf -ignore_readdir_race " +
    "-noignore_readdir_race -daystart -follow -empty -executable -readable -writable -false " +
    "-true -nogroup -nouser -print -print0 -ls -prune -quit -delete -help --help -version " +
    "--version").split(" "),
);

const FIND_VALUES = new Set(
  ("-maxdepth -mindepth -amin -anewer -atime -cmin -cnewer -ctime -fstype -gid -group " +
    "-ilname -iname -inum -ipath -iregex -iwholename -links -lname -mmin -mtime -name " +
    "-newer -path -perm -regex -regextype -samefile -size -type -uid -used -user -wholename " +
    "-xtype -printf").split(" "),
);

/** GNU find: `[-H|-L|-P] [start…] [expression]`; every expression word classified. */
const _find: Analyzer = (_state, words) => {
  let i = 1;
  while (["-H", "-L", "-P"].includes(words[i])) i++;
  while (i < words.length && !words[i].startsWith("-") && !FIND_FLAGS.has(words[i])) i++;
  for (; i < words.length; i++) {
    const word = words[i];
    if (!_printable(word)) return `has an argument with a non-printable character: ${_show(word)}`;
    if (FIND_FLAGS.has(word)) continue;
    if (FIND_VALUES.has(word) || /^-newer[aBcmt][aBcmt]$/.test(word)) {
      i++;
      continue;
    }
    if (["-exec", "-execdir", "-ok", "-okdir"].includes(word)) return `${word} runs a command`;
    return `has an expression word this analysis does not know: ${_show(word)}`;
  }
  return undefined;
};

// ---------------------------------------------------------------------------
// env

/** `env` alone prints the environment; `env [--] COMMAND…` runs the command unchanged. */
const _env: Analyzer = (state, words, depth) => {
  if (words.length === 2 && (words[1] === "--help" || words[1] === "--version")) return undefined;
  const start = words[1] === "--" ? 2 : 1;
  const command = words[start];
  if (command === undefined) return undefined;
  if (command.startsWith("-") || command.includes("=")) {
    return `with options or variables may change what it runs (${_show(command)})`;
  }
  _analyzeArgv(state, words.slice(start), depth + 1, "env");
  return undefined;
};

// ---------------------------------------------------------------------------
// git

const GIT_GLOBAL = _model({
  flags: "P",
  values: "C",
  long: "git-dir= work-tree= namespace= no-pager no-replace-objects bare literal-pathspecs " +
    "glob-pathspecs noglob-pathspecs icase-pathspecs no-optional-locks version",
});

/** Options of `git log`, `show` and `diff` (the revision and diff options git reads exactly). */
const GIT_LOG: OptionSpec = {
  flags: "pusRwbzmc",
  values: "nSGL",
  optional: "UMC",
  digits: true,
  long: "oneline graph all decorate[=] no-decorate stat[=] shortstat numstat name-only " +
    "name-status patch no-patch reverse no-merges merges first-parent follow abbrev-commit " +
    "no-abbrev-commit color[=] no-color summary topo-order date-order left-right raw " +
    "no-renames ignore-all-space ignore-space-change ignore-blank-lines minimal patience " +
    "histogram no-ext-diff no-textconv binary full-index compact-summary full-history " +
    "full-diff cc abbrev[=] relative[=] word-diff[=] branches[=] tags[=] remotes[=] " +
    "dirstat[=] find-renames[=] find-copies[=] unified[=] max-count= skip= since= after= " +
    "until= before= author= committer= grep= date= diff-filter= format[=] pretty[=] cached " +
    "staged no-index exit-code quiet check",
};

/** A format asking for signature checks (`%G?`, `%GS`, …) runs gpg. */
function _gitLog(parsed: ParsedArgs): Verdict {
  const signed = parsed.options.find((o) =>
    (o.name === "--format" || o.name === "--pretty") && o.value?.includes("%G")
  );
  return signed ? `${signed.name} with %G checks signatures, which runs gpg` : undefined;
}

const GIT_CONFIG_READS = ["--get", "--get-all", "--get-regexp", "--list", "-l"];

const GIT_SUBCOMMANDS = new Map<string, Analyzer>([
  [
    "status",
    _gnu({
      flags: "vsbz",
      optional: "uM",
      long: "verbose short branch show-stash ahead-behind no-ahead-behind porcelain[=] long " +
        "null untracked-files[=] ignored[=] ignore-submodules[=] column[=] no-column renames " +
        "no-renames find-renames[=]",
    }),
  ],
  ["log", _gnu(GIT_LOG, _gitLog)],
  ["show", _gnu(GIT_LOG, _gitLog)],
  ["diff", _gnu(GIT_LOG, _gitLog)],
  [
    "rev-parse",
    _gnu({
      flags: "q",
      long: "show-toplevel show-prefix show-cdup git-dir git-common-dir absolute-git-dir " +
        "is-inside-work-tree is-inside-git-dir is-bare-repository is-shallow-repository " +
        "abbrev-ref[=] short[=] verify quiet symbolic symbolic-full-name all branches[=] " +
        "tags[=] remotes[=] show-superproject-working-tree git-path=",
    }),
  ],
  [
    "ls-files",
    _gnu({
      flags: "ztvfcdmoisku",
      values: "xX",
      long: "cached deleted modified others ignored stage killed directory eol " +
        "empty-directory unmerged resolve-undo exclude= exclude-from= exclude-per-directory= " +
        "exclude-standard full-name recurse-submodules error-unmatch with-tree= abbrev[=] " +
        "debug deduplicate sparse format=",
    }),
  ],
  [
    "blame",
    _gnu({
      flags: "bfnpctlsew",
      values: "SL",
      optional: "CM",
      long: "incremental root show-stats progress score-debug show-name show-number porcelain " +
        "line-porcelain show-email ignore-rev= ignore-revs-file= color-lines color-by-age " +
        "minimal contents= abbrev[=]",
    }),
  ],
  [
    "grep",
    _gnu({
      flags: "vilwaIrEGFPnhHLzocpWq",
      values: "CBAfem",
      runs: "O",
      digits: true,
      long: "cached no-index untracked exclude-standard recurse-submodules invert-match " +
        "ignore-case word-regexp text recursive max-depth= extended-regexp basic-regexp " +
        "fixed-strings perl-regexp line-number column full-name files-with-matches name-only " +
        "files-without-match null only-matching count color[=] break heading context= " +
        "before-context= after-context= threads= show-function function-context and or not " +
        "quiet all-match max-count= !open-files-in-pager !textconv",
    }),
  ],
  [
    "branch",
    _gnu(
      {
        flags: "vqrali",
        long: "verbose quiet remotes all list show-current ignore-case contains= no-contains= " +
          "merged= no-merged= points-at= sort= abbrev[=] color[=] no-color column[=] no-column",
      },
      (parsed) =>
        parsed.operands.length === 0 || _has(parsed, "-l", "--list")
          ? undefined
          : "branch with a name creates a branch, which runs the reference-transaction hook",
    ),
  ],
  ["version", _gnu({ long: "build-options" })],
  [
    "config",
    _gnu(
      {
        flags: "lz",
        values: "f",
        long: "get get-all get-regexp list global system local worktree show-origin show-scope " +
          "name-only null file= includes no-includes type= bool int bool-or-int path expiry-date " +
          "default=",
      },
      (parsed) =>
        _has(parsed, ...GIT_CONFIG_READS)
          ? undefined
          : "config without --get or --list may write settings that run programs",
    ),
  ],
]);

/** git: global options that only choose the repository, then a known subcommand. */
const _git: Analyzer = (state, words, depth) => {
  const global = _parseOptions(words, 1, GIT_GLOBAL, true);
  if (typeof global === "string") return global;
  if (words.slice(1, global.stop).includes("--")) return "has -- before its subcommand";
  if (_has(global, "--version")) {
    return global.operands.length === 0 ? undefined : "--version with more arguments";
  }
  const sub = words[global.stop];
  if (sub === undefined) return undefined;
  const analyzer = GIT_SUBCOMMANDS.get(sub);
  if (analyzer === undefined) {
    return `${_show(sub)} is not a subcommand known to run nothing else (it may be an alias)`;
  }
  const why = analyzer(state, words.slice(global.stop), depth);
  return why === undefined ? undefined : `${sub} ${why}`;
};

// ---------------------------------------------------------------------------
// Shells

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
      if (c === "c" && !allowCommand) return `has the option ${_show(words[i])}`;
      if (c === "c") command = true;
      if (c === "o" && !SHELL_SET_OPTIONS.has(words[++i])) {
        return `has -o with an option this analysis does not know: ${_show(words[i] ?? "")}`;
      }
    }
  }
  return { next: i, command };
}

/** `bash`, `sh`, `dash`: only `[options] -c SCRIPT [NAME ARGS…]`, and the script must be accepted. */
const _shell: Analyzer = (state, words, depth) => {
  const unprintable = words.find((word) => !_printable(word));
  if (unprintable !== undefined) {
    return `has an argument with a control or non-printable character: ${_show(unprintable)}`;
  }
  let start = 1;
  while (words[start] === "--norc" || words[start] === "--noprofile") start++;
  const flags = _shellFlags(words, start, true);
  if (typeof flags === "string") return flags;
  let at = flags.next;
  if (words[at] === "--" || words[at] === "-") at++;
  else if (/^[-+]/.test(words[at] ?? "")) {
    return `has an option this analysis does not know: ${_show(words[at])}`;
  }
  if (!flags.command) {
    return "without -c SCRIPT runs a script file or reads commands from its input";
  }
  const script = words[at];
  if (script !== undefined) _analyzeScript(state, script, depth + 1, `${words[0]} -c`);
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
      return flags.next === args.length ? undefined : `has ${_show(args[flags.next])}`;
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
    if (why !== undefined) _any(state, `the ${via} builtin ${name} ${why}`);
    return;
  }
  if (SHELL_BUILTIN_NAMES.has(name)) {
    return _any(state, `the ${via} builtin ${_show(name)} is not one known to run nothing else`);
  }
  _analyzeArgv(state, words, depth, via);
}

function _analyzeScript(state: State, script: string, depth: number, via: string): void {
  const parsed = _parseScript(script);
  if (typeof parsed === "string") return _any(state, `the ${via} script ${parsed}`);
  for (const words of parsed) _shellCommand(state, words, depth, via);
}

/** Characters that stand for themselves outside quotes in bash and dash. */
const SHELL_LITERAL = /^[A-Za-z0-9_\-./:,+=%@!^\]]$/;
const SHELL_DEVICES = new Set(["/dev/null", "/dev/stdout", "/dev/stderr", "/dev/stdin"]);

/**
 * Reads a script in the strict grammar of the module documentation into the
 * words of its simple commands, or says why it is not accepted.
 */
function _parseScript(s: string): string[][] | string {
  if (!_printable(s)) return "has a control or non-printable character (a line break or tab too)";
  const commands: string[][] = [];
  let words: string[] = [];
  let redirects = 0;
  let word: string | undefined;
  let quoted = false;
  let redirect: string | undefined;
  let operator: string | undefined;
  const endWord = (): Verdict => {
    if (word === undefined) return undefined;
    const text = word;
    word = undefined;
    if (redirect === undefined) {
      words.push(text);
      return undefined;
    }
    const op = redirect;
    redirect = undefined;
    redirects++;
    if (op === ">&" || op === "<&") {
      if (/^(?:[0-9]+-?|-)$/.test(text)) return undefined;
      // bash reads `>&-x` as `>&-` followed by the word `x`.
      if (text.startsWith("-")) return `has ${op} followed by ${_show(text)}`;
    }
    if (text === "") return "redirects to an empty name";
    if (text.startsWith("/dev/") && !SHELL_DEVICES.has(text)) {
      return `redirects to the device ${_show(text)}`;
    }
    return undefined;
  };
  const endCommand = (): Verdict => {
    const why = endWord();
    if (why !== undefined) return why;
    if (redirect !== undefined) return `has ${redirect} without a target`;
    if (words.length === 0 && redirects === 0) return "has an empty command";
    if (words.length > 0) commands.push(words);
    words = [];
    redirects = 0;
    return undefined;
  };
  let i = 0;
  while (i < s.length) {
    const c = s[i];
    if (c === " ") {
      const why = endWord();
      if (why !== undefined) return why;
      i++;
      continue;
    }
    if (c === "<" || c === ">" || (c === "&" && s[i + 1] === ">")) {
      if (word !== undefined && !quoted && c !== "&" && /^[0-9]+$/.test(word)) {
        // dash reads only one digit as a file descriptor, bash any number.
        if (word.length > 1) return `has ${_show(word)} before a redirection`;
        word = undefined;
      }
      const why = endWord();
      if (why !== undefined) return why;
      if (redirect !== undefined) return `has ${redirect} without a target`;
      const op = /^(?:&>>|&>|<<|<\(|>\(|>>|>\||>&|<&|<>|<|>)/.exec(s.slice(i, i + 3))![0];
      if (op === "<<") return "has a here-document or here-string";
      if (op.endsWith("(")) return "has a process substitution";
      // dash reads `a &>f b` as `a &` then `>f b`.
      if (op.startsWith("&")) return `has ${op}, which bash and dash read differently`;
      redirect = op;
      i += op.length;
      continue;
    }
    if (c === ";" || c === "&" || c === "|") {
      const op = /^(?:&&|\|\||\|&|;;|;&|[;&|])/.exec(s.slice(i, i + 2))![0];
      if (op === ";;" || op === ";&") return `has ${op}, which only a case statement uses`;
      if (op === "|&") return "has |&, which bash and dash read differently";
      const why = endCommand();
      if (why !== undefined) return why;
      operator = op;
      i += op.length;
      continue;
    }
    if (word === undefined) {
      word = "";
      quoted = false;
    }
    if (c === "'") {
      const close = s.indexOf("'", i + 1);
      if (close < 0) return "has an unterminated quote";
      word += s.slice(i + 1, close);
      quoted = true;
      i = close + 1;
    } else if (c === '"') {
      let j = i + 1;
      for (; j < s.length && s[j] !== '"'; j++) {
        if (s[j] === "$" || s[j] === "`") return `has ${_show(s[j])} inside double quotes`;
        if (s[j] === "\\" && j + 1 < s.length && '$`"\\'.includes(s[j + 1])) j++;
        word += s[j];
      }
      if (j >= s.length) return "has an unterminated quote";
      quoted = true;
      i = j + 1;
    } else if (c === "\\") {
      if (i + 1 >= s.length) return "ends with a backslash";
      word += s[i + 1];
      quoted = true;
      i += 2;
    } else if (c === "[" && word === "" && (i + 1 >= s.length || " ;&|<>".includes(s[i + 1]))) {
      word = "[";
      i++;
    } else if (SHELL_LITERAL.test(c)) {
      word += c;
      i++;
    } else {
      return `has ${_show(c)} outside quotes, which this analysis does not accept`;
    }
  }
  const why = endWord();
  if (why !== undefined) return why;
  if (redirect !== undefined) return `has ${redirect} without a target`;
  if (words.length > 0) commands.push(words);
  else if (redirects === 0 && operator !== undefined && operator !== ";" && operator !== "&") {
    return `ends with ${operator}`;
  }
  return commands;
}

// ---------------------------------------------------------------------------
// The table of programs known to run nothing else

const PROGRAMS = new Map<string, Analyzer>([
  [
    "cat",
    _gnu({
      flags: "AbeEnstTuv",
      long: "show-all number-nonblank show-ends number squeeze-blank show-tabs show-nonprinting " +
        HELP,
    }),
  ],
  [
    "head",
    _gnu({
      flags: "qvz",
      values: "cn",
      digits: true,
      long: `bytes= lines= quiet silent verbose zero-terminated ${HELP}`,
    }),
  ],
  [
    "tail",
    _gnu({
      flags: "fFqvz",
      values: "cns",
      digits: true,
      long: "bytes= follow[=] lines= max-unchanged-stats= pid= quiet silent retry " +
        `sleep-interval= verbose zero-terminated ${HELP}`,
    }),
  ],
  [
    "wc",
    _gnu({
      flags: "cmlLw",
      long: `bytes chars lines files0-from= max-line-length words ${HELP}`,
    }),
  ],
  [
    "ls",
    _gnu({
      flags: "aAbBcCdDfFgGhHiklLmnNopqQrRsStuUvxXZ1",
      values: "ITw",
      long: "all almost-all author escape block-size= ignore-backups color[=] directory dired " +
        "classify[=] file-type format= full-time group-directories-first no-group " +
        "human-readable si dereference-command-line dereference-command-line-symlink-to-dir " +
        "hide= hyperlink[=] indicator-style= inode ignore= kibibytes dereference " +
        "numeric-uid-gid literal hide-control-chars show-control-chars quote-name " +
        "quoting-style= reverse recursive size sort= time= time-style= tabsize= width= context " +
        `zero ${HELP}`,
    }),
  ],
  [
    "grep",
    _gnu({
      flags: "EFGPiwxzsvVbnHhoqaIrRLlcTZU",
      values: "efmdDABC",
      digits: true,
      long: "extended-regexp fixed-strings basic-regexp perl-regexp regexp= file= ignore-case " +
        "no-ignore-case word-regexp line-regexp null-data no-messages invert-match max-count= " +
        "byte-offset line-number line-buffered with-filename no-filename label= only-matching " +
        "quiet silent binary-files= text directories= devices= recursive " +
        "dereference-recursive include= exclude= exclude-from= exclude-dir= " +
        "files-without-match files-with-matches count initial-tab null before-context= " +
        "after-context= context= group-separator= no-group-separator color[=] colour[=] binary " +
        HELP,
    }),
  ],
  [
    "sort",
    _gnu({
      flags: "bdfgiMhnRrVcCmsuz",
      values: "koStT",
      long: "ignore-leading-blanks dictionary-order ignore-case general-numeric-sort " +
        "ignore-nonprinting month-sort human-numeric-sort numeric-sort random-sort " +
        "random-source= reverse sort= version-sort batch-size= check[=] !compress-program " +
        "debug files0-from= key= merge output= stable buffer-size= field-separator= " +
        `temporary-directory= parallel= unique zero-terminated ${HELP}`,
    }),
  ],
  [
    "uniq",
    _gnu({
      flags: "cdDiuz",
      values: "fsw",
      long: "count repeated all-repeated[=] skip-fields= group[=] ignore-case skip-chars= " +
        `unique zero-terminated check-chars= ${HELP}`,
    }),
  ],
  [
    "cut",
    _gnu({
      flags: "nsz",
      values: "bcdf",
      long: "bytes= characters= delimiter= fields= complement only-delimited " +
        `output-delimiter= zero-terminated ${HELP}`,
    }),
  ],
  ["tee", _gnu({ flags: "aip", long: `append ignore-interrupts output-error[=] ${HELP}` })],
  ["tr", _gnu({ flags: "cCdst", long: `complement delete squeeze-repeats truncate-set1 ${HELP}` })],
  [
    "diff",
    _gnu({
      flags: "qscuenyptTrNiEZbwBad",
      values: "CUWFxXSID",
      runs: "l",
      long: "normal brief report-identical-files context[=] unified[=] ed rcs side-by-side " +
        "width= left-column suppress-common-lines show-c-function show-function-line= label= " +
        "expand-tabs initial-tab tabsize= suppress-blank-empty !paginate recursive " +
        "no-dereference new-file unidirectional-new-file ignore-file-name-case " +
        "no-ignore-file-name-case exclude= exclude-from= starting-file= from-file= to-file= " +
        "ignore-case ignore-tab-expansion ignore-trailing-space ignore-space-change " +
        "ignore-all-space ignore-blank-lines ignore-matching-lines= text strip-trailing-cr " +
        "ifdef= line-format= old-line-format= new-line-format= unchanged-line-format= " +
        "old-group-format= new-group-format= unchanged-group-format= changed-group-format= " +
        `minimal horizon-lines= speed-large-files color[=] palette= ${HELP}`,
    }),
  ],
  [
    "mkdir",
    _gnu({ flags: "pvZ", values: "m", long: `mode= parents verbose context[=] ${HELP}` }),
  ],
  [
    "touch",
    _gnu({
      flags: "acfhm",
      values: "drt",
      long: `no-create date= no-dereference reference= time= ${HELP}`,
    }),
  ],
  [
    "rm",
    _gnu({
      flags: "fiIrRdv",
      long: "force interactive[=] one-file-system no-preserve-root preserve-root[=] recursive " +
        `dir verbose ${HELP}`,
    }),
  ],
  [
    "cp",
    _gnu({
      flags: "abdfiHlLnPpRrsTuvxZ",
      values: "St",
      long: "archive attributes-only backup[=] copy-contents force interactive link dereference " +
        "no-clobber no-dereference preserve[=] no-preserve= parents recursive reflink[=] " +
        "remove-destination sparse= strip-trailing-slashes symbolic-link suffix= " +
        "target-directory= no-target-directory update verbose one-file-system context[=] " +
        HELP,
    }),
  ],
  [
    "mv",
    _gnu({
      flags: "bfinTuvZ",
      values: "St",
      long: "backup[=] force interactive no-clobber strip-trailing-slashes suffix= " +
        `target-directory= no-target-directory update verbose context ${HELP}`,
    }),
  ],
  ["pwd", _gnu({ flags: "LP", long: `logical physical ${HELP}` })],
  ["basename", _gnu({ flags: "az", values: "s", long: `multiple suffix= zero ${HELP}` })],
  ["dirname", _gnu({ flags: "z", long: `zero ${HELP}` })],
  ["sleep", _gnu({ long: HELP })],
  ["yes", _gnu({ long: HELP })],
  ["echo", _operandsOnly],
  ["printf", _operandsOnly],
  ["true", _operandsOnly],
  ["false", _operandsOnly],
  ["sed", _gnu(SED_OPTIONS, _sed)],
  ["find", _find],
  ["env", _env],
  ["git", _git],
  ["bash", _shell],
  ["sh", _shell],
  ["dash", _shell],
]);
