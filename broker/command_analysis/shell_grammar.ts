/**
 * The strict shell grammar of a command analysis (see
 * `../command_analysis.ts`, "Shell scripts"): a script is read into the
 * words of its simple commands only when bash and dash read it alike and
 * every word is literal.
 *
 * @module
 */

import { printable, show, type Verdict } from "./state.ts";

/** Characters that stand for themselves outside quotes in bash and dash. */
const SHELL_LITERAL = /^[A-Za-z0-9_\-./:,+=%@!^\]]$/;
const SHELL_DEVICES = new Set(["/dev/null", "/dev/stdout", "/dev/stderr", "/dev/stdin"]);

/**
 * Reads a script in the strict grammar of the module documentation into the
 * words of its simple commands, or says why it is not accepted.
 */
export function parseScript(s: string): string[][] | string {
  if (!printable(s)) return "has a control or non-printable character (a line break or tab too)";
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
      if (text.startsWith("-")) return `has ${op} followed by ${show(text)}`;
    }
    if (text === "") return "redirects to an empty name";
    if (text.startsWith("/dev/") && !SHELL_DEVICES.has(text)) {
      return `redirects to the device ${show(text)}`;
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
        if (word.length > 1) return `has ${show(word)} before a redirection`;
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
        if (s[j] === "$" || s[j] === "`") return `has ${show(s[j])} inside double quotes`;
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
      return `has ${show(c)} outside quotes, which this analysis does not accept`;
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
