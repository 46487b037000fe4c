/**
 * `git` for a command analysis (see `../../command_analysis.ts`): the
 * global options that only choose the repository, then a subcommand from
 * the table of those known to run nothing else, with its options.
 *
 * @module
 */

import {
  gnuProgram,
  hasOption,
  optionModel,
  type OptionSpec,
  type ParsedArgs,
  parseOptions,
} from "../options.ts";
import { type Analyzer, show, type Verdict } from "../state.ts";

const GIT_GLOBAL = optionModel({
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
    gnuProgram({
      flags: "vsbz",
      optional: "uM",
      long: "verbose short branch show-stash ahead-behind no-ahead-behind porcelain[=] long " +
        "null untracked-files[=] ignored[=] ignore-submodules[=] column[=] no-column renames " +
        "no-renames find-renames[=]",
    }),
  ],
  ["log", gnuProgram(GIT_LOG, _gitLog)],
  ["show", gnuProgram(GIT_LOG, _gitLog)],
  ["diff", gnuProgram(GIT_LOG, _gitLog)],
  [
    "rev-parse",
    gnuProgram({
      flags: "q",
      long: "show-toplevel show-prefix show-cdup git-dir git-common-dir absolute-git-dir " +
        "is-inside-work-tree is-inside-git-dir is-bare-repository is-shallow-repository " +
        "abbrev-ref[=] short[=] verify quiet symbolic symbolic-full-name all branches[=] " +
        "tags[=] remotes[=] show-superproject-working-tree git-path=",
    }),
  ],
  [
    "ls-files",
    gnuProgram({
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
    gnuProgram({
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
    gnuProgram({
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
    gnuProgram(
      {
        flags: "vqrali",
        long: "verbose quiet remotes all list show-current ignore-case contains= no-contains= " +
          "merged= no-merged= points-at= sort= abbrev[=] color[=] no-color column[=] no-column",
      },
      (parsed) =>
        parsed.operands.length === 0 || hasOption(parsed, "-l", "--list")
          ? undefined
          : "branch with a name creates a branch, which runs the reference-transaction hook",
    ),
  ],
  ["version", gnuProgram({ long: "build-options" })],
  [
    "config",
    gnuProgram(
      {
        flags: "lz",
        values: "f",
        long: "get get-all get-regexp list global system local worktree show-origin show-scope " +
          "name-only null file= includes no-includes type= bool int bool-or-int path expiry-date " +
          "default=",
      },
      (parsed) =>
        hasOption(parsed, ...GIT_CONFIG_READS)
          ? undefined
          : "config without --get or --list may write settings that run programs",
    ),
  ],
]);

/** git: global options that only choose the repository, then a known subcommand. */
export const analyzeGit: Analyzer = (state, words, depth) => {
  const global = parseOptions(words, 1, GIT_GLOBAL, true);
  if (typeof global === "string") return global;
  if (words.slice(1, global.stop).includes("--")) return "has -- before its subcommand";
  if (hasOption(global, "--version")) {
    return global.operands.length === 0 ? undefined : "--version with more arguments";
  }
  const sub = words[global.stop];
  if (sub === undefined) return undefined;
  const analyzer = GIT_SUBCOMMANDS.get(sub);
  if (analyzer === undefined) {
    return `${show(sub)} is not a subcommand known to run nothing else (it may be an alias)`;
  }
  const why = analyzer(state, words.slice(global.stop), depth);
  return why === undefined ? undefined : `${sub} ${why}`;
};
