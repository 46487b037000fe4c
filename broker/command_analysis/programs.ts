/**
 * The table of programs known to run nothing else, for a command analysis
 * (see `../command_analysis.ts`): the GNU programs whose options are all
 * data, each with its option table, and the programs with an analyzer of
 * their own under `programs/`.
 *
 * @module
 */

import { gnuProgram, HELP, operandsOnly } from "./options.ts";
import { analyzeEnv } from "./programs/env.ts";
import { analyzeFind } from "./programs/find.ts";
import { analyzeGit } from "./programs/git.ts";
import { analyzeSed } from "./programs/sed.ts";
import { analyzeShell } from "./programs/shell.ts";
import type { Analyzer } from "./state.ts";

/** The programs known to run nothing else, by name, each with its analyzer. */
export const PROGRAMS: ReadonlyMap<string, Analyzer> = new Map<string, Analyzer>([
  [
    "cat",
    gnuProgram({
      flags: "AbeEnstTuv",
      long: "show-all number-nonblank show-ends number squeeze-blank show-tabs show-nonprinting " +
        HELP,
    }),
  ],
  [
    "head",
    gnuProgram({
      flags: "qvz",
      values: "cn",
      digits: true,
      long: `bytes= lines= quiet silent verbose zero-terminated ${HELP}`,
    }),
  ],
  [
    "tail",
    gnuProgram({
      flags: "fFqvz",
      values: "cns",
      digits: true,
      long: "bytes= follow[=] lines= max-unchanged-stats= pid= quiet silent retry " +
        `sleep-interval= verbose zero-terminated ${HELP}`,
    }),
  ],
  [
    "wc",
    gnuProgram({
      flags: "cmlLw",
      long: `bytes chars lines files0-from= max-line-length words ${HELP}`,
    }),
  ],
  [
    "ls",
    gnuProgram({
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
    gnuProgram({
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
    gnuProgram({
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
    gnuProgram({
      flags: "cdDiuz",
      values: "fsw",
      long: "count repeated all-repeated[=] skip-fields= group[=] ignore-case skip-chars= " +
        `unique zero-terminated check-chars= ${HELP}`,
    }),
  ],
  [
    "cut",
    gnuProgram({
      flags: "nsz",
      values: "bcdf",
      long: "bytes= characters= delimiter= fields= complement only-delimited " +
        `output-delimiter= zero-terminated ${HELP}`,
    }),
  ],
  ["tee", gnuProgram({ flags: "aip", long: `append ignore-interrupts output-error[=] ${HELP}` })],
  [
    "tr",
    gnuProgram({ flags: "cCdst", long: `complement delete squeeze-repeats truncate-set1 ${HELP}` }),
  ],
  [
    "diff",
    gnuProgram({
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
    gnuProgram({ flags: "pvZ", values: "m", long: `mode= parents verbose context[=] ${HELP}` }),
  ],
  [
    "touch",
    gnuProgram({
      flags: "acfhm",
      values: "drt",
      long: `no-create date= no-dereference reference= time= ${HELP}`,
    }),
  ],
  [
    "rm",
    gnuProgram({
      flags: "fiIrRdv",
      long: "force interactive[=] one-file-system no-preserve-root preserve-root[=] recursive " +
        `dir verbose ${HELP}`,
    }),
  ],
  [
    "cp",
    gnuProgram({
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
    gnuProgram({
      flags: "bfinTuvZ",
      values: "St",
      long: "backup[=] force interactive no-clobber strip-trailing-slashes suffix= " +
        `target-directory= no-target-directory update verbose context ${HELP}`,
    }),
  ],
  ["pwd", gnuProgram({ flags: "LP", long: `logical physical ${HELP}` })],
  ["basename", gnuProgram({ flags: "az", values: "s", long: `multiple suffix= zero ${HELP}` })],
  ["dirname", gnuProgram({ flags: "z", long: `zero ${HELP}` })],
  [
    "uname",
    gnuProgram({
      flags: "asnrvmpio",
      long: "all kernel-name nodename kernel-release kernel-version machine processor " +
        `hardware-platform operating-system ${HELP}`,
    }),
  ],
  ["sleep", gnuProgram({ long: HELP })],
  ["yes", gnuProgram({ long: HELP })],
  ["echo", operandsOnly],
  ["printf", operandsOnly],
  ["true", operandsOnly],
  ["false", operandsOnly],
  ["sed", analyzeSed],
  ["find", analyzeFind],
  ["env", analyzeEnv],
  ["git", analyzeGit],
  ["bash", analyzeShell],
  ["sh", analyzeShell],
  ["dash", analyzeShell],
]);
