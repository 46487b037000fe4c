/**
 * The OpenAI model provider (SPEC section 11): chat completions through the
 * official `openai` client, against OpenAI or any OpenAI-compatible base URL
 * (Ollama, vLLM, llama.cpp).
 *
 * - Configuration is the client's: `apiKey` and `baseURL` default to
 *   `OPENAI_API_KEY` and `OPENAI_BASE_URL`. A missing key fails the first
 *   call (`EINVAL`), not the construction, so a kernel can be configured with
 *   this provider before the key is at hand.
 * - Messages map one to one onto chat messages; tools become function tools
 *   whose `parameters` are the tool's JSON Schema.
 * - Tool call arguments are parsed from the model's JSON. Arguments that are
 *   not a JSON object are never guessed at: the call is kept (so every call
 *   id still gets its tool result) with `arguments: { _raw: TEXT }`, the
 *   model's text capped at {@link MAX_RAW_ARGUMENT_CHARS} characters. No tool
 *   argument takes a value from it, so a tool with required arguments refuses
 *   the call with `EINVAL` and the model sees that error on its next turn.
 * - Failed requests are retried with exponential backoff and jitter on 429,
 *   5xx, connection errors and timeouts, honouring `retry-after-ms` and
 *   `retry-after` (capped at one minute), at most `maxRetries` times
 *   (default 3). Other 4xx answers are not retried.
 * - Errors are {@link SyscallError}s on one line: `ETIMEDOUT` for a timeout,
 *   `EINTR` when the caller's signal aborted the call, `EINVAL` otherwise.
 *   The API key, bearer tokens and `sk-` keys are redacted from every
 *   message.
 *
 * @module
 */

import OpenAI from "openai";
import { SyscallError } from "../broker/errors.ts";
import {
  estimateTokens,
  type Message,
  type ModelProvider,
  type ModelReply,
  type ModelRequest,
  type ToolCall,
  type ToolSpec,
} from "./model.ts";

/** Options of an {@link OpenAIModel}. */
export interface OpenAIModelOptions {
  /** Model name used when a request names no `openai/` model. */
  model: string;
  /** API key (default: `OPENAI_API_KEY`). */
  apiKey?: string;
  /** Base URL (default: `OPENAI_BASE_URL`, else the client's, `https://api.openai.com/v1`). */
  baseURL?: string;
  /** Retries after the first attempt (default 3). */
  maxRetries?: number;
  /** Timeout of one attempt, in milliseconds (default 600000, the client's). */
  timeoutMs?: number;
  /** The `fetch` the client uses (default: the global one). */
  fetch?: typeof fetch;
  /**
   * Backoff between retries: attempt n waits a random time between half and
   * all of `min(maxMs, initialMs * 2^n)` (defaults 500 and 8000).
   */
  backoff?: { initialMs?: number; maxMs?: number };
}

/** Most characters of invalid tool call arguments kept in `_raw`. */
export const MAX_RAW_ARGUMENT_CHARS = 16_384;

const DEFAULT_MAX_RETRIES = 3;
const DEFAULT_TIMEOUT_MS = 600_000;
const DEFAULT_BACKOFF_INITIAL_MS = 500;
const DEFAULT_BACKOFF_MAX_MS = 8_000;
const RETRY_AFTER_CAP_MS = 60_000;
const MAX_ERROR_CHARS = 400;

type ChatMessage = OpenAI.Chat.Completions.ChatCompletionMessageParam;
type ChatTool = OpenAI.Chat.Completions.ChatCompletionTool;
type ChatCompletion = OpenAI.Chat.Completions.ChatCompletion;

/** Why one attempt failed, and whether another may succeed. */
interface Failure {
  code: "ETIMEDOUT" | "EINTR" | "EINVAL";
  detail: string;
  retry: boolean;
  retryAfterMs?: number;
}

/**
 * A {@link ModelProvider} that calls the OpenAI chat completions API.
 *
 * The model is the part after `openai/` of `request.model`; a request for
 * another provider's model (an image that names none gets
 * `scripted/default`) uses the `model` option.
 *
 * @example
 * ```ts ignore
 * import { Kernel } from "./kernel.ts";
 * import { OpenAIModel } from "./openai_model.ts";
 *
 * const kernel = await Kernel.open({
 *   store: ":memory:",
 *   model: new OpenAIModel({ model: "gpt-4o-mini" }),
 * });
 * ```
 */
export class OpenAIModel implements ModelProvider {
  /** Always `openai`. */
  readonly name = "openai";
  #model: string;
  #apiKey: string | undefined;
  #baseURL: string | undefined;
  #maxRetries: number;
  #timeoutMs: number;
  #fetch: typeof fetch | undefined;
  #backoffInitialMs: number;
  #backoffMaxMs: number;
  #client: OpenAI | undefined;
  #clientKey = "";

  /** Creates a provider; reads no environment and opens no connection yet. */
  constructor(options: OpenAIModelOptions) {
    const action = "Cannot create OpenAI model";
    if (typeof options.model !== "string" || options.model.trim() === "") {
      throw new SyscallError("EINVAL", `${action}: the model name is empty`);
    }
    this.#model = options.model;
    this.#apiKey = options.apiKey;
    this.#baseURL = options.baseURL;
    this.#maxRetries = _count(options.maxRetries, DEFAULT_MAX_RETRIES, "maxRetries", action);
    this.#timeoutMs = _positive(options.timeoutMs, DEFAULT_TIMEOUT_MS, "timeoutMs", action);
    this.#backoffInitialMs = _count(
      options.backoff?.initialMs,
      DEFAULT_BACKOFF_INITIAL_MS,
      "backoff.initialMs",
      action,
    );
    this.#backoffMaxMs = _count(
      options.backoff?.maxMs,
      DEFAULT_BACKOFF_MAX_MS,
      "backoff.maxMs",
      action,
    );
    this.#fetch = options.fetch;
  }

  /**
   * Completes a conversation. Fails with a one-line {@link SyscallError}
   * after the retries are spent, at once for an answer that is not worth
   * retrying, and with `EINTR` as soon as `options.signal` aborts.
   */
  async complete(
    request: ModelRequest,
    options: { signal?: AbortSignal } = {},
  ): Promise<ModelReply> {
    const model = this.#modelName(request.model);
    const action = `Cannot call model ${JSON.stringify(`openai/${model}`)}`;
    const apiKey = this.#apiKey ?? _env("OPENAI_API_KEY");
    if (!apiKey) {
      throw new SyscallError("EINVAL", `${action}: OPENAI_API_KEY is not set`);
    }
    const fail = (code: Failure["code"], detail: string): SyscallError =>
      new SyscallError(code, _oneLine(`${action}: ${detail}`, apiKey));
    let client: OpenAI;
    try {
      client = this.#clientFor(apiKey);
    } catch (error) {
      throw fail("EINVAL", _messageOf(error));
    }
    const body: OpenAI.Chat.Completions.ChatCompletionCreateParamsNonStreaming = {
      model,
      messages: request.messages.map(_toChatMessage),
    };
    if (request.tools.length > 0) body.tools = request.tools.map(_toChatTool);
    if (request.maxTokens !== undefined) body.max_completion_tokens = request.maxTokens;
    const signal = options.signal;

    let completion: ChatCompletion;
    for (let attempt = 0;; attempt++) {
      try {
        completion = await client.chat.completions.create(body, {
          signal,
          maxRetries: 0,
          timeout: this.#timeoutMs,
        });
        break;
      } catch (error) {
        const failure = _classify(error, signal, this.#timeoutMs);
        const spent = attempt >= this.#maxRetries;
        if (!failure.retry || spent) {
          const after = attempt > 0
            ? ` (after ${attempt} ${attempt === 1 ? "retry" : "retries"})`
            : "";
          throw fail(failure.code, failure.detail + after);
        }
        try {
          await _sleep(failure.retryAfterMs ?? this.#backoff(attempt), signal);
        } catch {
          throw fail("EINTR", "the call was aborted");
        }
      }
    }
    return _replyOf(completion, request, (detail) => fail("EINVAL", detail));
  }

  /** The model a request asks for. */
  #modelName(requested: string): string {
    const prefix = "openai/";
    if (requested.startsWith(prefix) && requested.length > prefix.length) {
      return requested.slice(prefix.length);
    }
    return this.#model;
  }

  /** The client, created on first use and again if the key changed. */
  #clientFor(apiKey: string): OpenAI {
    if (this.#client && this.#clientKey === apiKey) return this.#client;
    this.#client = new OpenAI({
      apiKey,
      baseURL: this.#baseURL ?? _env("OPENAI_BASE_URL"),
      maxRetries: 0,
      timeout: this.#timeoutMs,
      fetch: this.#fetch,
    });
    this.#clientKey = apiKey;
    return this.#client;
  }

  /** Delay before retry `attempt + 1`: exponential, with jitter. */
  #backoff(attempt: number): number {
    const ceiling = Math.min(this.#backoffMaxMs, this.#backoffInitialMs * 2 ** attempt);
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }
}

/** Our message as a chat completions message. */
function _toChatMessage(message: Message): ChatMessage {
  switch (message.role) {
    case "system":
    case "user":
      return { role: message.role, content: message.content };
    case "tool":
      return { role: "tool", tool_call_id: message.tool_call_id, content: message.content };
    case "assistant": {
      const calls = message.tool_calls ?? [];
      if (calls.length === 0) return { role: "assistant", content: message.content ?? "" };
      return {
        role: "assistant",
        content: message.content ?? null,
        tool_calls: calls.map((call) => ({
          id: call.id,
          type: "function" as const,
          function: { name: call.name, arguments: JSON.stringify(call.arguments ?? {}) },
        })),
      };
    }
  }
}

/** Our tool spec as a function tool. */
function _toChatTool(tool: ToolSpec): ChatTool {
  return {
    type: "function",
    function: { name: tool.name, description: tool.description, parameters: tool.input },
  };
}

/** The provider reply for a completion; `invalid` builds the error for a malformed one. */
function _replyOf(
  completion: ChatCompletion,
  request: ModelRequest,
  invalid: (detail: string) => SyscallError,
): ModelReply {
  const choices = (completion as { choices?: unknown })?.choices;
  if (!Array.isArray(choices) || choices.length === 0) {
    throw invalid("the response has no choices");
  }
  const source = (choices[0] as { message?: unknown })?.message as
    | Record<string, unknown>
    | undefined;
  if (!source || typeof source !== "object") {
    throw invalid("the response has no message");
  }
  const message: ModelReply["message"] = { role: "assistant" };
  const content = typeof source.content === "string"
    ? source.content
    : typeof source.refusal === "string"
    ? source.refusal
    : undefined;
  if (content !== undefined) message.content = content;
  const calls: ToolCall[] = [];
  for (const raw of Array.isArray(source.tool_calls) ? source.tool_calls : []) {
    const call = _toolCallOf(raw);
    if (call) calls.push(call);
  }
  if (calls.length > 0) message.tool_calls = calls;

  const usage = (completion as { usage?: Record<string, unknown> | null }).usage;
  const inputTokens = _tokens(usage?.prompt_tokens) ??
    estimateTokens(request.messages.map(_textOf).join("") + JSON.stringify(request.tools));
  const outputTokens = _tokens(usage?.completion_tokens) ?? estimateTokens(_textOf(message));
  return { message, usage: { inputTokens, outputTokens } };
}

/** One tool call of a response, or `undefined` for one that names no function. */
function _toolCallOf(raw: unknown): ToolCall | undefined {
  if (!raw || typeof raw !== "object") return undefined;
  const { id, function: fn } = raw as { id?: unknown; function?: unknown };
  if (!fn || typeof fn !== "object") return undefined;
  const { name, arguments: text } = fn as { name?: unknown; arguments?: unknown };
  if (typeof name !== "string" || name === "") return undefined;
  return {
    id: typeof id === "string" && id !== "" && id.length <= 200
      ? id
      : `call_${crypto.randomUUID()}`,
    name: name.slice(0, 200),
    arguments: _parseArguments(text),
  };
}

/**
 * Tool call arguments from the model's JSON text: an object is taken as it
 * is, an empty text is `{}`, anything else is kept only as `_raw` text.
 */
function _parseArguments(text: unknown): Record<string, unknown> {
  if (text === undefined || text === null) return {};
  if (typeof text !== "string") {
    return { _raw: JSON.stringify(text).slice(0, MAX_RAW_ARGUMENT_CHARS) };
  }
  if (text.trim() === "") return {};
  try {
    const value: unknown = JSON.parse(text);
    if (value && typeof value === "object" && !Array.isArray(value)) {
      return value as Record<string, unknown>;
    }
  } catch {
    // Not JSON: fall through and keep the text.
  }
  return { _raw: text.slice(0, MAX_RAW_ARGUMENT_CHARS) };
}

/** Why an attempt failed. */
function _classify(error: unknown, signal: AbortSignal | undefined, timeoutMs: number): Failure {
  if (signal?.aborted || error instanceof OpenAI.APIUserAbortError) {
    return { code: "EINTR", detail: "the call was aborted", retry: false };
  }
  if (error instanceof OpenAI.APIConnectionTimeoutError) {
    return {
      code: "ETIMEDOUT",
      detail: `no answer within ${timeoutMs} ms`,
      retry: true,
    };
  }
  if (error instanceof OpenAI.APIConnectionError) {
    const cause = (error as { cause?: unknown }).cause;
    const why = cause ? `: ${_messageOf(cause)}` : "";
    return { code: "EINVAL", detail: `connection failed${why}`, retry: true };
  }
  if (error instanceof OpenAI.APIError && typeof error.status === "number") {
    const status = error.status;
    const body = error.error as { message?: unknown } | undefined;
    const said = typeof body?.message === "string"
      ? body.message
      : body
      ? JSON.stringify(body)
      : _bodyText(error.message, status);
    return {
      code: "EINVAL",
      detail: `HTTP ${status}: ${said}`,
      retry: status === 429 || status >= 500,
      retryAfterMs: _retryAfterMs(error.headers),
    };
  }
  return { code: "EINVAL", detail: _messageOf(error), retry: false };
}

/** The delay a server asked for, in milliseconds, capped; `undefined` for none. */
function _retryAfterMs(headers: Headers | undefined): number | undefined {
  if (!headers) return undefined;
  const cap = (ms: number): number | undefined =>
    Number.isFinite(ms) && ms >= 0 ? Math.min(ms, RETRY_AFTER_CAP_MS) : undefined;
  const ms = headers.get("retry-after-ms");
  if (ms !== null && ms.trim() !== "") {
    const value = cap(Number(ms));
    if (value !== undefined) return value;
  }
  const after = headers.get("retry-after");
  if (after === null || after.trim() === "") return undefined;
  const seconds = Number(after);
  if (!Number.isNaN(seconds)) return cap(seconds * 1000);
  const date = Date.parse(after);
  return Number.isNaN(date) ? undefined : cap(Math.max(0, date - Date.now()));
}

/** Waits `ms`; rejects at once when `signal` aborts. */
function _sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * `text` on one line, without the key or anything that looks like a bearer
 * token or an `sk-` key, at most {@link MAX_ERROR_CHARS} characters.
 * Redaction comes before truncation, so no prefix of a secret survives.
 */
function _oneLine(text: string, apiKey: string): string {
  let out = text.split(apiKey).join("[redacted]");
  out = out.replace(/\bBearer\s+\S+/gi, "Bearer [redacted]");
  out = out.replace(/\bsk-[A-Za-z0-9_\-*]{6,}/g, "sk-[redacted]");
  out = out.replace(/\s+/g, " ").trim();
  return out.length > MAX_ERROR_CHARS ? `${out.slice(0, MAX_ERROR_CHARS - 1)}…` : out;
}

/** The text of an error body that was not JSON, from the client's `STATUS TEXT` message. */
function _bodyText(message: string, status: number): string {
  const text = message.startsWith(`${status} `) ? message.slice(`${status} `.length) : message;
  return text === "" || text === "status code (no body)" ? "no error message" : text;
}

function _messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function _env(name: string): string | undefined {
  try {
    return Deno.env.get(name)?.trim() || undefined;
  } catch {
    return undefined;
  }
}

function _tokens(value: unknown): number | undefined {
  return typeof value === "number" && Number.isFinite(value) && value >= 0
    ? Math.round(value)
    : undefined;
}

function _textOf(message: Message): string {
  let text = message.content ?? "";
  if (message.role === "assistant") {
    for (const call of message.tool_calls ?? []) {
      text += call.name + JSON.stringify(call.arguments);
    }
  }
  return text;
}

function _count(value: number | undefined, fallback: number, name: string, action: string): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < 0) {
    throw new SyscallError(
      "EINVAL",
      `${action}: ${name} must be a non-negative integer, got ${value}`,
    );
  }
  return value;
}

function _positive(
  value: number | undefined,
  fallback: number,
  name: string,
  action: string,
): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value <= 0) {
    throw new SyscallError("EINVAL", `${action}: ${name} must be a positive number, got ${value}`);
  }
  return value;
}
