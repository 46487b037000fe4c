/**
 * Command analysis for `exec.run`: every command an argv would run, so that
 * an allowed wrapper cannot run a forbidden command. The broker asks for one
 * `exec:run:<command>` capability per name this module returns.
 *
 * Pure functions only: nothing here touches the host.
 *
 * ## Command names
 *
 * - A bare name is itself: `git` → `git`. The shell provider looks it up in
 *   the operator's `PATH`.
 * - An absolute path in a system program directory (`/bin`, `/sbin`,
 *   `/usr/bin`, `/usr/sbin`, `/usr/local/bin`, `/usr/local/sbin`) is named by
 *   its basename: `/usr/bin/curl` → `curl`.
 * - Any other path is a path, normalized and made absolute against `cwd`
 *   when one is given: `./build.sh` in `/ws` → `/ws/build.sh`. A program in
 *   the workspace therefore never passes for a system command of the same
 *   name; grant it by path (`exec:run:/ws/scripts/**`).
 *
 * ## Unwrapping
 *
 * Wrappers run their argument as a command, and each such command is
 * reported too: `env`, `sudo`, `nice`, `nohup`, `timeout`, `time`,
 * `stdbuf`, `setsid`, `chroot`, `busybox APPLET`, `command`, `exec`,
 * `builtin`, `xargs`, `find -exec/-execdir/-ok/-okdir`, `git bisect run`.
 * Shell strings (`bash|sh|dash|ksh|mksh|ash -c STRING`, `git rebase --exec`,
 * `git submodule foreach`, `tar --to-command`, `rsync -e`, `ssh -o
 * ProxyCommand=`, `man -P`, …) are parsed: every simple command of the string,
 * including those in `$(…)`, backticks, `<(…)`, subshells, pipelines and
 * lists, is analyzed in turn. Shell builtins that cannot run anything (`cd`,
 * `echo`, `printf`, `test`, `export`, `read`, …) are not reported.
 *
 * ## Pseudo-commands
 *
 * Names with a `:` that stand for something a capability must grant
 * explicitly. `exec:run:*` covers them, like every name.
 *
 * - `sh:dynamic` — something would run that cannot be known before it runs:
 *   a variable, substitution, glob or `~` in command position, `eval`,
 *   `exec` in a shell string, here-documents, `case`, aliases, a shell
 *   reading commands from standard input, a wrapper option this module does
 *   not know, arguments that `xargs` appends to a wrapper, a variable
 *   assignment that changes what programs run or load (`PATH`, `LD_*`,
 *   `BASH_FUNC_*`, `GIT_*`, `*_PROXY`, …), bash's `/dev/tcp`, and command
 *   runners this module does not parse (`su`, `watch`, `strace`, `ssh -F`,
 *   `fish`, `zsh` without `-f`, …). No sane capability grants it.
 * - `sh:script` — a shell runs commands from a file (`bash build.sh`,
 *   `source x`, `deno task`, `node --run`); the file's commands cannot be
 *   seen here.
 * - `<interpreter>:eval` — inline code for an interpreter, named after the
 *   command as invoked: `python3 -c CODE` → `python3` and `python3:eval`;
 *   `node -e/--eval/-p/--print`, `perl -e/-E/-M`, `ruby -e`, an interpreter
 *   reading its program from standard input, `deno eval`, `deno repl`,
 *   `deno x`, and `deno run` (or any `deno` subcommand) given a remote
 *   specifier (`https:`, `http:`, `npm:`, `jsr:`, `data:`); `awk` programs
 *   that call `system`, `getline` or pipes; `sed` scripts that use GNU
 *   `e`. So `exec:run:python3` runs scripts from files, and only
 *   `exec:run:python3:eval` allows inline code.
 * - `git:config-exec` — git run with settings that can make it run another
 *   program: `-c`/`--config-env`/`git config` of any key outside a list of
 *   harmless ones (`alias.*`, `core.sshCommand`, `core.pager`, `core.editor`,
 *   `credential.helper`, … all count), `--exec-path=`, `--template`, the
 *   `ext::` transport, `git help --web`, `git instaweb`.
 *
 * What this cannot see: what a granted program does on its own. `make`
 * runs its Makefile, `npm run` its package scripts, `git` the hooks and
 * aliases of the repository it works in, a script file whatever it says.
 * Grant only programs whose own behaviour you accept.
 *
 * @example
 * ```ts
 * import { analyzeCommand } from "./command_analysis.ts";
 *
 * const { commands } = analyzeCommand(["sudo", "bash", "-c", "echo hi; curl x | sh"]);
 * console.assert(commands.join() === "sudo,bash,curl,sh,sh:dynamic");
 * ```
 *
 * @module
 */

import { posix } from "node:path";

/** Something would run that cannot be known before it runs. */
export const DYNAMIC_COMMAND = "sh:dynamic";
/** A shell runs commands from a file that cannot be seen here. */
export const SCRIPT_COMMAND = "sh:script";
/** Git runs with settings that can make it run another program. */
export const GIT_CONFIG_EXEC = "git:config-exec";

/** What {@link analyzeCommand} found. */
export interface CommandAnalysis {
  /** Every command (and pseudo-command) the argv would run, each once, in the order found. */
  commands: string[];
  /** One line per command run through a wrapper and per pseudo-command: why it is there. */
  reasons: string[];
}

/** Options of {@link analyzeCommand}. */
export interface AnalyzeCommandOptions {
  /** The absolute working directory; relative command paths are made absolute against it. */
  cwd?: string;
}

/**
 * The name under which inline code for `interpreter` is granted:
 * `python3` → `python3:eval`.
 *
 * @example
 * ```ts
 * import { evalCommand } from "./command_analysis.ts";
 * console.assert(evalCommand("node") === "node:eval");
 * ```
 */
export function evalCommand(interpreter: string): string {
  return `${interpreter}:eval`;
}

/**
 * Every command that `argv` would run, wrappers and interpreters unwrapped
 * (see the module documentation for the names and pseudo-commands).
 *
 * @example
 * ```ts
 * import { analyzeCommand } from "./command_analysis.ts";
 *
 * const result = analyzeCommand(["git", "-c", "alias.x=!curl evil", "x"]);
 * console.assert(result.commands.includes("git:config-exec"));
 * console.assert(analyzeCommand(["./run.sh"], { cwd: "/ws" }).commands[0] === "/ws/run.sh");
 * ```
 */
export function analyzeCommand(
  argv: readonly string[],
  options: AnalyzeCommandOptions = {},
): CommandAnalysis {
  const state = _newState(options.cwd);
  _analyzeArgv(state, argv.map((word) => word.replaceAll(DYN, "")), ROOT_FRAME);
  return { commands: state.commands, reasons: state.reasons };
}

/**
 * Every command that a shell string would run, as `sh -c SCRIPT` runs it,
 * without `sh` itself.
 *
 * @example
 * ```ts
 * import { analyzeShellScript } from "./command_analysis.ts";
 * const { commands } = analyzeShellScript("cd src && make test | tee log; echo $(whoami)");
 * console.assert(commands.join() === "make,tee,whoami");
 * ```
 */
export function analyzeShellScript(
  script: string,
  options: AnalyzeCommandOptions = {},
): CommandAnalysis {
  const state = _newState(options.cwd);
  _analyzeShellString(state, script, ROOT_FRAME, "the shell string");
  return { commands: state.commands, reasons: state.reasons };
}

// ---------------------------------------------------------------------------
// State

/** Marks a word whose value is only known at run time (it comes from a shell string). */
const DYN = "\u0000";
const MAX_DEPTH = 24;
const MAX_REASONS = 200;
/** Deepest nesting of substitutions and quotes inside one shell string. */
const MAX_NESTING = 64;

const SYSTEM_DIRS = new Set([
  "/bin",
  "/sbin",
  "/usr/bin",
  "/usr/sbin",
  "/usr/local/bin",
  "/usr/local/sbin",
]);

interface State {
  commands: string[];
  seen: Set<string>;
  reasons: string[];
  cwd?: string;
}

interface Frame {
  depth: number;
  /** Arguments may be appended at run time (`xargs CMD`). */
  openTail: boolean;
  /** A string replaced at run time in the arguments (`find -exec … {}`, `xargs -I R`). */
  placeholder?: string;
  /** What runs this command, for reasons. */
  via?: string;
  /** Inside a shell string that changes directory: relative command paths are unknown. */
  cdSeen: boolean;
}

const ROOT_FRAME: Frame = { depth: 0, openTail: false, cdSeen: false };

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

function _pseudo(state: State, command: string, why: string): void {
  _add(state, command);
  _reason(state, `${command}: ${why}`);
}

function _dynamic(state: State, why: string): void {
  _pseudo(state, DYNAMIC_COMMAND, why);
}

function _isDyn(word: string | undefined): boolean {
  return word !== undefined && word.startsWith(DYN);
}

function _show(word: string): string {
  const text = word.replaceAll(DYN, "");
  return JSON.stringify(text.length > 60 ? `${text.slice(0, 59)}…` : text);
}

function _inner(frame: Frame, via: string): Frame {
  return { ...frame, depth: frame.depth + 1, via };
}

// ---------------------------------------------------------------------------
// Argv analysis

type Handler = (state: State, words: readonly string[], frame: Frame, base: string) => void;

function _analyzeArgv(state: State, words: readonly string[], frame: Frame): void {
  if (words.length === 0) return;
  if (frame.depth > MAX_DEPTH) {
    _dynamic(state, `commands nest deeper than ${MAX_DEPTH} levels`);
    return;
  }
  const first = words[0];
  if (_isDyn(first)) {
    _dynamic(state, `${_show(first)} is expanded at run time in command position`);
    return;
  }
  if (frame.placeholder !== undefined && first.includes(frame.placeholder)) {
    _dynamic(state, `the command ${_show(first)} is replaced at run time`);
    return;
  }
  const name = _commandName(state, first, frame);
  if (name === undefined || name === "") return;
  _add(state, name);
  if (frame.via !== undefined) _reason(state, `${name}: run by ${frame.via}`);
  const base = posix.basename(first);
  const handler = _handlerFor(base);
  if (!handler) return;
  if (frame.openTail) {
    _dynamic(state, `arguments that xargs appends may change what ${base} runs`);
  }
  const placeholder = frame.placeholder;
  if (placeholder !== undefined && words.slice(1).some((w) => w.includes(placeholder))) {
    _dynamic(state, `arguments replaced at run time may change what ${base} runs`);
  }
  handler(state, words, { ...frame, openTail: false, placeholder: undefined }, base);
}

function _commandName(state: State, word: string, frame: Frame): string | undefined {
  if (!word.includes("/")) return word;
  if (!word.startsWith("/") && frame.cdSeen) {
    _dynamic(state, `the relative command path ${_show(word)} follows a change of directory`);
    return undefined;
  }
  const path = word.startsWith("/")
    ? posix.normalize(word)
    : state.cwd !== undefined
    ? posix.join(state.cwd, word)
    : word;
  if (path.startsWith("/") && SYSTEM_DIRS.has(posix.dirname(path))) return posix.basename(path);
  return path;
}

function _handlerFor(base: string): Handler | undefined {
  const direct = HANDLERS.get(base);
  if (direct) return direct;
  if (/^python[0-9.]*$/.test(base) || /^pypy[0-9.]*$/.test(base)) return _python;
  if (/^perl[0-9.]*$/.test(base)) return _perl;
  if (/^ruby[0-9.]*$/.test(base)) return _ruby;
  if (/^node(js)?[0-9.]*$/.test(base)) return _node;
  return undefined;
}

// ---------------------------------------------------------------------------
// Option parsing for wrappers

interface OptionSpec {
  /** Short options that take a value, attached or as the next word. */
  shortValue?: string;
  /** Short options with an optional attached value. */
  shortOptional?: string;
  /** Short flags. */
  shortFlags?: string;
  /** Long options that take a value, `--name=v` or `--name v`. */
  longValue?: readonly string[];
  /** Long options that take no value or only an attached one. */
  longFlags?: readonly string[];
  /** Accept `-10` style numbers (nice). */
  digits?: boolean;
}

interface ParsedOption {
  name: string;
  value?: string;
}

/**
 * Reads options from `start`; returns them and the index of the first
 * operand. An unknown option adds `sh:dynamic` (it might take a value that
 * hides the command) and is read as a flag.
 */
function _options(
  state: State,
  words: readonly string[],
  start: number,
  spec: OptionSpec,
  what: string,
): { options: ParsedOption[]; index: number } {
  const options: ParsedOption[] = [];
  let i = start;
  while (i < words.length) {
    const word = words[i];
    if (_isDyn(word) || word === "-" || !word.startsWith("-")) break;
    if (word === "--") {
      i++;
      break;
    }
    if (word.startsWith("--")) {
      const eq = word.indexOf("=");
      const name = eq < 0 ? word : word.slice(0, eq);
      let value = eq < 0 ? undefined : word.slice(eq + 1);
      if (spec.longValue?.includes(name)) {
        if (value === undefined) value = words[++i];
      } else if (!spec.longFlags?.includes(name)) {
        _dynamic(state, `${what} has an option this analysis does not know: ${_show(word)}`);
      }
      options.push({ name, value });
      i++;
      continue;
    }
    if (spec.digits && /^-[0-9]+$/.test(word)) {
      options.push({ name: "-n", value: word.slice(1) });
      i++;
      continue;
    }
    for (let j = 1; j < word.length; j++) {
      const c = word[j];
      if (spec.shortValue?.includes(c)) {
        const value = j + 1 < word.length ? word.slice(j + 1) : words[++i];
        options.push({ name: `-${c}`, value });
        break;
      }
      if (spec.shortOptional?.includes(c)) {
        options.push({ name: `-${c}`, value: j + 1 < word.length ? word.slice(j + 1) : undefined });
        break;
      }
      if (!spec.shortFlags?.includes(c)) {
        _dynamic(state, `${what} has an option this analysis does not know: "-${c}"`);
      }
      options.push({ name: `-${c}` });
    }
    i++;
  }
  return { options, index: i };
}

function _has(options: readonly ParsedOption[], ...names: string[]): boolean {
  return options.some((o) => names.includes(o.name));
}

/** Variables that change which program runs or make a program load other code. */
const DANGEROUS_ENV = new RegExp(
  "^(?:" + [
    "PATH",
    "HOME",
    "SHELL",
    "ENV",
    "BASH_ENV",
    "BASH_FUNC_.*",
    "BASH_XTRACEFD",
    "IFS",
    "CDPATH",
    "GLOBIGNORE",
    "SHELLOPTS",
    "BASHOPTS",
    "PS4",
    "PROMPT_COMMAND",
    "ZDOTDIR",
    "LD_.*",
    "DYLD_.*",
    "GCONV_PATH",
    "LOCPATH",
    "NLSPATH",
    "HOSTALIASES",
    "RES_OPTIONS",
    "LOCALDOMAIN",
    "XDG_.*",
    "GIT_.*",
    ".*PAGER",
    ".*EDITOR",
    "VISUAL",
    "BROWSER",
    ".*ASKPASS.*",
    "SSH_.*",
    "PYTHON.*",
    "NODE_OPTIONS",
    "NODE_PATH",
    "NODE_REPL_EXTERNAL_MODULE",
    "NPM_CONFIG_.*",
    "PERL.*",
    "RUBY.*",
    "GEM_.*",
    "BUNDLE_.*",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "CLASSPATH",
    "DENO_.*",
    "TMPDIR",
    "CURL_HOME",
    "WGETRC",
    "INPUTRC",
    "LESSOPEN",
    "LESSCLOSE",
    "LESSKEY.*",
    "MANOPT",
    "TAR_OPTIONS",
    "RSYNC_RSH",
    "CVS_RSH",
    "TERMINFO.*",
    "MALLOC_.*",
    "GLIBC_TUNABLES",
    "OPENSSL_CONF",
    "OPENSSL_ENGINES",
    ".*_PROXY",
    "LUA_.*",
    "PHPRC",
    "MYVIMRC",
    "VIMINIT",
    "EXINIT",
    "FPATH",
  ].join("|") + ")$",
  "i",
);

function _checkAssignment(state: State, name: string, where: string): void {
  if (DANGEROUS_ENV.test(name)) {
    _dynamic(state, `${where} sets ${name}, which changes what programs run or load`);
  }
}

// ---------------------------------------------------------------------------
// Wrappers

function _env(state: State, words: readonly string[], frame: Frame): void {
  let rest = words.slice(1);
  let splits = 0;
  let i = 0;
  scan: while (i < rest.length) {
    const word = rest[i];
    if (_isDyn(word)) break;
    if (word === "--") {
      i++;
      break;
    }
    if (word === "-") {
      i++;
      continue;
    }
    let split: string | undefined;
    if (word.startsWith("--")) {
      const eq = word.indexOf("=");
      const name = eq < 0 ? word : word.slice(0, eq);
      const value = () => (eq < 0 ? rest[++i] : word.slice(eq + 1));
      if (name === "--help" || name === "--version") return;
      if (name === "--unset" || name === "--chdir") value();
      else if (name === "--split-string") split = value() ?? "";
      else if (
        ![
          "--ignore-environment",
          "--null",
          "--debug",
          "--list-signal-handling",
          "--block-signal",
          "--default-signal",
          "--ignore-signal",
        ].includes(name)
      ) {
        _dynamic(state, `env has an option this analysis does not know: ${_show(word)}`);
      }
    } else if (word.startsWith("-")) {
      for (let j = 1; j < word.length; j++) {
        const c = word[j];
        if (c === "u" || c === "C" || c === "S") {
          const value = j + 1 < word.length ? word.slice(j + 1) : rest[++i] ?? "";
          if (c === "S") split = value;
          break;
        }
        if (!"i0v".includes(c)) {
          _dynamic(state, `env has an option this analysis does not know: "-${c}"`);
        }
      }
    } else if (word.indexOf("=") > 0) {
      _checkAssignment(state, word.slice(0, word.indexOf("=")), "env");
    } else {
      break;
    }
    i++;
    if (split !== undefined) {
      if (++splits > 8) {
        _dynamic(state, "env -S splits its arguments too many times");
        return;
      }
      rest = [..._splitWords(split), ...rest.slice(i)];
      i = 0;
      continue scan;
    }
  }
  _analyzeArgv(state, rest.slice(i), _inner(frame, "env"));
}

/** Splits `env -S` text into words (whitespace, quotes, backslashes); `$` makes a word dynamic. */
function _splitWords(text: string): string[] {
  const words: string[] = [];
  let word = "";
  let started = false;
  let dyn = false;
  let quote: string | undefined;
  const end = () => {
    if (started) words.push(dyn ? DYN + word : word);
    word = "";
    started = false;
    dyn = false;
  };
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quote) {
      if (c === quote) quote = undefined;
      else if (c === "\\" && quote === '"' && i + 1 < text.length) word += text[++i];
      else {
        if (c === "$" && quote === '"') dyn = true;
        word += c;
      }
    } else if (c === "'" || c === '"') {
      quote = c;
      started = true;
    } else if (c === "\\" && i + 1 < text.length) {
      word += text[++i];
      started = true;
    } else if (/\s/.test(c)) {
      end();
    } else {
      if (c === "$") dyn = true;
      word += c;
      started = true;
    }
  }
  end();
  return words;
}

function _xargs(state: State, words: readonly string[], frame: Frame): void {
  const { options, index } = _options(state, words, 1, {
    shortValue: "adEILnPs",
    shortOptional: "eil",
    shortFlags: "0oprtx",
    longValue: [
      "--arg-file",
      "--delimiter",
      "--max-args",
      "--max-procs",
      "--max-chars",
      "--process-slot-var",
    ],
    longFlags: [
      "--max-lines",
      "--replace",
      "--eof",
      "--null",
      "--no-run-if-empty",
      "--verbose",
      "--interactive",
      "--exit",
      "--open-tty",
      "--show-limits",
      "--help",
      "--version",
    ],
  }, "xargs");
  if (_has(options, "--help", "--version")) return;
  let placeholder: string | undefined;
  for (const option of options) {
    if (option.name === "-I") placeholder = option.value;
    if (option.name === "-i" || option.name === "--replace") placeholder = option.value ?? "{}";
  }
  const inner = words.slice(index);
  _analyzeArgv(state, inner.length ? inner : ["echo"], {
    ..._inner(frame, "xargs"),
    openTail: placeholder === undefined,
    placeholder: placeholder === "" ? undefined : placeholder,
  });
}

function _find(state: State, words: readonly string[], frame: Frame): void {
  for (let i = 1; i < words.length; i++) {
    const word = words[i];
    if (_isDyn(word)) {
      _dynamic(state, `find argument ${_show(word)} is expanded at run time`);
      continue;
    }
    if (!["-exec", "-execdir", "-ok", "-okdir"].includes(word)) continue;
    let end = i + 1;
    while (
      end < words.length && words[end] !== ";" &&
      !(words[end] === "+" && words[end - 1] === "{}")
    ) end++;
    _analyzeArgv(state, words.slice(i + 1, end), {
      ..._inner(frame, `find ${word}`),
      placeholder: "{}",
    });
    i = end;
  }
}

function _sudo(state: State, words: readonly string[], frame: Frame): void {
  const { options, index } = _options(state, words, 1, {
    shortValue: "CDgprRtTUu",
    shortFlags: "AbBEHKklnNPSVveish",
    longValue: [
      "--user",
      "--group",
      "--chdir",
      "--chroot",
      "--close-from",
      "--prompt",
      "--role",
      "--type",
      "--command-timeout",
      "--other-user",
      "--host",
    ],
    longFlags: [
      "--askpass",
      "--background",
      "--bell",
      "--preserve-env",
      "--set-home",
      "--remove-timestamp",
      "--reset-timestamp",
      "--non-interactive",
      "--preserve-groups",
      "--stdin",
      "--validate",
      "--version",
      "--help",
      "--list",
      "--edit",
      "--login",
      "--shell",
    ],
  }, "sudo");
  if (_has(options, "-e", "--edit")) _dynamic(state, "sudo -e runs an editor");
  if (_has(options, "-i", "--login", "-s", "--shell")) {
    _dynamic(state, "sudo -i/-s runs the command through a login shell");
  }
  if (_has(options, "-R", "--chroot")) _dynamic(state, "sudo -R runs inside another root");
  if (_has(options, "-h")) _dynamic(state, "sudo -h is ambiguous (help or host)");
  let i = index;
  while (i < words.length && !_isDyn(words[i]) && words[i].indexOf("=") > 0) {
    _checkAssignment(state, words[i].slice(0, words[i].indexOf("=")), "sudo");
    i++;
  }
  _analyzeArgv(state, words.slice(i), _inner(frame, "sudo"));
}

/** A wrapper of the form `NAME [OPTIONS] [N fixed operands] COMMAND...`. */
function _simpleWrapper(spec: OptionSpec, operands = 0): Handler {
  return (state, words, frame, base) => {
    const { options, index } = _options(state, words, 1, spec, base);
    if (_has(options, "--help", "--version")) return;
    _analyzeArgv(state, words.slice(index + operands), _inner(frame, base));
  };
}

function _chroot(state: State, words: readonly string[], frame: Frame): void {
  const { options, index } = _options(state, words, 1, {
    longValue: ["--userspec", "--groups"],
    longFlags: ["--skip-chdir", "--help", "--version"],
  }, "chroot");
  if (_has(options, "--help", "--version")) return;
  const root = words[index];
  if (root === undefined) return;
  const inner = words.slice(index + 1);
  if (_isDyn(root) || posix.normalize(root) !== "/") {
    _dynamic(state, "chroot runs its command inside another root, where names are other files");
  }
  if (inner.length === 0) _dynamic(state, "chroot without a command runs an interactive shell");
  _analyzeArgv(state, inner, _inner(frame, "chroot"));
}

function _busybox(state: State, words: readonly string[], frame: Frame): void {
  const applet = words[1];
  if (applet === undefined || (!_isDyn(applet) && applet.startsWith("-"))) return;
  _analyzeArgv(state, words.slice(1), _inner(frame, "busybox"));
}

function _command(state: State, words: readonly string[], frame: Frame): void {
  const { options, index } = _options(state, words, 1, { shortFlags: "pvV" }, "command");
  if (_has(options, "-v", "-V")) return;
  _analyzeArgv(state, words.slice(index), _inner(frame, "command"));
}

// ---------------------------------------------------------------------------
// Shells

const SHELL_LONG_FLAGS = [
  "--norc",
  "--noprofile",
  "--posix",
  "--restricted",
  "--verbose",
  "--noediting",
  "--debugger",
  "--dump-strings",
  "--dump-po-strings",
  "--wordexp",
  "--protected",
  "--no-rcs",
];

function _shell(state: State, words: readonly string[], frame: Frame, base: string): void {
  let command = false;
  let noRcs = false;
  let i = 1;
  while (i < words.length) {
    const word = words[i];
    if (_isDyn(word)) {
      _dynamic(state, `${base} option ${_show(word)} is expanded at run time`);
      return;
    }
    if (word === "--" || word === "-") {
      i++;
      break;
    }
    if (word.startsWith("--")) {
      if (word === "--help" || word === "--version") return;
      if (word === "--login") _dynamic(state, `${base} --login reads profile files from $HOME`);
      else if (word === "--rcfile" || word === "--init-file") {
        _dynamic(state, `${base} ${word} reads commands from a file`);
        i++;
      } else if (word === "--no-rcs") noRcs = true;
      else if (!SHELL_LONG_FLAGS.includes(word)) {
        _dynamic(state, `${base} has an option this analysis does not know: ${_show(word)}`);
      }
      i++;
      continue;
    }
    if ((word.startsWith("-") || word.startsWith("+")) && word.length > 1) {
      for (const c of word.slice(1)) {
        if (c === "c") command = true;
        else if (c === "o" || c === "O") i++;
        else if (c === "f") noRcs = true;
        else if (c === "i") _dynamic(state, `${base} -i reads start-up files from $HOME`);
        else if (c === "l") _dynamic(state, `${base} -l reads profile files from $HOME`);
        else if (c === "s") _dynamic(state, `${base} -s reads commands from standard input`);
      }
      i++;
      continue;
    }
    break;
  }
  if (base === "zsh" && !noRcs) {
    _dynamic(state, "zsh reads $HOME/.zshenv before running anything (use zsh -f)");
  }
  if (command) {
    const script = words[i];
    if (script === undefined) return;
    if (_isDyn(script)) {
      _dynamic(state, `the ${base} -c string is expanded at run time`);
      return;
    }
    _analyzeShellString(state, script, _inner(frame, `${base} -c`), `${base} -c`);
    return;
  }
  if (i >= words.length) {
    _dynamic(state, `${base} reads commands from standard input`);
    return;
  }
  _pseudo(state, SCRIPT_COMMAND, `${base} runs the script ${_show(words[i])}`);
}

// ---------------------------------------------------------------------------
// Interpreters

function _eval(state: State, base: string, why: string): void {
  _pseudo(state, evalCommand(base), why);
}

function _python(state: State, words: readonly string[], _frame: Frame, base: string): void {
  let info = false;
  for (let i = 1; i < words.length; i++) {
    const word = words[i];
    if (_isDyn(word)) {
      _dynamic(state, `${base} argument ${_show(word)} is expanded at run time`);
      return;
    }
    if (word === "-") return _eval(state, base, `${base} - reads its program from standard input`);
    if (word === "--") {
      if (i + 1 < words.length) return;
      break;
    }
    if (word.startsWith("--")) {
      if (word.startsWith("--help") || word === "--version") info = true;
      else if (word === "--check-hash-based-pycs") i++;
      else _dynamic(state, `${base} has an option this analysis does not know: ${_show(word)}`);
      continue;
    }
    if (!word.startsWith("-")) return; // the script file
    for (let j = 1; j < word.length; j++) {
      const c = word[j];
      if (c === "c") return _eval(state, base, `${base} -c runs inline code`);
      if (c === "m") return; // a module from sys.path: like a script file
      if (c === "W" || c === "X") {
        if (j + 1 === word.length) i++;
        break;
      }
      if (c === "i") _eval(state, base, `${base} -i reads code from standard input`);
      else if (c === "h" || c === "V" || c === "?") info = true;
      else if (!"bBdEIOPqsSuvxR".includes(c)) {
        _dynamic(state, `${base} has an option this analysis does not know: "-${c}"`);
      }
    }
  }
  if (!info) _eval(state, base, `${base} without a script reads code from standard input`);
}

const NODE_VALUE_OPTIONS = new Set([
  "-r",
  "--require",
  "--import",
  "--loader",
  "--experimental-loader",
  "-C",
  "--conditions",
  "--title",
  "--input-type",
  "--experimental-default-type",
  "--dns-result-order",
  "--disable-warning",
  "--env-file",
  "--env-file-if-exists",
  "--inspect-port",
  "--debug-port",
  "--icu-data-dir",
  "--openssl-config",
  "--redirect-warnings",
  "--secure-heap",
  "--secure-heap-min",
  "--stack-trace-limit",
  "--unhandled-rejections",
  "--watch-path",
  "--diagnostic-dir",
  "--cpu-prof-dir",
  "--cpu-prof-name",
  "--heap-prof-dir",
  "--heap-prof-name",
  "--heapsnapshot-signal",
  "--max-http-header-size",
  "--report-dir",
  "--report-directory",
  "--report-filename",
  "--report-signal",
  "--trace-event-categories",
  "--trace-event-file-pattern",
  "--localstorage-file",
  "--experimental-config-file",
  "--test-reporter",
  "--test-reporter-destination",
  "--test-name-pattern",
  "--test-skip-pattern",
  "--test-shard",
  "--test-concurrency",
  "--test-timeout",
]);

/**
 * Node: conservative. Every argument up to `--` is checked for an eval
 * flag (a script argument that looks like one counts too), because node's
 * option list is too long to be sure where the script starts.
 */
function _node(state: State, words: readonly string[], _frame: Frame, base: string): void {
  let script = false;
  let info = false;
  for (let i = 1; i < words.length; i++) {
    const word = words[i];
    if (_isDyn(word)) {
      _dynamic(state, `${base} argument ${_show(word)} is expanded at run time`);
      return;
    }
    if (word === "--") {
      script ||= i + 1 < words.length;
      break;
    }
    if (word === "-") return _eval(state, base, `${base} - reads code from standard input`);
    const name = word.startsWith("--") ? word.split("=", 1)[0] : word;
    if (name === "--eval" || name === "--print") {
      _eval(state, base, `${base} ${name} runs inline code`);
      if (!word.includes("=")) i++;
    } else if (/^-[a-zA-Z]+$/.test(word) && /[ep]/.test(word)) {
      _eval(state, base, `${base} ${word} runs inline code`);
      i++;
    } else if (name === "-i" || name === "--interactive") {
      _eval(state, base, `${base} ${name} reads code from standard input`);
    } else if (name === "--run") {
      _pseudo(state, SCRIPT_COMMAND, `${base} --run runs a package.json script through a shell`);
      script = true;
      if (!word.includes("=")) i++;
    } else if (["-h", "--help", "-v", "--version", "--v8-options"].includes(name)) {
      info = true;
    } else if (NODE_VALUE_OPTIONS.has(name)) {
      if (!word.includes("=")) i++;
    } else if (!word.startsWith("-")) {
      script = true;
    }
  }
  if (!script && !info && !state.seen.has(evalCommand(base))) {
    _eval(state, base, `${base} without a script reads code from standard input`);
  }
}

/** Perl: switch clusters; `-e`/`-E` and `-M`/`-m` (which evaluates `use …`) are inline code. */
function _perl(state: State, words: readonly string[], _frame: Frame, base: string): void {
  let code = false;
  let info = false;
  for (let i = 1; i < words.length; i++) {
    const word = words[i];
    if (_isDyn(word)) {
      _dynamic(state, `${base} argument ${_show(word)} is expanded at run time`);
      return;
    }
    if (word === "-") break;
    if (word === "--") {
      if (i + 1 < words.length) return;
      break;
    }
    if (!word.startsWith("-")) return; // the script file
    if (word === "--help" || word === "--version") {
      info = true;
      continue;
    }
    for (let j = 1; j < word.length; j++) {
      const c = word[j];
      const rest = word.slice(j + 1);
      if (c === "e" || c === "E") {
        _eval(state, base, `${base} -${c} runs inline code`);
        code = true;
        if (rest === "") i++;
        break;
      }
      if (c === "M" || c === "m") {
        _eval(state, base, `${base} -${c} evaluates a use statement`);
        if (rest === "") i++;
        break;
      }
      if (c === "I") {
        if (rest === "") i++;
        break;
      }
      if (c === "d" && rest.startsWith(":")) {
        _eval(state, base, `${base} -d: loads a debugger module with arguments`);
        break;
      }
      if ("ixFDV".includes(c)) break; // the rest of the cluster is its value
      if ("l0C".includes(c)) {
        while (j + 1 < word.length && /[0-9a-fA-Fx]/.test(word[j + 1]) && word[j + 1] !== "e") j++;
        continue;
      }
      if (c === "h" || c === "v") info = true;
      else if (!"acdnpsStTuUwWX".includes(c)) {
        _dynamic(state, `${base} has an option this analysis does not know: "-${c}"`);
      }
    }
  }
  if (!code && !info) _eval(state, base, `${base} without a script reads code from standard input`);
}

/** Ruby: like perl, with `-e` for inline code. */
function _ruby(state: State, words: readonly string[], _frame: Frame, base: string): void {
  let code = false;
  let info = false;
  for (let i = 1; i < words.length; i++) {
    const word = words[i];
    if (_isDyn(word)) {
      _dynamic(state, `${base} argument ${_show(word)} is expanded at run time`);
      return;
    }
    if (word === "-") break;
    if (word === "--") {
      if (i + 1 < words.length) return;
      break;
    }
    if (!word.startsWith("-")) return; // the script file
    if (word.startsWith("--")) {
      const name = word.split("=", 1)[0];
      if (["--help", "--version", "--copyright"].includes(name)) info = true;
      else if (!word.includes("=") && ["--encoding", "--external-encoding"].includes(name)) i++;
      continue;
    }
    for (let j = 1; j < word.length; j++) {
      const c = word[j];
      const rest = word.slice(j + 1);
      if (c === "e") {
        _eval(state, base, `${base} -e runs inline code`);
        code = true;
        if (rest === "") i++;
        break;
      }
      if ("IrCE".includes(c)) {
        if (rest === "") i++;
        break;
      }
      if ("xFiK".includes(c)) break; // the rest of the cluster is its value
      if ("0TW".includes(c)) {
        while (j + 1 < word.length && /[0-9:]/.test(word[j + 1])) j++;
        continue;
      }
      if (c === "h" || c === "v") info = true;
      else if (!"acdlnpsSwy".includes(c)) {
        _dynamic(state, `${base} has an option this analysis does not know: "-${c}"`);
      }
    }
  }
  if (!code && !info) _eval(state, base, `${base} without a script reads code from standard input`);
}

const DENO_SUBCOMMANDS = new Set([
  "run",
  "serve",
  "eval",
  "repl",
  "task",
  "test",
  "bench",
  "check",
  "compile",
  "install",
  "uninstall",
  "cache",
  "info",
  "fmt",
  "lint",
  "doc",
  "coverage",
  "upgrade",
  "completions",
  "types",
  "lsp",
  "jupyter",
  "init",
  "publish",
  "add",
  "remove",
  "outdated",
  "clean",
  "x",
  "approve-scripts",
  "update",
  "deploy",
  "audit",
]);

const REMOTE_SPECIFIER = /(?:^|=)(?:https?|npm|jsr|data|blob):/i;

/**
 * Deno: `eval`, `repl`, `x` and a `-` program are inline code; `task` runs
 * shell scripts from the config; any argument naming a remote module (also
 * one meant for the script) counts as inline code, except `--location`.
 */
function _deno(state: State, words: readonly string[], _frame: Frame, base: string): void {
  let sub: string | undefined;
  for (let i = 1; i < words.length; i++) {
    const word = words[i];
    if (_isDyn(word)) {
      _dynamic(state, `${base} argument ${_show(word)} is expanded at run time`);
      return;
    }
    if (word === "--location" || word === "-L" || word === "--log-level") {
      i++;
      continue;
    }
    if (["-h", "--help", "-V", "--version"].includes(word) && sub === undefined) return;
    if (word.startsWith("--location=")) continue;
    if (sub === undefined && !word.startsWith("-")) {
      sub = DENO_SUBCOMMANDS.has(word) ? word : "run";
      if (sub === "eval" || sub === "repl" || sub === "x") {
        return _eval(state, base, `${base} ${sub} runs code that is not a local file`);
      }
      if (sub === "task") {
        return _pseudo(state, SCRIPT_COMMAND, `${base} task runs shell commands from the config`);
      }
      if (sub !== "run" || word === "run") continue;
    }
    if (word === "-") return _eval(state, base, `${base} reads its program from standard input`);
    if (REMOTE_SPECIFIER.test(word)) {
      return _eval(state, base, `${base} is given the remote module ${_show(word)}`);
    }
  }
  if (sub === undefined) _eval(state, base, `${base} without a subcommand starts a REPL`);
}

function _awk(state: State, words: readonly string[], _frame: Frame, base: string): void {
  for (const word of words.slice(1)) {
    if (_isDyn(word)) {
      _dynamic(state, `${base} argument ${_show(word)} is expanded at run time`);
      return;
    }
    if (/system|getline|\|/.test(word)) {
      return _eval(state, base, `${base} program may run commands (system, getline or a pipe)`);
    }
    if (/^-(?:l|-load)/.test(word)) {
      return _dynamic(state, `${base} ${word} loads a shared library`);
    }
  }
}

/** A sed address: a line number, `$`, or a `/regex/`. */
const SED_ADDRESS = String.raw`(?:[0-9$]+|\/(?:\\.|[^/\\])*\/)`;
/** The GNU sed `e` command, after optional addresses and `!`. */
const SED_E_COMMAND = new RegExp(
  String.raw`(?:^|[;{}\n])\s*${SED_ADDRESS}?(?:\s*,\s*${SED_ADDRESS})?\s*!?\s*e(?:\s|;|}|$)`,
  "m",
);
const SED_S_COMMAND = /s([^\\\n\s])(?:\\.|(?!\1)[^\\\n])*\1(?:\\.|(?!\1)[^\\\n])*\1([a-zA-Z0-9]*)/g;

function _sed(state: State, words: readonly string[], _frame: Frame, base: string): void {
  if (words.includes("--sandbox")) return;
  const scripts: string[] = [];
  let explicit = false;
  const fromFile = () => _eval(state, base, `${base} reads its script from a file`);
  for (let i = 1; i < words.length; i++) {
    const word = words[i];
    if (_isDyn(word)) {
      _dynamic(state, `${base} argument ${_show(word)} is expanded at run time`);
      return;
    }
    if (word === "--") break;
    if (word === "--expression" || word.startsWith("--expression=")) {
      scripts.push(word.includes("=") ? word.slice(13) : words[++i] ?? "");
      explicit = true;
    } else if (word === "--file" || word.startsWith("--file=")) {
      return fromFile();
    } else if (word.startsWith("--")) {
      if (word === "--line-length") i++;
    } else if (word.startsWith("-") && word.length > 1) {
      for (let j = 1; j < word.length; j++) {
        const c = word[j];
        const rest = word.slice(j + 1);
        if (c === "e") {
          scripts.push(rest !== "" ? rest : words[++i] ?? "");
          explicit = true;
          break;
        }
        if (c === "f") return fromFile();
        if (c === "l") {
          if (rest === "") i++;
          break;
        }
        if (c === "i") break; // -i[SUFFIX]
      }
    } else if (!explicit) {
      scripts.push(word);
      explicit = true;
    }
  }
  for (const script of scripts) {
    const flags = [...script.matchAll(SED_S_COMMAND)].some((m) => m[2].includes("e"));
    if (flags || SED_E_COMMAND.test(script)) {
      return _eval(state, base, `${base} script uses the e command, which runs a shell command`);
    }
  }
}

// ---------------------------------------------------------------------------
// Other programs with options that run commands

function _tar(state: State, words: readonly string[], frame: Frame): void {
  const exec = ["--to-command", "--use-compress-program", "--info-script", "--new-volume-script"];
  const remote = ["--rsh-command", "--rmt-command"];
  for (let i = 1; i < words.length; i++) {
    const word = words[i];
    if (_isDyn(word)) {
      _dynamic(state, `tar argument ${_show(word)} is expanded at run time`);
      continue;
    }
    const eq = word.indexOf("=");
    const name = eq < 0 ? word : word.slice(0, eq);
    const value = () => (eq < 0 ? words[++i] ?? "" : word.slice(eq + 1));
    if (exec.includes(name) || remote.includes(name)) {
      _analyzeShellString(state, value(), _inner(frame, `tar ${name}`), `tar ${name}`);
    } else if (name === "--checkpoint-action") {
      const action = value();
      if (action.startsWith("exec=")) {
        _analyzeShellString(state, action.slice(5), _inner(frame, "tar"), "tar");
      }
    } else if (!word.startsWith("--") && (i === 1 || word.startsWith("-")) && /[IF]/.test(word)) {
      _dynamic(state, "tar -I/-F runs a program named in its arguments");
    }
  }
}

function _rsync(state: State, words: readonly string[], frame: Frame): void {
  for (let i = 1; i < words.length; i++) {
    const word = words[i];
    if (_isDyn(word)) {
      _dynamic(state, `rsync argument ${_show(word)} is expanded at run time`);
      continue;
    }
    const eq = word.indexOf("=");
    const name = eq < 0 ? word : word.slice(0, eq);
    if (name === "--rsh" || name === "--rsync-path") {
      const value = eq < 0 ? words[++i] ?? "" : word.slice(eq + 1);
      _analyzeShellString(state, value, _inner(frame, `rsync ${name}`), `rsync ${name}`);
    } else if (/^-[a-zA-Z]*e/.test(word) && !word.startsWith("--")) {
      const at = word.indexOf("e");
      const value = at + 1 < word.length ? word.slice(at + 1) : words[++i] ?? "";
      _analyzeShellString(state, value, _inner(frame, "rsync -e"), "rsync -e");
    }
  }
}

function _zip(state: State, words: readonly string[], frame: Frame): void {
  for (let i = 1; i < words.length; i++) {
    if (words[i] === "-TT" || words[i] === "--unzip-command") {
      _analyzeShellString(state, words[++i] ?? "", _inner(frame, "zip -TT"), "zip -TT");
    } else if (_isDyn(words[i])) {
      _dynamic(state, `zip argument ${_show(words[i])} is expanded at run time`);
    }
  }
}

const SSH_COMMAND_OPTIONS =
  /^\s*(proxycommand|localcommand|knownhostscommand|match)\s*[=\s]\s*(.*)$/i;

/** Option letters of ssh, scp and sftp that take a value. */
const SSH_VALUE_LETTERS = "BbcDEeFIiJLlmOoPpQRSWw";

function _ssh(state: State, words: readonly string[], frame: Frame, base: string): void {
  for (let i = 1; i < words.length; i++) {
    const word = words[i];
    if (_isDyn(word)) {
      _dynamic(state, `${base} argument ${_show(word)} is expanded at run time`);
      continue;
    }
    if (!word.startsWith("-") || word.startsWith("--")) continue;
    for (let j = 1; j < word.length; j++) {
      const c = word[j];
      if (!SSH_VALUE_LETTERS.includes(c)) continue;
      const value = j + 1 < word.length ? word.slice(j + 1) : words[++i] ?? "";
      if (c === "o") {
        const match = SSH_COMMAND_OPTIONS.exec(value);
        if (match) {
          const key = match[1].toLowerCase();
          if (key === "match") _dynamic(state, `${base} -o Match may run a command`);
          else _analyzeShellString(state, match[2], _inner(frame, `${base} ${key}`), key);
        }
      } else if (c === "F") {
        _dynamic(state, `${base} -F reads a config file that may run commands`);
      } else if (c === "S" && base !== "ssh") {
        _analyzeArgv(state, [value], _inner(frame, `${base} -S`));
      } else if (c === "D" && base !== "ssh") {
        _analyzeArgv(state, [value], _inner(frame, `${base} -D`));
      }
      break;
    }
  }
}

function _man(state: State, words: readonly string[], frame: Frame): void {
  for (let i = 1; i < words.length; i++) {
    const word = words[i];
    if (_isDyn(word)) {
      _dynamic(state, `man argument ${_show(word)} is expanded at run time`);
      continue;
    }
    let value: string | undefined;
    if (word === "-P" || word === "--pager") value = words[++i];
    else if (word.startsWith("--pager=") || word.startsWith("--html=")) {
      value = word.slice(word.indexOf("=") + 1);
    } else if (/^-[PH]./.test(word)) value = word.slice(2);
    if (value !== undefined) _analyzeShellString(state, value, _inner(frame, "man"), "man");
  }
}

function _vim(state: State, words: readonly string[], _frame: Frame, base: string): void {
  for (const word of words.slice(1)) {
    if (_isDyn(word) || /^(?:-c|-S|-u|--cmd|\+.)/.test(word)) {
      return _dynamic(state, `${base} may run editor commands given on its command line`);
    }
  }
}

/** Programs that run other commands in ways this module does not parse. */
function _runner(state: State, _words: readonly string[], _frame: Frame, base: string): void {
  _dynamic(state, `${base} runs commands that this analysis does not parse`);
}

// ---------------------------------------------------------------------------
// Git

const GIT_SAFE_KEY = new RegExp(
  "^(?:" + [
    "user\\.(?:name|email|signingkey)",
    "author\\.(?:name|email)",
    "committer\\.(?:name|email)",
    "color\\.[a-z.-]+",
    "core\\.(?:quotepath|autocrlf|eol|safecrlf|filemode|ignorecase|abbrev|longpaths|" +
    "precomposeunicode|compression|bigfilethreshold|symlinks|whitespace|commentchar|commentstring)",
    "init\\.defaultbranch",
    "advice\\.[a-z]+",
    "safe\\.directory",
    "commit\\.(?:gpgsign|verbose|cleanup|status)",
    "tag\\.(?:gpgsign|sort)",
    "log\\.(?:date|decorate|showsignature|follow|abbrevcommit|mailmap)",
    "format\\.pretty",
    "pull\\.(?:rebase|ff)",
    "push\\.(?:default|autosetupremote|followtags)",
    "merge\\.(?:ff|conflictstyle|log|stat)",
    "rebase\\.(?:autostash|autosquash|stat)",
    "fetch\\.(?:prune|prunetags|parallel)",
    "status\\.(?:short|branch|showuntrackedfiles)",
    "column\\.ui",
    "i18n\\.[a-z]+",
    "gc\\.auto[a-z]*",
    "maintenance\\.auto",
    "protocol\\.version",
    "diff\\.(?:renames|algorithm|colormoved|mnemonicprefix|noprefix|context|" +
    "interhunkcontext|statgraphwidth|submodule|ignoresubmodules|relative|indentheuristic)",
    "branch\\.(?:sort|autosetupmerge|autosetuprebase)",
    "blame\\.[a-z]+",
    "grep\\.(?:linenumber|patterntype|extendedregexp|column|fullname)",
    "rerere\\.enabled",
    "feature\\.manyfiles",
    "index\\.version",
    "pack\\.threads",
    "http\\.version",
    "credential\\.interactive",
    "clone\\.defaultremotename",
    "checkout\\.defaultremote",
  ].join("|") + ")$",
  "i",
);

/** Keys whose value is (or names) a command: the value is analyzed too. */
const GIT_COMMAND_KEY = new RegExp(
  String.raw`(?:^alias\.|command$|pager|editor$|askpass$|fsmonitor$|external$|textconv$|` +
    String.raw`driver$|\.cmd$|\.clean$|\.smudge$|\.process$|helper$|program$)`,
  "i",
);

function _gitConfig(state: State, key: string, value: string | undefined, frame: Frame): void {
  if (GIT_SAFE_KEY.test(key)) return;
  _pseudo(state, GIT_CONFIG_EXEC, `git setting ${_show(key)} can make git run another program`);
  if (value === undefined || !GIT_COMMAND_KEY.test(key)) return;
  const isAlias = /^alias\./i.test(key);
  if (isAlias && !value.startsWith("!")) return;
  const script = value.startsWith("!") ? value.slice(1) : value;
  _analyzeShellString(state, script, _inner(frame, `git setting ${key}`), `git ${key}`);
}

function _gitPair(text: string): [string, string | undefined] {
  const eq = text.indexOf("=");
  return eq < 0 ? [text, undefined] : [text.slice(0, eq), text.slice(eq + 1)];
}

const GIT_VALUE_OPTIONS = [
  "-C",
  "--git-dir",
  "--work-tree",
  "--namespace",
  "--super-prefix",
  "--attr-source",
  "--list-cmds",
];

const GIT_FLAGS = [
  "-p",
  "-P",
  "--paginate",
  "--no-pager",
  "--bare",
  "--no-replace-objects",
  "--no-lazy-fetch",
  "--no-optional-locks",
  "--no-advice",
  "--literal-pathspecs",
  "--glob-pathspecs",
  "--noglob-pathspecs",
  "--icase-pathspecs",
];

/** Subcommands whose arguments can make git run a program. */
const GIT_SENSITIVE = new Set([
  "config",
  "submodule",
  "rebase",
  "bisect",
  "filter-branch",
  "difftool",
  "mergetool",
  "clone",
  "init",
  "fetch",
  "pull",
  "ls-remote",
  "archive",
  "push",
  "send-pack",
  "fetch-pack",
  "grep",
  "help",
]);

function _git(state: State, words: readonly string[], frame: Frame): void {
  let i = 1;
  for (; i < words.length; i++) {
    const word = words[i];
    if (_isDyn(word)) {
      _dynamic(state, `git option ${_show(word)} is expanded at run time`);
      return;
    }
    if (word === "-c") {
      const [key, value] = _gitPair(words[++i] ?? "");
      _gitConfig(state, key, value, frame);
    } else if (word === "--config-env" || word.startsWith("--config-env=")) {
      const text = word === "--config-env" ? words[++i] ?? "" : word.slice(13);
      _gitConfig(state, _gitPair(text)[0], undefined, frame);
    } else if (word === "--exec-path") {
      return;
    } else if (word.startsWith("--exec-path=")) {
      _pseudo(state, GIT_CONFIG_EXEC, "git --exec-path= chooses where git finds its programs");
    } else if (GIT_VALUE_OPTIONS.includes(word)) {
      i++;
    } else if (GIT_VALUE_OPTIONS.some((o) => o.startsWith("--") && word.startsWith(`${o}=`))) {
      continue;
    } else if (
      ["-h", "--help", "--version", "-v", "--html-path", "--man-path", "--info-path"]
        .includes(word)
    ) {
      return;
    } else if (GIT_FLAGS.includes(word)) {
      continue;
    } else if (word.startsWith("-")) {
      _dynamic(state, `git has an option this analysis does not know: ${_show(word)}`);
    } else {
      break;
    }
  }
  const sub = words[i];
  if (sub === undefined) return;
  const args = words.slice(i + 1);
  if (args.some((w) => /(?:^|=)ext::/.test(w))) {
    _pseudo(state, GIT_CONFIG_EXEC, "the git ext:: transport runs a command");
  }
  if (GIT_SENSITIVE.has(sub) && args.some(_isDyn)) {
    _dynamic(state, `git ${sub} arguments are expanded at run time`);
  }
  const shell = (script: string, via: string) =>
    _analyzeShellString(state, script, _inner(frame, via), via);
  const optional = ["-O", "--open-files-in-pager"];
  const valueOf = (k: number, name: string): [string, number] => {
    const word = args[k];
    if (word === name) return optional.includes(name) ? ["", k] : [args[k + 1] ?? "", k + 1];
    if (word.startsWith(`${name}=`)) return [word.slice(name.length + 1), k];
    return [word.slice(name.length), k]; // attached short value
  };
  switch (sub) {
    case "config":
      return _gitConfigCommand(state, args, frame);
    case "submodule": {
      const at = args.indexOf("foreach");
      if (at < 0) return;
      const rest = args.slice(at + 1);
      while (rest.length && ["--recursive", "-q", "--quiet"].includes(rest[0])) rest.shift();
      return shell(rest.join(" "), "git submodule foreach");
    }
    case "bisect":
      if (args[0] === "run") _analyzeArgv(state, args.slice(1), _inner(frame, "git bisect run"));
      return;
    case "help":
      if (args.some((w) => w === "-w" || w === "--web" || w === "-i" || w === "--info")) {
        _pseudo(state, GIT_CONFIG_EXEC, "git help --web runs a browser");
      }
      return;
    case "instaweb":
    case "web--browse":
      return _pseudo(state, GIT_CONFIG_EXEC, `git ${sub} runs a web server or browser`);
  }
  const execOptions: Record<string, readonly string[]> = {
    rebase: ["-x", "--exec"],
    "filter-branch": [
      "--setup",
      "--env-filter",
      "--tree-filter",
      "--index-filter",
      "--parent-filter",
      "--msg-filter",
      "--commit-filter",
      "--tag-name-filter",
    ],
    difftool: ["-x", "--extcmd"],
    grep: ["-O", "--open-files-in-pager"],
    clone: ["-u", "--upload-pack"],
    fetch: ["--upload-pack"],
    pull: ["--upload-pack"],
    "ls-remote": ["--upload-pack", "--exec"],
    archive: ["--exec"],
    push: ["--receive-pack", "--exec"],
    "send-pack": ["--receive-pack", "--exec"],
    "fetch-pack": ["--upload-pack", "--exec"],
  };
  const names = execOptions[sub] ?? [];
  for (let k = 0; k < args.length; k++) {
    const word = args[k];
    if (word === "--") break;
    if (/^--template(?:=|$)/.test(word)) {
      _pseudo(state, GIT_CONFIG_EXEC, "git --template copies hooks from a template directory");
      continue;
    }
    if ((sub === "clone") && (word === "-c" || /^--config(?:=|$)/.test(word))) {
      const [text, next] = word === "-c" || word === "--config"
        ? [args[k + 1] ?? "", k + 1]
        : [word.slice(9), k];
      const [key, value] = _gitPair(text);
      _gitConfig(state, key, value, frame);
      k = next;
      continue;
    }
    const name = names.find((n) =>
      word === n || word.startsWith(`${n}=`) || (!n.startsWith("--") && word.startsWith(n))
    );
    if (name === undefined) continue;
    const [value, next] = valueOf(k, name);
    k = next;
    if (value === "" && optional.includes(name)) continue; // the configured pager
    shell(value, `git ${sub} ${name}`);
  }
}

const GIT_CONFIG_READS = new Set([
  "--get",
  "--get-all",
  "--get-regexp",
  "--get-urlmatch",
  "--get-color",
  "--get-colorbool",
  "--list",
  "-l",
  "--unset",
  "--unset-all",
  "--remove-section",
  "--rename-section",
]);

function _gitConfigCommand(state: State, args: readonly string[], frame: Frame): void {
  const positional: string[] = [];
  let reads = false;
  for (let k = 0; k < args.length; k++) {
    const word = args[k];
    if (word === "-e" || word === "--edit") {
      _pseudo(state, GIT_CONFIG_EXEC, "git config --edit runs an editor");
      return;
    }
    if (["-f", "--file", "--blob", "--type", "--default", "--comment", "--url"].includes(word)) {
      k++;
    } else if (GIT_CONFIG_READS.has(word)) {
      reads = true;
    } else if (!word.startsWith("-")) {
      positional.push(word);
    }
  }
  let key: string | undefined;
  let value: string | undefined;
  if (positional[0] === "edit") {
    _pseudo(state, GIT_CONFIG_EXEC, "git config edit runs an editor");
    return;
  }
  if (positional[0] === "set") [key, value] = [positional[1], positional[2]];
  else if (["get", "list", "unset", "remove-section", "rename-section"].includes(positional[0])) {
    return;
  } else if (!reads && positional.length >= 2) [key, value] = [positional[0], positional[1]];
  if (key !== undefined) _gitConfig(state, key, value, frame);
}

// ---------------------------------------------------------------------------
// The handler table

const HANDLERS = new Map<string, Handler>([
  ["env", _env],
  ["xargs", _xargs],
  ["find", _find],
  ["git", _git],
  ["sudo", _sudo],
  [
    "nice",
    _simpleWrapper({
      shortValue: "n",
      digits: true,
      longValue: ["--adjustment"],
      longFlags: ["--help", "--version"],
    }),
  ],
  ["nohup", _simpleWrapper({ longFlags: ["--help", "--version"] })],
  [
    "timeout",
    _simpleWrapper({
      shortValue: "sk",
      shortFlags: "vfp",
      longValue: ["--signal", "--kill-after"],
      longFlags: ["--preserve-status", "--foreground", "--verbose", "--help", "--version"],
    }, 1),
  ],
  [
    "time",
    _simpleWrapper({
      shortValue: "fo",
      shortFlags: "apvqV",
      longValue: ["--format", "--output"],
      longFlags: ["--append", "--portability", "--verbose", "--quiet", "--help", "--version"],
    }),
  ],
  [
    "stdbuf",
    _simpleWrapper({
      shortValue: "ioe",
      longValue: ["--input", "--output", "--error"],
      longFlags: ["--help", "--version"],
    }),
  ],
  [
    "setsid",
    _simpleWrapper({
      shortFlags: "cfwhV",
      longFlags: ["--ctty", "--fork", "--wait", "--help", "--version"],
    }),
  ],
  ["chroot", _chroot],
  ["busybox", _busybox],
  ["command", _command],
  ["exec", _simpleWrapper({ shortValue: "a", shortFlags: "cl" })],
  ["builtin", _simpleWrapper({})],
  ...["bash", "sh", "dash", "ash", "ksh", "ksh93", "mksh", "lksh", "oksh", "pdksh", "rbash"]
    .map((name) => [name, _shell] as [string, Handler]),
  ["zsh", _shell],
  ["yash", _shell],
  ["posh", _shell],
  ["deno", _deno],
  ["dx", (state, _words, _frame, base) => _eval(state, base, "dx runs a remote package")],
  ...["awk", "gawk", "mawk", "nawk"].map((name) => [name, _awk] as [string, Handler]),
  ["sed", _sed],
  ["gsed", _sed],
  ["tar", _tar],
  ["gtar", _tar],
  ["rsync", _rsync],
  ["zip", _zip],
  ["man", _man],
  ...["ssh", "scp", "sftp"].map((name) => [name, _ssh] as [string, Handler]),
  ...["vi", "vim", "nvim", "view", "ex", "gvim", "vimdiff"]
    .map((name) => [name, _vim] as [string, Handler]),
  ...[
    "doas",
    "su",
    "runuser",
    "pkexec",
    "ionice",
    "taskset",
    "chrt",
    "flock",
    "unshare",
    "nsenter",
    "strace",
    "ltrace",
    "valgrind",
    "watch",
    "script",
    "sshpass",
    "torsocks",
    "proxychains",
    "proxychains4",
    "fakeroot",
    "faketime",
    "unbuffer",
    "rlwrap",
    "xvfb-run",
    "dbus-run-session",
    "setpriv",
    "prlimit",
    "firejail",
    "bwrap",
    "systemd-run",
    "parallel",
    "gdb",
    "expect",
    "tclsh",
    "wish",
    "lua",
    "luajit",
    "php",
    "pwsh",
    "powershell",
    "fish",
    "csh",
    "tcsh",
    "nu",
    "elvish",
    "xonsh",
    "at",
    "batch",
    "npx",
    "bunx",
    "bun",
    "pnpx",
    "uvx",
    "pipx",
    "osascript",
  ].map((name) => [name, _runner] as [string, Handler]),
]);

// ---------------------------------------------------------------------------
// Shell strings

interface ShellWord {
  text: string;
  /** Its value is only known at run time (expansion, substitution, glob, tilde). */
  dyn: boolean;
  /** A leading `NAME=` outside quotes: the assigned name. */
  assigns?: string;
  /** Any part was quoted or escaped (so it is not a reserved word). */
  quoted: boolean;
}

const KEYWORDS = new Set([
  "!",
  "{",
  "}",
  "if",
  "then",
  "else",
  "elif",
  "fi",
  "do",
  "done",
  "while",
  "until",
  "esac",
  "in",
  "coproc",
]);

/** Builtins that run nothing and reach nothing beyond the shell itself. */
const HARMLESS_BUILTINS = new Set([
  ":",
  "true",
  "false",
  "cd",
  "pwd",
  "echo",
  "printf",
  "test",
  "[",
  "set",
  "unset",
  "shift",
  "exit",
  "return",
  "break",
  "continue",
  "read",
  "let",
  "wait",
  "shopt",
  "getopts",
  "type",
  "umask",
  "ulimit",
  "pushd",
  "popd",
  "dirs",
  "times",
  "jobs",
]);

const DECLARATIONS = new Set(["export", "declare", "typeset", "local", "readonly"]);

const CD_WORD = /(?:^|[^\w-])(?:cd|pushd|popd)(?:[^\w-]|$)/;

/**
 * Bash evaluates arithmetic on the *values* of variables, and an array
 * subscript inside such a value may hold a command substitution
 * (`x='a[$(cmd)]'; (( x ))`). So arithmetic that reads a variable, and a
 * subscript that is not a plain number, count as dynamic.
 */
const ARITHMETIC_WHY = "bash arithmetic on variable values can run commands hidden in them";
/** A `[...]` subscript with a name, expansion or substitution inside. */
const VARIABLE_SUBSCRIPT = /\[[^\]]*[A-Za-z_$`][^\]]*\]/;

function _analyzeShellString(state: State, script: string, frame: Frame, what: string): void {
  if (frame.depth > MAX_DEPTH) {
    _dynamic(state, `commands nest deeper than ${MAX_DEPTH} levels`);
    return;
  }
  if (/\/dev\/(?:tcp|udp)\//.test(script)) {
    _dynamic(state, `${what} opens a network connection through /dev/tcp or /dev/udp`);
  }
  const inner: Frame = { ...frame, cdSeen: frame.cdSeen || CD_WORD.test(script) };
  const parser = new _ShellParser(state, script, inner, what);
  parser.parseList(undefined);
  if (parser.pos < script.length) {
    _dynamic(state, `${what} has an unbalanced ")"`);
    const rest = new _ShellParser(state, script.slice(parser.pos + 1), inner, what);
    rest.parseList(undefined);
  }
}

/** Runs one simple command of a shell string through the analysis. */
function _simpleCommand(state: State, words: ShellWord[], frame: Frame): void {
  let i = 0;
  for (; i < words.length; i++) {
    const word = words[i];
    if (word.assigns !== undefined) {
      _checkAssignment(state, word.assigns, "an assignment");
      if (VARIABLE_SUBSCRIPT.test(word.text.slice(0, word.text.indexOf("=")))) {
        _dynamic(state, ARITHMETIC_WHY);
      }
      continue;
    }
    if (word.quoted || word.dyn) break;
    const text = word.text;
    if (text === "[[") {
      const test = words.slice(i + 1).map((w) => w.text).join(" ");
      if (/(?:^|\s)-(?:eq|ne|lt|le|gt|ge|v)(?:\s|$)/.test(test)) _dynamic(state, ARITHMETIC_WHY);
      return;
    }
    if (text === "for" || text === "select") return;
    if (text === "case") {
      _dynamic(state, "case statements are not analyzed");
      return;
    }
    if (text === "function") {
      i++;
      continue;
    }
    if (text === "time") {
      if (words[i + 1]?.text === "-p") i++;
      continue;
    }
    if (!KEYWORDS.has(text)) break;
  }
  const rest = words.slice(i);
  if (rest.length === 0) return;
  const argv = rest.map((w) => (w.dyn ? DYN + w.text : w.text));
  const head = rest[0];
  const name = head.dyn ? undefined : head.text;
  const args = argv.slice(1);
  switch (name) {
    case "eval":
      return _dynamic(state, "eval runs a string built at run time");
    case "source":
    case ".":
      return _pseudo(state, SCRIPT_COMMAND, `${name} runs the commands of a file`);
    case "alias":
      return _dynamic(state, "aliases change what names run");
    case "exec":
      if (args.length) {
        _dynamic(state, "exec in a shell string replaces the shell or its file descriptors");
      }
      return HANDLERS.get("exec")!(state, argv, frame, "exec");
    case "command":
      return _command(state, argv, frame);
    case "builtin":
      return _analyzeArgv(state, args, frame);
    case "trap":
      if (args[0] !== undefined && !args[0].startsWith("-")) {
        if (_isDyn(args[0])) return _dynamic(state, "trap runs a string built at run time");
        _analyzeShellString(state, args[0], _inner(frame, "trap"), "trap");
      }
      return;
    case "hash":
    case "enable":
    case "bind":
    case "mapfile":
    case "readarray":
    case "complete":
    case "compgen":
      if (args.some((a) => /^-[a-zA-Z]*[pfxC]/.test(a) || _isDyn(a))) {
        _dynamic(state, `${name} with these options can make names run other programs`);
      }
      return;
    case "fc":
      return _dynamic(state, "fc runs commands from the history");
    case "let":
      return _dynamic(state, ARITHMETIC_WHY);
  }
  if (args.some((arg) => VARIABLE_SUBSCRIPT.test(arg))) _dynamic(state, ARITHMETIC_WHY);
  if (name !== undefined && DECLARATIONS.has(name)) {
    if (args.some((arg) => /^-[a-zA-Z]*i/.test(arg))) _dynamic(state, ARITHMETIC_WHY);
    for (const arg of args) {
      const match = /^([A-Za-z_][A-Za-z0-9_]*)/.exec(arg.replaceAll(DYN, ""));
      if (match) _checkAssignment(state, match[1], name);
    }
    return;
  }
  if (name !== undefined && HARMLESS_BUILTINS.has(name)) return;
  _analyzeArgv(state, argv, frame);
}

/**
 * A conservative parser of POSIX/bash shell syntax, just deep enough to
 * find every simple command: quoting, escapes, expansions, command and
 * process substitution, arithmetic, redirections, lists, pipelines,
 * subshells and groups. Simple commands are analyzed as they end.
 */
class _ShellParser {
  pos = 0;
  #nesting = 0;
  #state: State;
  #text: string;
  #frame: Frame;
  #what: string;

  constructor(state: State, text: string, frame: Frame, what: string) {
    this.#state = state;
    this.#text = text;
    this.#frame = frame;
    this.#what = what;
  }

  /**
   * Counts one more level of nested substitution. Past the limit the rest
   * of the string is skipped (and reported dynamic) instead of recursing.
   */
  #deeper(): boolean {
    if (this.#nesting < MAX_NESTING) return true;
    _dynamic(this.#state, `${this.#what} nests substitutions more than ${MAX_NESTING} deep`);
    this.pos = this.#text.length;
    return false;
  }

  /** Parses until `terminator` (`)` of a `$(`) at depth 0, or the end. */
  parseList(terminator: ")" | undefined): void {
    if (terminator !== undefined) {
      if (!this.#deeper()) return;
      this.#nesting++;
      try {
        this.#parseList(terminator);
      } finally {
        this.#nesting--;
      }
      return;
    }
    this.#parseList(undefined);
  }

  #parseList(terminator: ")" | undefined): void {
    const s = this.#text;
    let words: ShellWord[] = [];
    let depth = 0;
    let testMode = false;
    const end = () => {
      if (words.length) _simpleCommand(this.#state, words, this.#frame);
      words = [];
      testMode = false;
    };
    while (this.pos < s.length) {
      const c = s[this.pos];
      if (c === " " || c === "\t" || c === "\r") {
        this.pos++;
        continue;
      }
      if (c === "\\" && s[this.pos + 1] === "\n") {
        this.pos += 2;
        continue;
      }
      if (c === "#") {
        while (this.pos < s.length && s[this.pos] !== "\n") this.pos++;
        continue;
      }
      if (testMode && "&|<>()".includes(c)) {
        this.pos++;
        continue;
      }
      if (c === "\n" || c === ";" || c === "|") {
        end();
        this.pos++;
        continue;
      }
      if (c === "&") {
        if (s[this.pos + 1] === ">") {
          this.pos++;
          this.#redirect();
          continue;
        }
        end();
        this.pos++;
        continue;
      }
      if (c === "(") {
        end();
        if (s[this.pos + 1] === "(") {
          this.pos += 2;
          this.#arithmetic();
          continue;
        }
        depth++;
        this.pos++;
        continue;
      }
      if (c === ")") {
        end();
        if (depth === 0 && terminator === ")") {
          this.pos++;
          return;
        }
        if (depth === 0) return; // unbalanced: the caller reports it
        depth--;
        this.pos++;
        continue;
      }
      if (c === "<" || c === ">") {
        if (s[this.pos + 1] === "(") {
          this.pos += 2;
          this.parseList(")");
          words.push({ text: "/dev/fd/63", dyn: true, quoted: false });
          continue;
        }
        this.#redirect();
        continue;
      }
      const word = this.#word();
      if (word === undefined) continue;
      const next = s[this.pos];
      if (
        (next === "<" || next === ">") && !word.quoted &&
        /^(?:[0-9]+|\{[A-Za-z_]\w*\})$/.test(word.text)
      ) {
        continue; // a file descriptor number before a redirection
      }
      if (!word.quoted && !word.dyn && word.text === "[[" && words.length === 0) testMode = true;
      if (testMode && !word.quoted && word.text === "]]") testMode = false;
      words.push(word);
    }
    end();
    if (terminator === ")") _dynamic(this.#state, `${this.#what} has an unterminated "$("`);
  }

  #redirect(): void {
    const s = this.#text;
    const start = this.pos;
    if (s.startsWith("<<<", start)) this.pos += 3;
    else if (s.startsWith("<<", start)) {
      _dynamic(this.#state, `${this.#what} uses a here-document, which is not analyzed`);
      this.pos += s[start + 2] === "-" ? 3 : 2;
    } else {
      this.pos++;
      while (this.pos < s.length && "<>&|".includes(s[this.pos]) && this.pos - start < 3) {
        this.pos++;
      }
    }
    while (s[this.pos] === " " || s[this.pos] === "\t") this.pos++;
    const target = this.#word();
    if (target && /\/dev\/(?:tcp|udp)\//.test(target.text)) {
      _dynamic(this.#state, `${this.#what} redirects to a network connection`);
    }
  }

  /** Reads one word; undefined when nothing but a line continuation was there. */
  #word(): ShellWord | undefined {
    const s = this.#text;
    let text = "";
    let dyn = false;
    let quoted = false;
    let unquoted = ""; // literal characters outside quotes, for glob and brace checks
    let firstQuote = -1;
    const startPos = this.pos;
    const markQuote = () => {
      quoted = true;
      if (firstQuote < 0) firstQuote = text.length;
    };
    while (this.pos < s.length) {
      const c = s[this.pos];
      if (" \t\r\n;&|<>()".includes(c)) break;
      if (c === "\\") {
        if (s[this.pos + 1] === "\n") {
          this.pos += 2;
          continue;
        }
        markQuote();
        if (this.pos + 1 < s.length) text += s[this.pos + 1];
        this.pos += 2;
        continue;
      }
      if (c === "'") {
        markQuote();
        const close = s.indexOf("'", this.pos + 1);
        if (close < 0) {
          _dynamic(this.#state, `${this.#what} has an unterminated quote`);
          text += s.slice(this.pos + 1);
          this.pos = s.length;
          break;
        }
        text += s.slice(this.pos + 1, close);
        this.pos = close + 1;
        continue;
      }
      if (c === '"') {
        markQuote();
        this.pos++;
        const part = this.#doubleQuoted();
        text += part.text;
        dyn ||= part.dyn;
        continue;
      }
      if (c === "$") {
        const expansion = this.#dollar();
        if (expansion === undefined) {
          text += "$";
          unquoted += "$";
          this.pos++;
          continue;
        }
        markQuote();
        text += expansion;
        dyn = true;
        continue;
      }
      if (c === "`") {
        this.pos++;
        this.#backtick();
        markQuote();
        text += "`…`";
        dyn = true;
        continue;
      }
      if (c === "~" && this.pos === startPos) dyn = true;
      text += c;
      unquoted += c;
      this.pos++;
    }
    if (this.pos === startPos || (text === "" && !quoted && !dyn)) return undefined;
    if (/[*?]|\[[^\]]*\]|\{[^}]*(?:,|\.\.)[^}]*\}/.test(unquoted)) dyn = true;
    const word: ShellWord = { text, dyn, quoted };
    const assign = /^([A-Za-z_][A-Za-z0-9_]*)(?:\[[^\]]*\])?\+?=/.exec(text);
    if (assign && (firstQuote < 0 || firstQuote >= assign[0].length)) word.assigns = assign[1];
    return word;
  }

  /** After the opening `"`: the text up to the closing one. */
  #doubleQuoted(): { text: string; dyn: boolean } {
    if (!this.#deeper()) return { text: "", dyn: true };
    this.#nesting++;
    try {
      return this.#doubleQuotedBody();
    } finally {
      this.#nesting--;
    }
  }

  #doubleQuotedBody(): { text: string; dyn: boolean } {
    const s = this.#text;
    let text = "";
    let dyn = false;
    while (this.pos < s.length) {
      const c = s[this.pos];
      if (c === '"') {
        this.pos++;
        return { text, dyn };
      }
      if (c === "\\") {
        const next = s[this.pos + 1];
        if (next === "\n") {
          this.pos += 2;
          continue;
        }
        if (next !== undefined && '$`"\\'.includes(next)) {
          text += next;
          this.pos += 2;
          continue;
        }
        text += c;
        this.pos++;
        continue;
      }
      if (c === "$") {
        const expansion = this.#dollar();
        if (expansion !== undefined) {
          text += expansion;
          dyn = true;
          continue;
        }
      }
      if (c === "`") {
        this.pos++;
        this.#backtick();
        text += "`…`";
        dyn = true;
        continue;
      }
      text += c;
      this.pos++;
    }
    _dynamic(this.#state, `${this.#what} has an unterminated quote`);
    return { text, dyn: true };
  }

  /**
   * At a `$`: consumes an expansion and returns a placeholder for its
   * text, or undefined when the `$` is literal.
   */
  #dollar(): string | undefined {
    const s = this.#text;
    const next = s[this.pos + 1];
    if (next === "(") {
      if (s[this.pos + 2] === "(") {
        this.pos += 3;
        this.#arithmetic();
        return "$((…))";
      }
      this.pos += 2;
      this.parseList(")");
      return "$(…)";
    }
    if (next === "{") {
      this.pos += 2;
      this.#braced();
      return "${…}";
    }
    if (next === "'") {
      // ANSI-C quoting: not decoded, so its value counts as unknown.
      let k = this.pos + 2;
      while (k < s.length && s[k] !== "'") k += s[k] === "\\" ? 2 : 1;
      this.pos = Math.min(k + 1, s.length);
      return "$'…'";
    }
    if (next === '"') {
      this.pos += 2;
      this.#doubleQuoted();
      return '$"…"';
    }
    if (next === "[") {
      this.pos += 2;
      const start = this.pos;
      while (this.pos < s.length && s[this.pos] !== "]") this.pos++;
      if (/[A-Za-z_$`]/.test(s.slice(start, this.pos))) _dynamic(this.#state, ARITHMETIC_WHY);
      this.pos++;
      return "$[…]";
    }
    const name = /^(?:[A-Za-z_][A-Za-z0-9_]*|[0-9@*#?$!-])/.exec(s.slice(this.pos + 1));
    if (!name) return undefined;
    this.pos += 1 + name[0].length;
    return `$${name[0]}`;
  }

  /** After `${`: up to the matching `}`, analyzing substitutions inside. */
  #braced(): void {
    if (!this.#deeper()) return;
    this.#nesting++;
    try {
      this.#bracedBody();
    } finally {
      this.#nesting--;
    }
  }

  #bracedBody(): void {
    const s = this.#text;
    const start = this.pos;
    let depth = 0;
    while (this.pos < s.length) {
      const c = s[this.pos];
      if (c === "}" && depth === 0) {
        if (VARIABLE_SUBSCRIPT.test(s.slice(start, this.pos))) {
          _dynamic(this.#state, ARITHMETIC_WHY);
        }
        this.pos++;
        return;
      }
      if (c === "\\") {
        this.pos += 2;
        continue;
      }
      if (c === "'") {
        const close = s.indexOf("'", this.pos + 1);
        this.pos = close < 0 ? s.length : close + 1;
        continue;
      }
      if (c === '"') {
        this.pos++;
        this.#doubleQuoted();
        continue;
      }
      if (c === "$" && this.#dollar() !== undefined) continue;
      if (c === "`") {
        this.pos++;
        this.#backtick();
        continue;
      }
      if (c === "{") depth++;
      if (c === "}") depth--;
      this.pos++;
    }
    _dynamic(this.#state, `${this.#what} has an unterminated "\${"`);
  }

  /** After `$((` or `((`: up to the matching `))`, analyzing substitutions inside. */
  #arithmetic(): void {
    if (!this.#deeper()) return;
    this.#nesting++;
    try {
      this.#arithmeticBody();
    } finally {
      this.#nesting--;
    }
  }

  #arithmeticBody(): void {
    const s = this.#text;
    const start = this.pos;
    let depth = 0;
    while (this.pos < s.length) {
      const c = s[this.pos];
      if (c === ")" && depth === 0) {
        if (s[this.pos + 1] !== ")") {
          _dynamic(this.#state, `${this.#what} has "((" that may be nested subshells`);
        }
        if (/[A-Za-z_$`]/.test(s.slice(start, this.pos))) _dynamic(this.#state, ARITHMETIC_WHY);
        this.pos += s[this.pos + 1] === ")" ? 2 : 1;
        return;
      }
      if (c === "$" && this.#dollar() !== undefined) continue;
      if (c === "`") {
        this.pos++;
        this.#backtick();
        continue;
      }
      if (c === "(") depth++;
      if (c === ")") depth--;
      this.pos++;
    }
    _dynamic(this.#state, `${this.#what} has an unterminated "(("`);
  }

  /** After an opening backtick: analyzes the command string up to the closing one. */
  #backtick(): void {
    const s = this.#text;
    let inner = "";
    while (this.pos < s.length && s[this.pos] !== "`") {
      if (s[this.pos] === "\\" && "$`\\".includes(s[this.pos + 1] ?? "")) {
        inner += s[this.pos + 1];
        this.pos += 2;
        continue;
      }
      inner += s[this.pos++];
    }
    if (this.pos >= s.length) _dynamic(this.#state, `${this.#what} has an unterminated backtick`);
    this.pos++;
    _analyzeShellString(this.#state, inner, _inner(this.#frame, "`…`"), this.#what);
  }
}
