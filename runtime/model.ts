/**
 * The model provider interface that the `model.complete` syscall calls
 * (SPEC section 11), and the deterministic scripted model that tests and
 * demos use in place of a real one.
 *
 * The scripted model is replay-safe: its reply depends only on the request,
 * never on how often it was called, so a process that re-runs from its
 * journal gets the same turns again.
 *
 * @module
 */

import { z } from "zod";
import { SyscallError } from "../broker/errors.ts";

/** A tool call the model asks for. */
export interface ToolCall {
  /** Id that the tool result message refers back to. */
  id: string;
  /** The tool's name. */
  name: string;
  /** The tool's arguments. */
  arguments: Record<string, unknown>;
}

/** One message of a conversation with the model. */
export type Message =
  | { role: "system" | "user"; content: string }
  | { role: "assistant"; content?: string; tool_calls?: ToolCall[] }
  | { role: "tool"; tool_call_id: string; name: string; content: string };

/** A tool as the model sees it. */
export interface ToolSpec {
  /** The tool's name. */
  name: string;
  /** What the tool does. */
  description: string;
  /** JSON Schema of the tool's arguments. */
  input: Record<string, unknown>;
}

/** What a provider is asked to complete. */
export interface ModelRequest {
  /** The model as `provider/name`, e.g. `openai/gpt-4o-mini`. */
  model: string;
  /** Tag of the calling process's image. */
  image: string;
  /** The calling process. */
  pid: number;
  /** The conversation so far. */
  messages: Message[];
  /** The tools the model may call. */
  tools: ToolSpec[];
  /**
   * Most tokens the reply may use. A provider must not produce more: the
   * kernel reserved only this much of the process's token budget for it.
   */
  maxTokens?: number;
}

/** A provider's answer. */
export interface ModelReply {
  /** The assistant message. */
  message: { role: "assistant"; content?: string; tool_calls?: ToolCall[] };
  /** True when the model means to end the process. */
  exit?: boolean;
  /** Tokens the call consumed, charged to the process's budget. */
  usage: { inputTokens: number; outputTokens: number };
}

/** A source of completions: a real model API or a scripted stand-in. */
export interface ModelProvider {
  /** The provider's name, e.g. `openai` or `scripted`. */
  readonly name: string;
  /** Completes a conversation. */
  complete(
    request: ModelRequest,
    options?: { signal?: AbortSignal },
  ): Promise<ModelReply>;
}

/** A tool call in a script; `id` defaults to `call_<turn>_<i>`. */
export interface ScriptToolCall {
  /** Fixed id of the call. */
  id?: string;
  /** The tool's name. */
  name: string;
  /** The tool's arguments (default `{}`). */
  arguments?: Record<string, unknown>;
}

/** One scripted assistant turn. */
export interface ScriptTurn {
  /** The assistant's text. */
  content?: string;
  /** The tools the assistant calls. */
  tool_calls?: ScriptToolCall[];
  /** True to end the process after this turn. */
  exit?: boolean;
}

/** A scripted model's script: default turns, and turns per image tag. */
export interface Script {
  /** Turns for processes whose image has no entry in `images`. */
  turns: ScriptTurn[];
  /** Turns per image tag (`name@version`), e.g. for spawned children. */
  images?: Record<string, { turns: ScriptTurn[] }>;
}

const ScriptToolCallSchema = z.object({
  id: z.string().min(1).optional(),
  name: z.string().min(1),
  arguments: z.record(z.string(), z.unknown()).optional(),
}).strict();

const ScriptTurnSchema = z.object({
  content: z.string().optional(),
  tool_calls: z.array(ScriptToolCallSchema).optional(),
  exit: z.boolean().optional(),
}).strict();

/**
 * The zod schema of a {@link Script}; unknown keys are refused at every
 * level, so a misspelt `tool_call` is an error rather than a silent no-op.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ScriptSchema } from "./model.ts";
 * const parsed = ScriptSchema.safeParse({ turns: [{ content: "hi", exit: true }] });
 * assert(parsed.success);
 * ```
 */
export const ScriptSchema: z.ZodType<Script> = z.object({
  turns: z.array(ScriptTurnSchema),
  images: z.record(
    z.string(),
    z.object({ turns: z.array(ScriptTurnSchema) }).strict(),
  ).optional(),
}).strict();

/** The text a reply says when its script has no turn left. */
const SCRIPT_ENDED = "(script ended)";

/**
 * The rough token count of a text: one token per four characters, rounded
 * up.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { estimateTokens } from "./model.ts";
 * assert(estimateTokens("hello") === 2);
 * ```
 */
export function estimateTokens(text: string): number {
  return Math.ceil(text.length / 4);
}

/**
 * An upper bound of the input tokens of a request for a tokenizer whose
 * every token covers at least one byte: the UTF-8 bytes of the text the
 * model reads (contents, tool calls, tool results, tool specs), plus room
 * for the framing of each message and tool. The kernel reserves this much
 * of a token budget before calling the model.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { maxInputTokens } from "./model.ts";
 * const bound = maxInputTokens([{ role: "user", content: "hello" }], []);
 * assert(bound >= 5);
 * ```
 */
export function maxInputTokens(messages: readonly Message[], tools: readonly ToolSpec[]): number {
  let bytes = REPLY_PRIMING_TOKENS;
  for (const message of messages) bytes += messageTokenBound(message);
  for (const tool of tools) {
    bytes += MESSAGE_FRAMING_TOKENS + _ENCODER.encode(JSON.stringify(tool)).length;
  }
  return bytes;
}

/**
 * The share of one message in {@link maxInputTokens}: its framing and the
 * UTF-8 bytes of its text. A conversation's bound is the sum of its
 * messages' shares, so it can be kept as a running total.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { maxInputTokens, messageTokenBound } from "./model.ts";
 * const message = { role: "user" as const, content: "hello" };
 * assert(maxInputTokens([message], []) === maxInputTokens([], []) + messageTokenBound(message));
 * ```
 */
export function messageTokenBound(message: Message): number {
  let bytes = MESSAGE_FRAMING_TOKENS + _ENCODER.encode(_textOf(message)).length;
  if (message.role === "tool") {
    bytes += _ENCODER.encode(message.tool_call_id + message.name).length;
  }
  return bytes;
}

const _ENCODER = new TextEncoder();

/** Tokens a chat format spends around each message or tool beyond its text. */
const MESSAGE_FRAMING_TOKENS = 8;
/** Tokens a chat format spends to start the reply. */
const REPLY_PRIMING_TOKENS = 8;

/**
 * A model that replays a script. The turn it answers with is the number of
 * assistant messages already in the request, so the same request always
 * gets the same reply; the turns are those of `script.images[request.image]`
 * when present, else `script.turns`. Past the last turn it answers
 * `"(script ended)"` with `exit: true`. A reply longer than the request's
 * `maxTokens` is cut to that many tokens of text, without its tool calls.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ScriptedModel } from "./model.ts";
 * const model = new ScriptedModel({
 *   turns: [
 *     { tool_calls: [{ name: "read_file", arguments: { path: "README.md" } }] },
 *     { content: "The repository is a demo.", exit: true },
 *   ],
 * });
 * const request = {
 *   model: "scripted/default",
 *   image: "demo@1.0.0",
 *   pid: 1,
 *   messages: [{ role: "user" as const, content: "Summarize" }],
 *   tools: [],
 * };
 * const reply = await model.complete(request);
 * assert(reply.message.tool_calls?.[0].id === "call_0_0");
 * ```
 */
export class ScriptedModel implements ModelProvider {
  /** Always `scripted`. */
  readonly name = "scripted";
  #script: Script;
  /** The text length of each message seen (messages are not changed once sent). */
  #chars = new WeakMap<Message, number>();

  /** Creates a model over a validated copy of `script`. */
  constructor(script: Script) {
    const parsed = ScriptSchema.safeParse(script);
    if (!parsed.success) {
      throw new SyscallError(
        "EINVAL",
        `Cannot create scripted model: ${_firstIssue(parsed.error)}`,
      );
    }
    this.#script = structuredClone(parsed.data);
  }

  /**
   * Loads a script from a JSON file. Fails with one line naming the file
   * and the first problem, e.g.
   * `Cannot load model script "x.json": turns.0.tool_calls: ...`.
   */
  static async fromFile(path: string): Promise<ScriptedModel> {
    const action = `Cannot load model script ${JSON.stringify(path)}`;
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) {
        throw new SyscallError("ENOENT", `${action}: file not found`);
      }
      throw new SyscallError(
        "EINVAL",
        `${action}: ${error instanceof Error ? error.message : String(error)}`,
      );
    }
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch (error) {
      throw new SyscallError(
        "EINVAL",
        `${action}: invalid JSON: ${(error as SyntaxError).message}`,
      );
    }
    const parsed = ScriptSchema.safeParse(data);
    if (!parsed.success) {
      throw new SyscallError(
        "EINVAL",
        `${action}: ${_firstIssue(parsed.error)}`,
      );
    }
    return new ScriptedModel(parsed.data);
  }

  /** Answers with the scripted turn the conversation has reached. */
  complete(request: ModelRequest): Promise<ModelReply> {
    const images = this.#script.images;
    const turns = images && Object.hasOwn(images, request.image)
      ? images[request.image].turns
      : this.#script.turns;
    let index = 0;
    let inputChars = 0;
    for (const message of request.messages) {
      if (message.role === "assistant") index++;
      // A conversation's messages come back call after call: each is measured once.
      let chars = this.#chars.get(message);
      if (chars === undefined) this.#chars.set(message, chars = _textOf(message).length);
      inputChars += chars;
    }
    const reply: ModelReply = index < turns.length ? _replyOf(turns[index], index) : {
      message: { role: "assistant", content: SCRIPT_ENDED },
      exit: true,
      usage: { inputTokens: 0, outputTokens: 0 },
    };
    const limit = request.maxTokens;
    if (limit !== undefined && estimateTokens(_textOf(reply.message)) > limit) {
      // Like a real model that reaches its limit: the text stops there, no tool call is complete.
      reply.message = {
        role: "assistant",
        content: (reply.message.content ?? "").slice(0, limit * 4),
      };
    }
    reply.usage = {
      inputTokens: Math.ceil(inputChars / 4),
      outputTokens: estimateTokens(_textOf(reply.message)),
    };
    return Promise.resolve(reply);
  }
}

/** The reply for one turn, with default tool call ids filled in. */
function _replyOf(turn: ScriptTurn, index: number): ModelReply {
  const message: ModelReply["message"] = { role: "assistant" };
  if (turn.content !== undefined) message.content = turn.content;
  if (turn.tool_calls?.length) {
    message.tool_calls = turn.tool_calls.map((call, i) => ({
      id: call.id ?? `call_${index}_${i}`,
      name: call.name,
      arguments: structuredClone(call.arguments ?? {}),
    }));
  }
  const reply: ModelReply = {
    message,
    usage: { inputTokens: 0, outputTokens: 0 },
  };
  if (turn.exit !== undefined) reply.exit = turn.exit;
  return reply;
}

/** The text of a message that counts towards its tokens. */
function _textOf(message: Message): string {
  let text = message.content ?? "";
  if (message.role === "assistant") {
    for (const call of message.tool_calls ?? []) {
      text += call.name + JSON.stringify(call.arguments);
    }
  }
  return text;
}

/** The first issue of a zod error as `path: message`. */
function _firstIssue(error: z.ZodError): string {
  const issue = error.issues[0];
  const where = issue.path.map(String).join(".");
  return where ? `${where}: ${issue.message}` : issue.message;
}
