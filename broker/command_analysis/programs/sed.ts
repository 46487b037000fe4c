/**
 * `sed` for a command analysis (see `../../command_analysis.ts`): its
 * options, and a strict subset of GNU sed's script grammar with only the
 * commands that edit text.
 *
 * @module
 */

import { gnuProgram, hasOption, HELP, type OptionSpec, type ParsedArgs } from "../options.ts";
import { type Analyzer, printable, show, type Verdict } from "../state.ts";

const SED_OPTIONS: OptionSpec = {
  flags: "nrEsuz",
  values: "efl",
  optional: "i",
  long: "quiet silent debug expression= file= follow-symlinks in-place[=] line-length= posix " +
    `regexp-extended separate sandbox unbuffered null-data zero-terminated ${HELP}`,
};

function _sed(parsed: ParsedArgs): Verdict {
  if (hasOption(parsed, "-f", "--file")) {
    return "reads its script from a file this analysis cannot see";
  }
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
  if (!printable(script.replaceAll("\n", ""))) {
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
      : `script has text after a command at ${show(s.slice(p, p + 20))}`;
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
      return `script uses ${show(command)}, which is not a command that only edits text`;
    }
    if (why !== undefined) return why;
  }
  return blocks === 0 ? undefined : "script leaves a block open";
}

/** After `s` or `y` at `p`: the index after the command's arguments, or why not accepted. */
function _sedReplace(s: string, p: number, command: "s" | "y"): number | string {
  const delimiter = s[p];
  if (delimiter === undefined || !SED_DELIMITERS.includes(delimiter)) {
    return `script uses ${show(delimiter ?? "")} as a delimiter, which this analysis does not read`;
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
        show(delimiter ?? "")
      } as a delimiter, which this analysis does not read`;
    }
    q = _sedRegex(s, p + 2, delimiter);
  } else return p;
  if (typeof q === "string") return q;
  while (s[q] === "I" || s[q] === "M") q++;
  return q;
}

/** `sed` with options from its table and a script that only edits text. */
export const analyzeSed: Analyzer = gnuProgram(SED_OPTIONS, _sed);
