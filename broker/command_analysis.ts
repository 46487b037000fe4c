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

import { analyzeArgv } from "./command_analysis/argv.ts";
import { PROGRAMS } from "./command_analysis/programs.ts";
import { analyzeScript } from "./command_analysis/programs/shell.ts";
import { ANY_COMMAND, newState } from "./command_analysis/state.ts";

export { ANY_COMMAND };

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
  const state = newState(options.cwd, PROGRAMS);
  analyzeArgv(state, argv, 0, undefined);
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
  const state = newState(options.cwd, PROGRAMS);
  analyzeScript(state, script, 0, "sh -c");
  return { commands: state.commands, reasons: state.reasons };
}
