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
  /** The id the tool's result is answered under. */
  id: string;
  /** The name of the tool called. */
  name: string;
  /** The call's arguments. */
  arguments: Record<string, Json>;
}

/** A message exchanged with a model. */
export type AbiMessage =
  | { role: "system" | "user"; content: string }
  | { role: "assistant"; content?: string; tool_calls?: AbiToolCall[] }
  | { role: "tool"; tool_call_id: string; name: string; content: string };

/** A tool as the model sees it. */
export interface AbiToolSpec {
  /** The tool's name. */
  name: string;
  /** What the tool does, as the model reads it. */
  description: string;
  /** The JSON Schema of the tool's arguments. */
  input: Record<string, Json>;
}

/**
 * A reference to the first `length` messages of the caller's transcript
 * (the messages the host recorded through its `model.complete` calls),
 * with their conversation digest (`nextConversationDigest` in
 * `runtime/guest/cell_protocol.ts`; `""` for none).
 */
export interface AbiTranscriptRef {
  /** How many messages of the transcript the conversation starts with. */
  length: number;
  /** Their conversation digest. */
  digest: string;
}

/** The argument object of a syscall that takes no arguments. */
export type Empty = Record<string, never>;

/** The argument object of every syscall of ABI v1. */
export interface SyscallArgsMap {
  /** The caller's `pid`, `ppid`, `image`, `cwd` and `state`. */
  "proc.self": Empty;
  /** Creates a child process of a registered image and starts it. */
  "proc.spawn": {
    image: string;
    input?: Json;
    capabilities?: string[];
    policy?: Record<string, PolicyDecision>;
    cwd?: string;
    onParentExit?: "kill" | "orphan";
  };
  /** Creates a copy of the caller. */
  "proc.fork": { capabilities?: string[]; input?: Json };
  /** Replaces the caller's image, keeping its pid. */
  "proc.exec": { image: string; input?: Json };
  /** Waits until a child ends. */
  "proc.wait": { pid: number; timeoutMs?: number };
  /** Sends a signal to a descendant. */
  "proc.signal": {
    pid: number;
    signal: "pause" | "resume" | "interrupt" | "terminate" | "kill";
  };
  /** Ends the caller as `exited` with `result`. */
  "proc.exit": { result?: Json };
  /** The caller's children. */
  "proc.children": Empty;
  /** Changes the caller's working directory. */
  "proc.chdir": { path: string };
  /** The caller's working directory. */
  "proc.cwd": Empty;
  /** Reads a file as text, at most `maxBytes` when given. */
  "fs.read": { path: string; maxBytes?: number };
  /** Creates or replaces a file. */
  "fs.write": { path: string; content: string };
  /** Appends to a file. */
  "fs.append": { path: string; content: string };
  /** Lists a directory's entries. */
  "fs.list": { path: string };
  /** Describes a file or directory. */
  "fs.stat": { path: string };
  /** Creates a directory (and its parents with `recursive`). */
  "fs.mkdir": { path: string; recursive?: boolean };
  /** Removes a file or (with `recursive`) a directory tree. */
  "fs.remove": { path: string; recursive?: boolean };
  /** Moves a file or directory. */
  "fs.rename": { from: string; to: string };
  /** Writes an object, checked against its type if any. */
  "obj.put": {
    namespace: string;
    name: string;
    value: Json;
    type?: string;
    expectedVersion?: number;
  };
  /** Reads an object with its version and writer. */
  "obj.get": { namespace: string; name: string };
  /** Lists the objects of a namespace, optionally under a name prefix. */
  "obj.list": { namespace: string; prefix?: string };
  /** Deletes an object. */
  "obj.delete": { namespace: string; name: string };
  /** Registers a JSON Schema type in a namespace, enforced on every later write. */
  "obj.define_type": { namespace: string; name: string; schema: Record<string, Json> };
  /** Shares a namespace with another process. */
  "obj.share": { namespace: string; pid: number; rights: ("read" | "write" | "delete")[] };
  /** The host clock, in milliseconds since the epoch. */
  "time.now": Empty;
  /** Waits `ms` milliseconds. */
  "time.sleep": { ms: number };
  /** Publishes an event on a topic. */
  "event.emit": { topic: string; data?: Json };
  /** Waits for the next event on a topic. */
  "event.wait": { topic: string; timeoutMs?: number };
  /** Puts a message in a process's mailbox. */
  "msg.send": { pid: number; data: Json };
  /** Takes the caller's next message. */
  "msg.recv": { timeoutMs?: number };
  /** Files a typed question in the human queue and waits for the answer. */
  "human.ask": {
    question: string;
    kind?: "text" | "choice" | "boolean" | "number";
    choices?: string[];
  };
  /** Files a permission request in the human queue and waits for the decision. */
  "human.request_permission": { capability: string; reason?: string };
  /** Tells a human something without waiting for an answer. */
  "human.notify": { message: string };
  /** Completes a conversation with a model. */
  "model.complete": {
    /** The conversation, or with `transcript` only the messages after the ones it references. */
    messages: AbiMessage[];
    /** The start of the conversation, by reference to the caller's transcript. */
    transcript?: AbiTranscriptRef;
    tools?: AbiToolSpec[];
    model?: string;
    /** Most tokens the reply may use. */
    maxTokens?: number;
  };
  /** Runs a command from an argv array (never a shell string). */
  "exec.run": { argv: string[]; cwd?: string; timeoutMs?: number; maxOutputBytes?: number };
  /** Makes an HTTP request. */
  "net.fetch": {
    url: string;
    method?: string;
    headers?: Record<string, string>;
    body?: string;
  };
  /** Registers a JIT tool from TypeScript source. */
  "tool.register": {
    name: string;
    description: string;
    input: Record<string, Json>;
    manifest: { capabilities: string[] };
    source: string;
  };
  /** Calls a tool by name. */
  "tool.call": { name: string; args: Record<string, Json> };
  /** The caller's tool table. */
  "tool.list": Empty;
  /** Registers an image. */
  "image.register": { image: Record<string, Json> };
  /** The registered images. */
  "image.list": Empty;
  /** The caller's capabilities. */
  "cap.list": Empty;
  /** Asks a human for a capability. */
  "cap.request": { capability: string; reason?: string };
  /** Gives another process a subset of one of the caller's capabilities. */
  "cap.delegate": { pid: number; capability: string };
  /** Revokes one of the caller's capabilities and everything derived from it. */
  "cap.drop": { id: string };
  /** Saves a program state that replay starts from. */
  "ckpt.save": { state: Json };
  /** The caller's checkpoints. */
  "ckpt.list": Empty;
}

/** The name of a syscall of ABI v1. */
export type SyscallName = keyof SyscallArgsMap;

/** A process state, as results name it. */
export type AbiProcessState =
  | "created"
  | "runnable"
  | "running"
  | "blocked"
  | "paused"
  | "exited"
  | "failed"
  | "killed";

/** How a child (or a JIT tool's process) ended, as `proc.wait` and `tool.call` answer. */
export interface AbiChildEnd {
  /** The child. */
  pid: number;
  /** Its state when the wait ended. */
  state: AbiProcessState;
  /** The result of a child that exited. */
  result?: Json;
  /** Why a child failed or was killed. */
  error?: { code?: string; message: string };
}

/** An object's record without its value, as `obj.list` answers. */
export interface AbiObjectMeta {
  /** The namespace the object lives in. */
  namespace: string;
  /** The object's name within its namespace. */
  name: string;
  /** The type the value satisfies, when the object is typed. */
  type?: string;
  /** 1 for a new object, one more on every write. */
  version: number;
  /** The pid of the last writer. */
  writer: number;
  /** Time of the last write, in ms since the epoch. */
  updatedAt: number;
}

/** An event or a message, as `event.wait` and `msg.recv` answer. */
export interface AbiPosted {
  /** Its position on the topic or in the mailbox, counting from 1. */
  seq: number;
  /** The sending pid, or null when sent from outside. */
  from: number | null;
  /** The payload (`null` when none was given). */
  data: Json;
  /** When it was sent, in ms since the epoch. */
  at: number;
}

/** The kind of a directory entry. */
export type AbiFileKind = "file" | "dir" | "symlink" | "other";

/** The result of every syscall of ABI v1 that succeeds (`null` when it returns nothing). */
export interface SyscallResultsMap {
  /** The caller's identity, working directory and state. */
  "proc.self": {
    pid: number;
    ppid: number | null;
    image: string;
    cwd: string;
    state: AbiProcessState;
  };
  /** The child's pid. */
  "proc.spawn": { pid: number };
  /** The child's pid in the parent, 0 in the child. */
  "proc.fork": { pid: number };
  /** Never seen: the process runs its new image from its start. */
  "proc.exec": null;
  /** How the child ended. */
  "proc.wait": AbiChildEnd;
  /** Nothing. */
  "proc.signal": null;
  /** Never seen: the process has ended. */
  "proc.exit": { result: Json };
  /** The caller's children. */
  "proc.children": { pid: number; image: string; state: AbiProcessState }[];
  /** The new working directory (a real path). */
  "proc.chdir": string;
  /** The working directory (a real path). */
  "proc.cwd": string;
  /** The file's text. */
  "fs.read": string;
  /** The file's size after the write. */
  "fs.write": { bytes: number };
  /** The file's size after the write. */
  "fs.append": { bytes: number };
  /** The directory's entries. */
  "fs.list": { name: string; kind: AbiFileKind; size: number }[];
  /** What the path is. */
  "fs.stat": { path: string; kind: AbiFileKind; size: number; mtimeMs: number | null };
  /** Nothing. */
  "fs.mkdir": null;
  /** Nothing. */
  "fs.remove": null;
  /** Nothing. */
  "fs.rename": null;
  /** The object's version after the write. */
  "obj.put": { version: number };
  /** The object with its version and writer. */
  "obj.get": AbiObjectMeta & { value: Json };
  /** The namespace's objects, without their values. */
  "obj.list": AbiObjectMeta[];
  /** Nothing. */
  "obj.delete": null;
  /** Nothing. */
  "obj.define_type": null;
  /** The id of the capability granted to the other process. */
  "obj.share": string;
  /** Milliseconds since the epoch. */
  "time.now": number;
  /** Nothing, once the time has passed. */
  "time.sleep": null;
  /** The event's position on its topic. */
  "event.emit": { seq: number };
  /** The next event on the topic. */
  "event.wait": AbiPosted & { topic: string };
  /** The message's position in the addressee's mailbox. */
  "msg.send": { seq: number };
  /** The caller's next message. */
  "msg.recv": AbiPosted;
  /** The answer, typed by the question's kind. */
  "human.ask": string | number | boolean;
  /** The id of the capability the human granted. */
  "human.request_permission": string;
  /** The notice's position on the `human.notify` topic. */
  "human.notify": { seq: number };
  /** The assistant message and the tokens spent. */
  "model.complete": {
    message: { role: "assistant"; content?: string; tool_calls?: AbiToolCall[] };
    exit?: boolean;
    usage: { inputTokens: number; outputTokens: number };
    /** The conversation through this reply, when the caller's transcript holds exactly it. */
    transcript?: AbiTranscriptRef;
  };
  /** The command's exit, output and whether it was cut or timed out. */
  "exec.run": {
    code: number;
    signal: string | null;
    stdout: string;
    stderr: string;
    truncated: boolean;
    timedOut: boolean;
  };
  /** The response, with the redirects followed. */
  "net.fetch": {
    status: number;
    statusText: string;
    headers: Record<string, string>;
    body: string;
    truncated: boolean;
    url: string;
    redirects: string[];
  };
  /** The tool's name and digest. */
  "tool.register": { name: string; digest: string };
  /** How the tool's process ended. */
  "tool.call": AbiChildEnd;
  /** The caller's tool table. */
  "tool.list": {
    name: string;
    description: string;
    input?: Record<string, Json>;
    digest?: string;
    builtin: boolean;
  }[];
  /** The image's tag and digest. */
  "image.register": { tag: string; digest: string };
  /** The registered images. */
  "image.list": { tag: string; digest: string }[];
  /** The caller's capabilities. */
  "cap.list": CapabilityView[];
  /** The id of the capability the human granted. */
  "cap.request": string;
  /** The id of the capability granted to the descendant. */
  "cap.delegate": string;
  /** The ids revoked: the capability and everything derived from it. */
  "cap.drop": { dropped: string[] };
  /** The checkpoint's journal seq. */
  "ckpt.save": { seq: number };
  /** The caller's checkpoints. */
  "ckpt.list": { seq: number; at: number }[];
}

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

const transcriptRef = z.object({
  length: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  digest: z.string().regex(/^(?:[0-9a-f]{64})?$/, 'expected a SHA-256 hex digest or ""'),
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
    transcript: transcriptRef.optional(),
    tools: z.array(toolSpec).max(200).optional(),
    model: z.string().min(1).max(200).optional(),
    maxTokens: z.number().int().positive().max(1_000_000).optional(),
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

/**
 * A capability as `cap.list` returns it: the record fields of SPEC section 5
 * (without the holder, which is the caller) and the text form.
 */
export interface CapabilityView {
  /** The capability's id (not a bearer token). */
  id: string;
  /** The capability in text form, e.g. `fs:read:/ws/docs/**;uses=1`. */
  text: string;
  /** The kind of resource: `fs`, `exec`, `net`, … */
  resource: string;
  /** The rights granted; `"*"` stands for every right. */
  rights: string[];
  /** The glob over targets it covers (an absolute path glob for `fs`). */
  scope: string;
  /** Uses left; absent means unlimited. */
  uses?: number;
  /** When it expires, in ms since the epoch; absent means never. */
  expiresAt?: number;
  /** Whether the holder may delegate (a subset of) it. */
  delegable: boolean;
  /** The id of the capability it was derived from. */
  parent?: string;
  /** Who granted it: `operator`, `kernel`, `pid:N` or `human:<request id>`. */
  grantedBy: string;
}

const capabilityView: z.ZodType<CapabilityView> = z.object({
  id: z.string().describe("The capability's id (not a bearer token)"),
  text: z.string().describe("The text form, e.g. `fs:read:/ws/docs/**;uses=1`"),
  resource: z.string().describe("The kind of resource: `fs`, `exec`, `net`, …"),
  rights: z.array(z.string()).describe('The rights granted; `"*"` stands for every right'),
  scope: z.string().describe("The glob over targets it covers (an absolute path glob for `fs`)"),
  uses: z.number().int().optional().describe("Uses left; absent means unlimited"),
  expiresAt: z.number().int().optional().describe(
    "When it expires, in ms since the epoch; absent means never",
  ),
  delegable: z.boolean().describe("Whether the holder may delegate (a subset of) it"),
  parent: z.string().optional().describe("The id of the capability it was derived from"),
  grantedBy: z.string().describe("Who granted it: `operator`, `kernel`, `pid:N`, `human:<id>`"),
}).strict();

const processState = z.enum([
  "created",
  "runnable",
  "running",
  "blocked",
  "paused",
  "exited",
  "failed",
  "killed",
]);
const none = z.null();
const bytesWritten = z.object({
  bytes: z.number().int().nonnegative().describe("The file's size in bytes after the write"),
}).strict();
const fsKind = z.enum(["file", "dir", "symlink", "other"]);
const childEnd = z.object({
  pid: z.number().int().describe("The child"),
  state: processState.describe("The child's state when the wait ended"),
  result: json.optional().describe("The result of a child that exited"),
  error: z.object({ code: z.string().optional(), message: z.string() }).strict().optional()
    .describe("Why a child failed or was killed"),
}).strict();
const objectMeta = {
  namespace: z.string().describe("The namespace the object lives in"),
  name: z.string().describe("The object's name within its namespace"),
  type: z.string().optional().describe("The type the value satisfies, when typed"),
  version: z.number().int().positive().describe("1 for a new object, one more on every write"),
  writer: z.number().int().describe("The pid of the last writer"),
  updatedAt: z.number().describe("Time of the last write, in ms since the epoch"),
};
const queued = z.object({
  seq: z.number().int().positive().describe("Its position on the topic or in the mailbox"),
}).strict();
const posted = {
  seq: z.number().int().positive().describe("Its position on the topic or in the mailbox"),
  from: z.number().int().nullable().describe("The sending pid, or null when sent from outside"),
  data: json.describe("The payload (`null` when none was given)"),
  at: z.number().describe("When it was sent, in ms since the epoch"),
};
const tagged = z.object({
  tag: z.string().describe("`name@version`"),
  digest: z.string().describe("The image's content digest"),
}).strict();

/**
 * Result schemas, one per syscall of ABI v1: the value a call that succeeds
 * answers with (`null` when it returns nothing). A call that parks its
 * process answers when the wait completes, with the value described here.
 */
export const SYSCALL_RESULTS: {
  readonly [N in SyscallName]: z.ZodType<SyscallResultsMap[N]>;
} = {
  "proc.self": z.object({
    pid: z.number().int(),
    ppid: z.number().int().nullable().describe("The parent, or null for a root process"),
    image: z.string().describe("The image tag the process runs"),
    cwd: z.string().describe("The working directory (a real path)"),
    state: processState,
  }).strict(),
  "proc.spawn": z.object({ pid: z.number().int().describe("The child") }).strict(),
  "proc.fork": z.object({
    pid: z.number().int().describe("The child in the parent, 0 in the child"),
  }).strict(),
  "proc.exec": z.null().describe("Never seen: the process runs its new image from its start"),
  "proc.wait": childEnd,
  "proc.signal": none,
  "proc.exit": z.object({ result: json.describe("The result the process exited with") })
    .strict().describe("Never seen: the process has ended"),
  "proc.children": z.array(
    z.object({ pid: z.number().int(), image: z.string(), state: processState }).strict(),
  ),
  "proc.chdir": z.string().describe("The new working directory (a real path)"),
  "proc.cwd": z.string().describe("The working directory (a real path)"),
  "fs.read": z.string().describe("The file's text"),
  "fs.write": bytesWritten,
  "fs.append": bytesWritten,
  "fs.list": z.array(
    z.object({
      name: z.string().describe("The entry's name, without its directory"),
      kind: fsKind,
      size: z.number().int().nonnegative().describe("The entry's size in bytes"),
    }).strict(),
  ),
  "fs.stat": z.object({
    path: z.string().describe("The real path"),
    kind: fsKind,
    size: z.number().int().nonnegative().describe("Size in bytes"),
    mtimeMs: z.number().nullable().describe("Last modification, in ms since the epoch"),
  }).strict(),
  "fs.mkdir": none,
  "fs.remove": none,
  "fs.rename": none,
  "obj.put": z.object({
    version: z.number().int().positive().describe("The object's version after the write"),
  }).strict(),
  "obj.get": z.object({ ...objectMeta, value: json.describe("The JSON value") }).strict(),
  "obj.list": z.array(z.object(objectMeta).strict()),
  "obj.delete": none,
  "obj.define_type": none,
  "obj.share": z.string().describe("The id of the capability granted to the other process"),
  "time.now": z.number().describe("Milliseconds since the epoch"),
  "time.sleep": none,
  "event.emit": queued,
  "event.wait": z.object({
    topic: z.string().describe("The topic the event was posted on"),
    ...posted,
  }).strict(),
  "msg.send": queued,
  "msg.recv": z.object(posted).strict(),
  "human.ask": z.union([z.string(), z.number(), z.boolean()]).describe(
    "The answer: text or a choice, a number, or a boolean, by the question's kind",
  ),
  "human.request_permission": z.string().describe("The id of the capability the human granted"),
  "human.notify": queued,
  "model.complete": z.object({
    message: z.object({
      role: z.literal("assistant"),
      content: z.string().optional(),
      tool_calls: z.array(toolCall).optional(),
    }).strict().describe("The assistant message"),
    exit: z.boolean().optional().describe("True when the model means to end the process"),
    usage: z.object({
      inputTokens: z.number().int().nonnegative(),
      outputTokens: z.number().int().nonnegative(),
    }).strict().describe("Tokens the call consumed, charged to the budget"),
    transcript: transcriptRef.optional().describe(
      "The conversation through this reply in the caller's transcript, when the transcript holds " +
        "exactly it: a later call may send it in place of those messages",
    ),
  }).strict(),
  "exec.run": z.object({
    code: z.number().int().describe("The exit code"),
    signal: z.string().nullable().describe("The signal that ended the command, if any"),
    stdout: z.string(),
    stderr: z.string(),
    truncated: z.boolean().describe("The output was cut at the output cap"),
    timedOut: z.boolean().describe("The command was ended by the timeout"),
  }).strict(),
  "net.fetch": z.object({
    status: z.number().int(),
    statusText: z.string(),
    headers: z.record(z.string(), z.string()).describe(
      "Response headers, lower-case names; repeated ones joined with `, `",
    ),
    body: z.string().describe("The body decoded as UTF-8, cut at the response cap"),
    truncated: z.boolean().describe("The body was longer than the response cap"),
    url: z.string().describe("The URL the response came from"),
    redirects: z.array(z.string()).describe("The targets of the redirects followed, in order"),
  }).strict(),
  "tool.register": z.object({
    name: z.string(),
    digest: z.string().describe("The digest of the tool's source and manifest"),
  }).strict(),
  "tool.call": childEnd.describe("The end of the tool's process (the libc returns its result)"),
  "tool.list": z.array(
    z.object({
      name: z.string(),
      description: z.string(),
      input: z.record(z.string(), json).optional().describe("A JIT tool's argument schema"),
      digest: z.string().optional().describe("A JIT tool's digest"),
      builtin: z.boolean(),
    }).strict(),
  ),
  "image.register": tagged,
  "image.list": z.array(tagged),
  "cap.list": z.array(capabilityView),
  "cap.request": z.string().describe("The id of the capability the human granted"),
  "cap.delegate": z.string().describe("The id of the capability granted to the descendant"),
  "cap.drop": z.object({
    dropped: z.array(z.string()).describe("The ids revoked: the capability and its derivatives"),
  }).strict(),
  "ckpt.save": z.object({ seq: z.number().int().describe("The checkpoint's journal seq") })
    .strict(),
  "ckpt.list": z.array(
    z.object({ seq: z.number().int(), at: z.number().describe("When it was saved") }).strict(),
  ),
};

/** The result type of syscall `N`; {@link SYSCALL_RESULTS} checks it at run time. */
export type SyscallResult<N extends SyscallName> = SyscallResultsMap[N];

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
