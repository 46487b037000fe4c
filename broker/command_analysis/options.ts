/**
 * Option tables of known programs for a command analysis (see
 * `../command_analysis.ts`): a compact text form of each program's options,
 * and a reader that parses an argv as GNU `getopt_long` does, long options
 * matched exactly or by the prefix of exactly one.
 *
 * @module
 */

import { type Analyzer, printable, show, type Verdict } from "./state.ts";

/** What an option does with the words after it. */
export type Arity = "flag" | "value" | "optional" | "runs";

/** The options of a program, in a compact text form. */
export interface OptionSpec {
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

/** An {@link OptionSpec} as lookup tables. */
export interface OptionModel {
  short: Map<string, Arity>;
  long: Map<string, Arity>;
  digits: boolean;
}

/** One option read from an argv. */
export interface ParsedOption {
  /** `-x` or `--long-name`, the long name in full even when abbreviated. */
  name: string;
  value?: string;
}

/** An argv read against an option model. */
export interface ParsedArgs {
  options: ParsedOption[];
  operands: string[];
  /** Index of the first operand when parsing stopped there. */
  stop: number;
}

/** The lookup tables of an {@link OptionSpec}. */
export function optionModel(spec: OptionSpec): OptionModel {
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
export function parseOptions(
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
    if (!printable(word)) return `has an option with a non-printable character: ${show(word)}`;
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

/** Whether `parsed` has one of the options `names`. */
export function hasOption(parsed: ParsedArgs, ...names: string[]): boolean {
  return parsed.options.some((o) => names.includes(o.name));
}

/** A program with GNU options, none of which runs anything unless marked, and an optional check. */
export function gnuProgram(spec: OptionSpec, check?: (parsed: ParsedArgs) => Verdict): Analyzer {
  const model = optionModel(spec);
  return (_state, words) => {
    const parsed = parseOptions(words, 1, model);
    if (typeof parsed === "string") return parsed;
    return check?.(parsed);
  };
}

/** A program whose arguments are all data (`echo`, `true`). */
export const operandsOnly: Analyzer = () => undefined;

/** The long options every GNU program has. */
export const HELP = "help version";
