/**
 * The built-in `libos:agent` program: the tool-calling agent loop. It runs
 * inside the process's Worker like any other program, so every model call
 * and every tool effect is a syscall the broker decides.
 *
 * model → tool calls through the tool table → results → model, until the
 * model calls `exit`, answers without tool calls, or its script says `exit`.
 * A refused tool call becomes an error result for the model and the loop goes
 * on (SPEC section 10). The loop checkpoints after every step, so a resumed
 * agent replays only its last step.
 *
 * Each step costs its new messages, not the history. The host keeps every
 * message exchanged through `model.complete` in the process's transcript,
 * and a reply names the conversation through it there (`transcript: {
 * length, digest }`) when the transcript holds exactly that conversation;
 * the loop's next call then sends that reference and only the tool results
 * after it, and its checkpoint is `{ step, transcript, tail, jit }`, the
 * reference and the messages after it. When the agent resumes, the host
 * gives it back `{ step, messages, transcript, jit }`, the referenced
 * messages (once their digest matches) followed by the tail. When the
 * transcript holds another conversation (a fork's, an exec'd process's, a
 * restored one's), the host refuses the reference with `EINVAL`: the loop
 * sends the whole conversation then, and saves it whole in its checkpoints
 * until a reply names it again.
 *
 * @module
 */

import type { AbiTranscriptRef } from "../../broker/abi.ts";
import type { AgentConfig } from "./cell_protocol.ts";
import type { ModelReply, Sys } from "./libc.ts";
import { BUILTIN_TOOLS, type Tool } from "../../tools/builtin.ts";

type ChatMessage = Parameters<Sys["model"]["complete"]>[0]["messages"][number];

/** Turns the program input into the first user message. */
function userText(input: unknown): string {
  if (input === undefined || input === null) return "Begin.";
  return typeof input === "string" ? input : JSON.stringify(input);
}

function errorResult(error: unknown): { error: { code: string; message: string } } {
  const code = (error as { code?: unknown })?.code;
  return {
    error: {
      code: typeof code === "string" ? code : "EINVAL",
      message: error instanceof Error ? error.message : String(error),
    },
  };
}

/**
 * Runs the agent loop to its end and returns the process result.
 *
 * @example
 * ```ts ignore
 * const result = await runAgent(sys, "Summarize the repository", { tools: ["read_file", "exit"] });
 * ```
 */
export async function runAgent(
  sys: Sys,
  input: unknown,
  config: AgentConfig,
  checkpoint?: unknown,
): Promise<unknown> {
  const table = new Map<string, Tool>();
  for (const name of config.tools) {
    const tool = BUILTIN_TOOLS[name];
    if (tool) table.set(name, tool);
  }
  // JIT tools the process registered (or inherited by fork) join the table.
  const jit = new Map<
    string,
    { name: string; description: string; input: Record<string, never> }
  >();
  const refresh = async () => {
    for (const t of await sys.tool.list()) {
      if (!t.builtin) {
        jit.set(t.name, {
          name: t.name,
          description: t.description,
          input: (t.input ?? {}) as Record<string, never>,
        });
      }
    }
  };
  // A fresh start lists the JIT tools; a resumed one takes them from its
  // checkpoint, so its syscalls match the journal it replays.
  const resumed = checkpoint as {
    jit?: { name: string; description: string; input: Record<string, never> }[];
  } | undefined;
  if (resumed?.jit) { for (const t of resumed.jit) jit.set(t.name, t); }
  else await refresh();
  const specs = () => [
    ...[...table.values()].map(({ name, description, input }) => ({
      name,
      description,
      input: input as unknown as Record<string, never>,
    })),
    ...jit.values(),
  ];
  let tools = specs();
  const saved = checkpoint as
    | { messages?: ChatMessage[]; step?: number; transcript?: AbiTranscriptRef }
    | undefined;
  const messages: ChatMessage[] = saved?.messages ? [...saved.messages] : [];
  if (!saved?.messages) {
    if (config.system) messages.push({ role: "system", content: config.system });
    messages.push({ role: "user", content: userText(input) });
  }
  // The first `host.length` of `messages` are the process's transcript, when the host said so.
  let host = saved?.messages ? saved.transcript : undefined;

  const maxSteps = config.maxSteps ?? 1000;
  for (let step = saved?.step ?? 0; step < maxSteps; step++) {
    let reply: ModelReply | undefined;
    if (host) {
      try {
        reply = await sys.model.complete({
          transcript: host,
          messages: messages.slice(host.length),
          tools,
        });
      } catch (error) {
        // The transcript holds another conversation: this one goes whole.
        if ((error as { code?: unknown })?.code !== "EINVAL") throw error;
      }
    }
    reply ??= await sys.model.complete({ messages, tools });
    messages.push(reply.message);
    host = reply.transcript?.length === messages.length ? reply.transcript : undefined;
    const calls = reply.message.tool_calls ?? [];
    for (const call of calls) {
      const tool = table.get(call.name);
      let result: unknown;
      const malformed = "_raw" in call.arguments;
      if (!tool && jit.has(call.name) && !malformed) {
        try {
          result = { result: await sys.tool.call(call.name, call.arguments) };
        } catch (error) {
          result = errorResult(error);
        }
      } else if (!tool) {
        result = {
          error: { code: "ENOSYS", message: `Unknown tool "${call.name}"` },
        };
      } else if (malformed) {
        result = {
          error: {
            code: "EINVAL",
            message: `The arguments for "${call.name}" are not a JSON object`,
          },
        };
      } else {
        try {
          result = await tool.run(call.arguments, sys);
        } catch (error) {
          result = errorResult(error);
        }
      }
      if (call.name === "register_tool" && tool && !(result as { error?: unknown })?.error) {
        await refresh();
        tools = specs();
      }
      messages.push({
        role: "tool",
        tool_call_id: call.id,
        name: call.name,
        content: JSON.stringify(result ?? null),
      });
      if (call.name === "exit" && tool && !malformed) return call.arguments.result ?? null;
    }
    if (calls.length === 0 || reply.exit) return reply.message.content ?? null;
    // Replay starts here after a restart or a wait: one step, not the whole run.
    const state = host
      ? {
        step: step + 1,
        transcript: host,
        tail: messages.slice(host.length),
        jit: [...jit.values()],
      }
      : { step: step + 1, messages, jit: [...jit.values()] };
    if (JSON.stringify(state).length < 512_000) await sys.ckpt.save(state);
  }
  throw new Error(`Agent loop stopped after ${maxSteps} steps`);
}
