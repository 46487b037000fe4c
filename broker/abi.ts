/**
 * The syscall ABI, version 1 (SPEC section 6): one zod schema per syscall's
 * arguments, and the wire shapes of a call and its reply. The broker
 * validates every argument object with these schemas before anything else
 * happens; `GET /v1/openapi.json` and `docs/abi.md` are generated from them.
 *
 * @module
 */

import { z } from "zod";
import type { ErrorCode } from "./errors.ts";

/** A call as a Worker sends it. */
export interface SyscallRequest {
  /** Caller-chosen id, echoed in the reply. */
  id: number;
  /** The syscall name, e.g. `fs.read`. */
  name: string;
  /** The argument object. */
  args: unknown;
}

/** The broker's answer to a {@link SyscallRequest}. */
export type SyscallReply =
  | { id: number; ok: true; value: unknown }
  | { id: number; ok: false; error: { code: ErrorCode; message: string } };

/** A JSON value (validated as JSON by the schemas; typed loosely for callers). */
export type Json = unknown;

/** A policy decision. */
export type PolicyDecision = "allow" | "deny" | "ask";

/** A tool call in a model message. */
export interface AbiToolCall {
  id: string;
  name: string;
  arguments: Record<string, Json>;
}

/** A message exchanged with a model. */
export type AbiMessage =
  | { role: "system" | "user"; content: string }
  | { role: "assistant"; content?: string; tool_calls?: AbiToolCall[] }
  | { role: "tool"; tool_call_id: string; name: string; content: string };

/** A tool as the model sees it. */
export interface AbiToolSpec {
  name: string;
  description: string;
  input: Record<string, Json>;
}

/** The argument object of a syscall that takes no arguments. */
export type Empty = Record<string, never>;

/** The argument object of every syscall of ABI v1. */
export interface SyscallArgsMap {
  "proc.self": Empty;
  "proc.spawn": {
    image: string;
    input?: Json;
    capabilities?: string[];
    policy?: Record<string, PolicyDecision>;
    cwd?: string;
    onParentExit?: "kill" | "orphan";
  };
  "proc.fork": { capabilities?: string[]; input?: Json };
  "proc.exec": { image: string; input?: Json };
  "proc.wait": { pid: number; timeoutMs?: number };
  "proc.signal": {
    pid: number;
    signal: "pause" | "resume" | "interrupt" | "terminate" | "kill";
  };
  "proc.exit": { result?: Json };
  "proc.children": Empty;
  "proc.chdir": { path: string };
  "proc.cwd": Empty;
  "fs.read": { path: string; maxBytes?: number };
  "fs.write": { path: string; content: string };
  "fs.append": { path: string; content: string };
  "fs.list": { path: string };
  "fs.stat": { path: string };
  "fs.mkdir": { path: string; recursive?: boolean };
  "fs.remove": { path: string; recursive?: boolean };
  "fs.rename": { from: string; to: string };
  "obj.put": {
    namespace: string;
    name: string;
    value: Json;
    type?: string;
    expectedVersion?: number;
  };
  "obj.get": { namespace: string; name: string };
  "obj.list": { namespace: string; prefix?: string };
  "obj.delete": { namespace: string; name: string };
  "obj.define_type": { namespace: string; name: string; schema: Record<string, Json> };
  "obj.share": { namespace: string; pid: number; rights: ("read" | "write" | "delete")[] };
  "time.now": Empty;
  "time.sleep": { ms: number };
  "event.emit": { topic: string; data?: Json };
  "event.wait": { topic: string; timeoutMs?: number };
  "msg.send": { pid: number; data: Json };
  "msg.recv": { timeoutMs?: number };
  "human.ask": {
    question: string;
    kind?: "text" | "choice" | "boolean" | "number";
    choices?: string[];
  };
  "human.request_permission": { capability: string; reason?: string };
  "human.notify": { message: string };
  "model.complete": { messages: AbiMessage[]; tools?: AbiToolSpec[]; model?: string };
  "exec.run": { argv: string[]; cwd?: string; timeoutMs?: number; maxOutputBytes?: number };
  "net.fetch": {
    url: string;
    method?: string;
    headers?: Record<string, string>;
    body?: string;
  };
  "tool.register": {
    name: string;
    description: string;
    input: Record<string, Json>;
    manifest: { capabilities: string[] };
    source: string;
  };
  "tool.call": { name: string; args: Record<string, Json> };
  "tool.list": Empty;
  "image.register": { image: Record<string, Json> };
  "image.list": Empty;
  "cap.list": Empty;
  "cap.request": { capability: string; reason?: string };
  "cap.delegate": { pid: number; capability: string };
  "cap.drop": { id: string };
  "ckpt.save": { state: Json };
  "ckpt.list": Empty;
}

/** The name of a syscall of ABI v1. */
export type SyscallName = keyof SyscallArgsMap;

/** The validated argument type of syscall `N`. */
export type SyscallArgs<N extends SyscallName> = SyscallArgsMap[N];

const path = z.string().min(1).max(4096);
const json = z.json() as z.ZodType<Json>;
const pid = z.number().int().positive();
const namespace = z.string().min(1).max(200);
const objectName = z.string().min(1).max(200);
const capabilityText = z.string().min(1).max(1000);
const decision = z.enum(["allow", "deny", "ask"]);
const timeoutMs = z.number().int().nonnegative().max(365 * 24 * 3600_000);

const toolCall = z.object({
  id: z.string().max(200),
  name: z.string().min(1).max(200),
  arguments: z.record(z.string(), json),
}).strict();

const message = z.discriminatedUnion("role", [
  z.object({ role: z.enum(["system", "user"]), content: z.string() }).strict(),
  z.object({
    role: z.literal("assistant"),
    content: z.string().optional(),
    tool_calls: z.array(toolCall).optional(),
  }).strict(),
  z.object({
    role: z.literal("tool"),
    tool_call_id: z.string().max(200),
    name: z.string().max(200),
    content: z.string(),
  }).strict(),
]);

const toolSpec = z.object({
  name: z.string().min(1).max(200),
  description: z.string().max(4000),
  input: z.record(z.string(), json),
}).strict();

const empty = z.object({}).strict();

/** Argument schemas, one per syscall of ABI v1. */
export const SYSCALL_ARGS: { readonly [N in SyscallName]: z.ZodType<SyscallArgsMap[N]> } = {
  "proc.self": empty,
  "proc.spawn": z.object({
    image: z.string().min(1).max(200),
    input: json.optional(),
    capabilities: z.array(capabilityText).max(100).optional(),
    policy: z.record(z.string().max(1000), decision).optional(),
    cwd: path.optional(),
    onParentExit: z.enum(["kill", "orphan"]).optional(),
  }).strict(),
  "proc.fork": z.object({
    capabilities: z.array(capabilityText).max(100).optional(),
    input: json.optional(),
  }).strict(),
  "proc.exec": z.object({
    image: z.string().min(1).max(200),
    input: json.optional(),
  }).strict(),
  "proc.wait": z.object({ pid, timeoutMs: timeoutMs.optional() }).strict(),
  "proc.signal": z.object({
    pid,
    signal: z.enum(["pause", "resume", "interrupt", "terminate", "kill"]),
  }).strict(),
  "proc.exit": z.object({ result: json.optional() }).strict(),
  "proc.children": empty,
  "proc.chdir": z.object({ path }).strict(),
  "proc.cwd": empty,
  "fs.read": z.object({
    path,
    maxBytes: z.number().int().positive().optional(),
  }).strict(),
  "fs.write": z.object({ path, content: z.string() }).strict(),
  "fs.append": z.object({ path, content: z.string() }).strict(),
  "fs.list": z.object({ path }).strict(),
  "fs.stat": z.object({ path }).strict(),
  "fs.mkdir": z.object({ path, recursive: z.boolean().optional() }).strict(),
  "fs.remove": z.object({ path, recursive: z.boolean().optional() }).strict(),
  "fs.rename": z.object({ from: path, to: path }).strict(),
  "obj.put": z.object({
    namespace,
    name: objectName,
    value: json,
    type: objectName.optional(),
    expectedVersion: z.number().int().nonnegative().optional(),
  }).strict(),
  "obj.get": z.object({ namespace, name: objectName }).strict(),
  "obj.list": z.object({
    namespace,
    prefix: z.string().max(200).optional(),
  }).strict(),
  "obj.delete": z.object({ namespace, name: objectName }).strict(),
  "obj.define_type": z.object({
    namespace,
    name: objectName,
    schema: z.record(z.string(), json),
  }).strict(),
  "obj.share": z.object({
    namespace,
    pid,
    rights: z.array(z.enum(["read", "write", "delete"])).min(1),
  }).strict(),
  "time.now": empty,
  "time.sleep": z.object({ ms: timeoutMs }).strict(),
  "event.emit": z.object({
    topic: z.string().min(1).max(200),
    data: json.optional(),
  }).strict(),
  "event.wait": z.object({
    topic: z.string().min(1).max(200),
    timeoutMs: timeoutMs.optional(),
  }).strict(),
  "msg.send": z.object({ pid, data: json }).strict(),
  "msg.recv": z.object({ timeoutMs: timeoutMs.optional() }).strict(),
  "human.ask": z.object({
    question: z.string().min(1).max(4000),
    kind: z.enum(["text", "choice", "boolean", "number"]).optional(),
    choices: z.array(z.string().max(200)).max(50).optional(),
  }).strict(),
  "human.request_permission": z.object({
    capability: capabilityText,
    reason: z.string().max(4000).optional(),
  }).strict(),
  "human.notify": z.object({ message: z.string().min(1).max(4000) }).strict(),
  "model.complete": z.object({
    messages: z.array(message).min(1).max(10_000),
    tools: z.array(toolSpec).max(200).optional(),
    model: z.string().min(1).max(200).optional(),
  }).strict(),
  "exec.run": z.object({
    argv: z.array(z.string().max(10_000)).min(1).max(1000),
    cwd: path.optional(),
    timeoutMs: timeoutMs.optional(),
    maxOutputBytes: z.number().int().positive().optional(),
  }).strict(),
  "net.fetch": z.object({
    url: z.string().url().max(8192),
    method: z.string().max(16).optional(),
    headers: z.record(z.string(), z.string()).optional(),
    body: z.string().optional(),
  }).strict(),
  "tool.register": z.object({
    name: z.string().min(1).max(64),
    description: z.string().max(4000),
    input: z.record(z.string(), json),
    manifest: z.object({ capabilities: z.array(capabilityText).max(100) })
      .strict(),
    source: z.string().max(256 * 1024),
  }).strict(),
  "tool.call": z.object({
    name: z.string().min(1).max(64),
    args: z.record(z.string(), json),
  }).strict(),
  "tool.list": empty,
  "image.register": z.object({ image: z.record(z.string(), json) }).strict(),
  "image.list": empty,
  "cap.list": empty,
  "cap.request": z.object({
    capability: capabilityText,
    reason: z.string().max(4000).optional(),
  }).strict(),
  "cap.delegate": z.object({ pid, capability: capabilityText }).strict(),
  "cap.drop": z.object({ id: z.string().min(1).max(200) }).strict(),
  "ckpt.save": z.object({ state: json }).strict(),
  "ckpt.list": empty,
};

/** Every syscall name of ABI v1, in table order. */
export const SYSCALL_NAMES: readonly SyscallName[] = Object.keys(
  SYSCALL_ARGS,
) as SyscallName[];

/** True when `name` is a syscall of ABI v1. */
export function isSyscallName(name: unknown): name is SyscallName {
  return typeof name === "string" && Object.hasOwn(SYSCALL_ARGS, name);
}

/** Schema of the outer call object a Worker sends. */
export const SyscallRequestSchema: z.ZodType<SyscallRequest> = z.object({
  id: z.number().int().nonnegative(),
  name: z.string().min(1).max(64),
  args: z.unknown(),
}).strict() as z.ZodType<SyscallRequest>;
