/**
 * A small server that speaks the OpenAI chat completions protocol
 * (`POST /v1/chat/completions`, JSON, non-streaming) on 127.0.0.1, for tests
 * that run the real `openai` client. It answers each request with the next
 * scripted response and records every request it got.
 *
 * @example
 * ```ts ignore
 * import { chatCompletion, startOpenAIServer } from "./_openai_server.ts";
 *
 * await using server = await startOpenAIServer([
 *   { status: 429, headers: { "retry-after-ms": "1" } },
 *   { body: chatCompletion({ content: "hello" }) },
 * ]);
 * // point a client at server.baseURL; server.requests holds what it sent
 * ```
 *
 * @module
 */

/** One scripted answer. */
export interface ScriptedResponse {
  /** HTTP status (default 200). */
  status?: number;
  /**
   * JSON body. Defaults to an OpenAI error body naming the status for
   * non-2xx answers.
   */
  body?: unknown;
  /** Raw body text, sent instead of `body`. */
  text?: string;
  /** Extra response headers, e.g. `retry-after`. */
  headers?: Record<string, string>;
  /** Never answer: hold the request until the server closes. */
  hang?: boolean;
}

/** A scripted answer, or a function that picks one from the request. */
export type ScriptedStep = ScriptedResponse | ((request: RecordedRequest) => ScriptedResponse);

/** A request the server received. */
export interface RecordedRequest {
  /** `performance.now()` when it arrived. */
  at: number;
  /** HTTP method. */
  method: string;
  /** URL path. */
  path: string;
  /** Request headers. */
  headers: Headers;
  /** The parsed JSON body, or `undefined` when it was not JSON. */
  body: Record<string, unknown> | undefined;
}

/** A running server. */
export interface OpenAIServer extends AsyncDisposable {
  /** Base URL to give the client, e.g. `http://127.0.0.1:PORT/v1`. */
  readonly baseURL: string;
  /** Requests to `/v1/chat/completions`, in arrival order. */
  readonly requests: RecordedRequest[];
  /** Releases hanging requests and stops the server. */
  close(): Promise<void>;
}

/** The shape of a reply message for {@link chatCompletion}. */
export interface CompletionSpec {
  /** The assistant's text. */
  content?: string | null;
  /** Tool calls; `arguments` is sent as given when it is a string, else as its JSON. */
  tool_calls?: { id?: string; name: string; arguments: unknown }[];
  /** Token usage; `null` leaves it out of the response. */
  usage?: { prompt_tokens: number; completion_tokens: number } | null;
  /** The model name to report. */
  model?: string;
}

/**
 * Builds a chat completion response body.
 *
 * @example
 * ```ts ignore
 * const body = chatCompletion({ tool_calls: [{ name: "read_file", arguments: { path: "a" } }] });
 * ```
 */
export function chatCompletion(spec: CompletionSpec): Record<string, unknown> {
  const message: Record<string, unknown> = {
    role: "assistant",
    content: spec.content ?? null,
    refusal: null,
  };
  if (spec.tool_calls) {
    message.tool_calls = spec.tool_calls.map((call, i) => ({
      id: call.id ?? `call_srv_${i}`,
      type: "function",
      function: {
        name: call.name,
        arguments: typeof call.arguments === "string"
          ? call.arguments
          : JSON.stringify(call.arguments),
      },
    }));
  }
  const body: Record<string, unknown> = {
    id: "chatcmpl-test",
    object: "chat.completion",
    created: 0,
    model: spec.model ?? "test-model",
    choices: [{
      index: 0,
      message,
      finish_reason: spec.tool_calls ? "tool_calls" : "stop",
      logprobs: null,
    }],
  };
  const usage = spec.usage === undefined ? { prompt_tokens: 11, completion_tokens: 7 } : spec.usage;
  if (usage) body.usage = { ...usage, total_tokens: usage.prompt_tokens + usage.completion_tokens };
  return body;
}

/**
 * Starts a server on 127.0.0.1 (a free port) that answers the n-th chat
 * completion request with `steps[n]`. Past the last step it answers 418 with
 * an error naming the problem (not retried by the provider), so a test that
 * sends more requests than it scripted fails with a clear message.
 *
 * @example
 * ```ts ignore
 * await using server = await startOpenAIServer([{ body: chatCompletion({ content: "hi" }) }]);
 * ```
 */
export async function startOpenAIServer(steps: ScriptedStep[]): Promise<OpenAIServer> {
  const requests: RecordedRequest[] = [];
  const released = Promise.withResolvers<void>();
  const handler = async (request: Request): Promise<Response> => {
    const path = new URL(request.url).pathname;
    if (request.method !== "POST" || path !== "/v1/chat/completions") {
      return _json(404, _errorBody(`No route for ${request.method} ${path}`));
    }
    let body: Record<string, unknown> | undefined;
    try {
      body = await request.json();
    } catch {
      body = undefined;
    }
    const recorded: RecordedRequest = {
      at: performance.now(),
      method: request.method,
      path,
      headers: request.headers,
      body,
    };
    requests.push(recorded);
    const step = steps[requests.length - 1];
    if (step === undefined) {
      return _json(418, _errorBody(`No scripted response left for request ${requests.length}`));
    }
    const response = typeof step === "function" ? step(recorded) : step;
    if (response.hang) {
      await released.promise;
      return _json(503, _errorBody("Released"));
    }
    const status = response.status ?? 200;
    const headers = new Headers(response.headers);
    if (response.text !== undefined) {
      return new Response(response.text, { status, headers });
    }
    const payload = response.body ??
      (status >= 200 && status < 300 ? chatCompletion({}) : _errorBody(`Scripted ${status}`));
    headers.set("content-type", "application/json");
    return new Response(JSON.stringify(payload), { status, headers });
  };
  const ready = Promise.withResolvers<Deno.NetAddr>();
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: (addr) => ready.resolve(addr as Deno.NetAddr),
  }, handler);
  const addr = await ready.promise;
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    released.resolve();
    closing ??= server.shutdown();
    return closing;
  };
  return {
    baseURL: `http://127.0.0.1:${addr.port}/v1`,
    requests,
    close,
    [Symbol.asyncDispose]: close,
  };
}

/**
 * An OpenAI-style error body.
 *
 * @example
 * ```ts ignore
 * const body = openAIError("Rate limit reached");
 * ```
 */
export function openAIError(message: string): Record<string, unknown> {
  return _errorBody(message);
}

function _errorBody(message: string): Record<string, unknown> {
  return { error: { message, type: "test_error", param: null, code: null } };
}

function _json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json" },
  });
}
