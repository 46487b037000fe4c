/**
 * GNU `find` for a command analysis (see `../../command_analysis.ts`):
 * every word of its expression classified, and the actions that run
 * commands refused.
 *
 * @module
 */

import { type Analyzer, printable, show } from "../state.ts";

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
export const analyzeFind: Analyzer = (_state, words) => {
  let i = 1;
  while (["-H", "-L", "-P"].includes(words[i])) i++;
  while (i < words.length && !words[i].startsWith("-") && !FIND_FLAGS.has(words[i])) i++;
  for (; i < words.length; i++) {
    const word = words[i];
    if (!printable(word)) return `has an argument with a non-printable character: ${show(word)}`;
    if (FIND_FLAGS.has(word)) continue;
    if (FIND_VALUES.has(word) || /^-newer[aBcmt][aBcmt]$/.test(word)) {
      i++;
      continue;
    }
    if (["-exec", "-execdir", "-ok", "-okdir"].includes(word)) return `${word} runs a command`;
    return `has an expression word this analysis does not know: ${show(word)}`;
  }
  return undefined;
};
