/**
 * The built-in LLM-facing tools (SPEC section 10). Each is a thin wrapper
 * over syscalls: it shapes the model's arguments into one or two `sys` calls
 * and shapes the answer into a JSON result. None carries authority; the
 * broker decides every call.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { BUILTIN_TOOLS } from "./builtin.ts";
 * assert(BUILTIN_TOOLS.read_file.input.required?.includes("path"));
 * ```
 *
 * @module
 */

import type { Sys } from "../runtime/guest/libc.ts";

/** A JSON Schema object describing a tool's arguments. */
export interface ToolInputSchema {
  /** Always `object`: a tool takes one argument object. */
  type: "object";
  /** The JSON Schema of each named argument. */
  properties: Record<string, unknown>;
  /** The names of the arguments that must be present. */
  required?: string[];
  /** Whether arguments not listed in `properties` are accepted. */
  additionalProperties?: boolean;
}

/** A tool module: what the model sees and what runs when it is called. */
export interface Tool {
  /** The name the model calls the tool by. */
  name: string;
  /** What the tool does, as the model reads it. */
  description: string;
  /** The schema of the tool's arguments. */
  input: ToolInputSchema;
  /** The capabilities the tool needs, in text form. */
  manifest: { capabilities: string[] };
  /** Runs the tool with the model's arguments, using the calling process's `sys`. */
  run(args: Record<string, unknown>, sys: Sys): Promise<unknown>;
}

/** Thrown for a tool call whose arguments do not fit the tool's schema. */
export class ToolArgumentError extends Error {
  /** Always `EINVAL`, so the agent loop reports it like a refused syscall. */
  readonly code = "EINVAL";
}

function text(args: Record<string, unknown>, key: string): string {
  const value = args[key];
  if (typeof value !== "string") {
    throw new ToolArgumentError(`Argument "${key}" must be a string`);
  }
  return value;
}

function optionalText(
  args: Record<string, unknown>,
  key: string,
): string | undefined {
  return args[key] === undefined ? undefined : text(args, key);
}

function schema(
  properties: Record<string, unknown>,
  required: string[],
): ToolInputSchema {
  return { type: "object", properties, required, additionalProperties: false };
}

const str = { type: "string" };

function tool(
  name: string,
  description: string,
  input: ToolInputSchema,
  run: Tool["run"],
): Tool {
  return { name, description, input, manifest: { capabilities: [] }, run };
}

/** The built-in tools by name. */
export const BUILTIN_TOOLS: Readonly<Record<string, Tool>> = Object.freeze({
  read_file: tool(
    "read_file",
    "Read a UTF-8 text file.",
    schema({ path: str }, ["path"]),
    async (args, sys) => ({ content: await sys.fs.read(text(args, "path")) }),
  ),
  write_file: tool(
    "write_file",
    "Create or replace a text file, creating missing parent directories.",
    schema({ path: str, content: str }, ["path", "content"]),
    async (args, sys) => {
      const path = text(args, "path");
      const content = text(args, "content");
      try {
        return await sys.fs.write(path, content);
      } catch (error) {
        const parent = path.slice(0, path.lastIndexOf("/"));
        if ((error as { code?: string }).code !== "ENOENT" || !parent) throw error;
        await sys.fs.mkdir(parent, { recursive: true });
        return await sys.fs.write(path, content);
      }
    },
  ),
  delete_file: tool(
    "delete_file",
    "Delete a file.",
    schema({ path: str }, ["path"]),
    async (args, sys) => {
      await sys.fs.remove(text(args, "path"));
      return { deleted: text(args, "path") };
    },
  ),
  list_dir: tool(
    "list_dir",
    "List a directory.",
    schema({ path: str }, ["path"]),
    async (args, sys) => ({ entries: await sys.fs.list(text(args, "path")) }),
  ),
  obj_get: tool(
    "obj_get",
    "Read a typed object from Object Memory.",
    schema({ namespace: str, name: str }, ["namespace", "name"]),
    (args, sys) => sys.obj.get(text(args, "namespace"), text(args, "name")),
  ),
  obj_put: tool(
    "obj_put",
    "Write a typed object to Object Memory.",
    schema({ namespace: str, name: str, value: {}, type: str }, [
      "namespace",
      "name",
      "value",
    ]),
    (args, sys) =>
      sys.obj.put(text(args, "namespace"), text(args, "name"), args.value, {
        type: optionalText(args, "type"),
      }),
  ),
  spawn_agent: tool(
    "spawn_agent",
    "Start a child agent from a registered image.",
    schema({
      image: str,
      input: {},
      capabilities: { type: "array", items: str },
    }, ["image"]),
    (args, sys) => {
      const capabilities = args.capabilities;
      if (
        capabilities !== undefined &&
        (!Array.isArray(capabilities) ||
          !capabilities.every((c) => typeof c === "string"))
      ) {
        throw new ToolArgumentError(
          'Argument "capabilities" must be an array of strings',
        );
      }
      return sys.proc.spawn({
        image: text(args, "image"),
        input: args.input as never,
        capabilities: capabilities as string[] | undefined,
      });
    },
  ),
  wait_agent: tool(
    "wait_agent",
    "Wait for a child agent to end and return its state and result.",
    schema({ pid: { type: "integer" } }, ["pid"]),
    async (args, sys) => {
      if (!Number.isInteger(args.pid)) {
        throw new ToolArgumentError('Argument "pid" must be an integer');
      }
      const { state, result, error } = await sys.proc.wait(args.pid as number);
      return { state, result, error };
    },
  ),
  run_command: tool(
    "run_command",
    "Run a command (an argv array, never a shell string) and return its exit code and output.",
    schema({
      argv: { type: "array", items: str, minItems: 1 },
      cwd: str,
      timeoutMs: { type: "integer" },
    }, ["argv"]),
    (args, sys) => {
      const argv = args.argv;
      if (!Array.isArray(argv) || !argv.length || !argv.every((a) => typeof a === "string")) {
        throw new ToolArgumentError('Argument "argv" must be a non-empty array of strings');
      }
      const timeoutMs = args.timeoutMs;
      if (timeoutMs !== undefined && !Number.isInteger(timeoutMs)) {
        throw new ToolArgumentError('Argument "timeoutMs" must be an integer');
      }
      return sys.exec.run(argv as string[], {
        cwd: optionalText(args, "cwd"),
        timeoutMs: timeoutMs as number | undefined,
      });
    },
  ),
  fetch_url: tool(
    "fetch_url",
    "Make an HTTP request and return status, headers and body.",
    schema({
      url: str,
      method: str,
      headers: { type: "object", additionalProperties: str },
      body: str,
    }, ["url"]),
    (args, sys) => {
      const headers = args.headers;
      if (
        headers !== undefined &&
        (typeof headers !== "object" || headers === null ||
          !Object.values(headers).every((v) => typeof v === "string"))
      ) throw new ToolArgumentError('Argument "headers" must map names to strings');
      return sys.net.fetch(text(args, "url"), {
        method: optionalText(args, "method"),
        headers: headers as Record<string, string> | undefined,
        body: optionalText(args, "body"),
      });
    },
  ),
  ask_human: tool(
    "ask_human",
    "Ask a human a question and wait for the answer.",
    schema({
      question: str,
      kind: { type: "string", enum: ["text", "choice", "boolean", "number"] },
      choices: { type: "array", items: str },
    }, ["question"]),
    async (args, sys) => {
      const kind = optionalText(args, "kind") as
        | "text"
        | "choice"
        | "boolean"
        | "number"
        | undefined;
      const choices = args.choices;
      if (
        choices !== undefined &&
        (!Array.isArray(choices) || !choices.every((c) => typeof c === "string"))
      ) {
        throw new ToolArgumentError('Argument "choices" must be an array of strings');
      }
      return {
        answer: await sys.human.ask(text(args, "question"), {
          kind,
          choices: choices as string[] | undefined,
        }),
      };
    },
  ),
  register_tool: tool(
    "register_tool",
    "Register a new tool from TypeScript source; it runs isolated, with no more authority than you have.",
    schema({
      name: str,
      description: str,
      input: { type: "object" },
      manifest: { type: "object", properties: { capabilities: { type: "array", items: str } } },
      source: str,
    }, ["name", "description", "input", "manifest", "source"]),
    (args, sys) => {
      const manifest = args.manifest as { capabilities?: unknown } | undefined;
      const capabilities = manifest?.capabilities ?? [];
      if (!Array.isArray(capabilities) || !capabilities.every((c) => typeof c === "string")) {
        throw new ToolArgumentError('Argument "manifest.capabilities" must be an array of strings');
      }
      if (typeof args.input !== "object" || args.input === null) {
        throw new ToolArgumentError('Argument "input" must be a JSON Schema object');
      }
      return sys.tool.register({
        name: text(args, "name"),
        description: text(args, "description"),
        input: args.input as Record<string, never>,
        manifest: { capabilities: capabilities as string[] },
        source: text(args, "source"),
      });
    },
  ),
  obj_from_file: tool(
    "obj_from_file",
    "Store a file's content (JSON when it parses, else text) as an object.",
    schema({ path: str, namespace: str, name: str }, ["path", "namespace", "name"]),
    async (args, sys) => {
      const content = await sys.fs.read(text(args, "path"));
      let value: unknown = content;
      try {
        value = JSON.parse(content);
      } catch {
        // Not JSON: keep the text.
      }
      return await sys.obj.put(text(args, "namespace"), text(args, "name"), value);
    },
  ),
  obj_to_file: tool(
    "obj_to_file",
    "Write an object's value to a file (text as is, anything else as JSON).",
    schema({ namespace: str, name: str, path: str }, ["namespace", "name", "path"]),
    async (args, sys) => {
      const { value } = await sys.obj.get(text(args, "namespace"), text(args, "name"));
      const content = typeof value === "string" ? value : JSON.stringify(value, null, 2);
      return await sys.fs.write(text(args, "path"), content);
    },
  ),
  exit: tool(
    "exit",
    "Finish this agent with an optional result.",
    schema({ result: {} }, []),
    (args) => Promise.resolve({ exiting: true, result: args.result }),
  ),
});
