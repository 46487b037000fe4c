/**
 * The worker-side libc: the typed `sys` object a program (`entry` module) or
 * a JIT tool receives. Every function is one syscall over the transport the
 * Worker was given; nothing here carries authority. A refused call throws a
 * {@link SysError} whose `code` is the ABI error code.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { createSys } from "./libc.ts";
 * // A transport that answers every call with the current time, for illustration.
 * const sys = createSys((_name, _args) => Promise.resolve(42));
 * assert((await sys.time.now()) === 42);
 * ```
 *
 * @module
 */

import type { CapabilityView, SyscallArgs, SyscallName } from "../../broker/abi.ts";

/** Sends one syscall and resolves with its value or rejects with a {@link SysError}. */
export type Transport = (name: SyscallName, args: unknown) => Promise<unknown>;

/** A refused or failed syscall, as the program sees it. */
export class SysError extends Error {
  /** The ABI error code (`EPERM`, `ENOENT`, …). */
  readonly code: string;
  /** Creates an error with an ABI code. */
  constructor(code: string, message: string) {
    super(message);
    this.name = "SysError";
    this.code = code;
  }
}

/** An entry of a directory listing. */
export interface DirEntry {
  /** The entry's name, without its directory. */
  name: string;
  /** What the entry is. */
  kind: "file" | "dir" | "symlink" | "other";
  /** The entry's size in bytes. */
  size: number;
}

/** What `proc.wait` returns. */
export interface WaitResult {
  /** The child that ended. */
  pid: number;
  /** The child's state when the wait ended. */
  state: string;
  /** The result of a child that exited. */
  result?: unknown;
  /** Why a child failed or was killed. */
  error?: { code?: string; message: string };
}

/** The `sys` object: one typed function per syscall of ABI v1. */
export interface Sys {
  /** Processes: `proc.*`. */
  proc: {
    self(): Promise<
      { pid: number; ppid: number | null; image: string; cwd: string }
    >;
    spawn(
      options: SyscallArgs<"proc.spawn">,
    ): Promise<{ pid: number }>;
    fork(options?: SyscallArgs<"proc.fork">): Promise<{ pid: number }>;
    exec(options: SyscallArgs<"proc.exec">): Promise<never>;
    wait(pid: number, options?: { timeoutMs?: number }): Promise<WaitResult>;
    signal(
      pid: number,
      signal: SyscallArgs<"proc.signal">["signal"],
    ): Promise<void>;
    exit(result?: unknown): Promise<never>;
    children(): Promise<{ pid: number; image: string; state: string }[]>;
    chdir(path: string): Promise<string>;
    cwd(): Promise<string>;
  };
  /** Files under the workspace: `fs.*`. */
  fs: {
    read(path: string, options?: { maxBytes?: number }): Promise<string>;
    write(path: string, content: string): Promise<{ bytes: number }>;
    append(path: string, content: string): Promise<{ bytes: number }>;
    list(path: string): Promise<DirEntry[]>;
    stat(path: string): Promise<
      { path: string; kind: string; size: number; mtimeMs: number | null }
    >;
    mkdir(path: string, options?: { recursive?: boolean }): Promise<void>;
    remove(path: string, options?: { recursive?: boolean }): Promise<void>;
    rename(from: string, to: string): Promise<void>;
  };
  /** Object memory: `obj.*`. */
  obj: {
    put(
      namespace: string,
      name: string,
      value: unknown,
      options?: { type?: string; expectedVersion?: number },
    ): Promise<{ version: number }>;
    get(namespace: string, name: string): Promise<
      {
        namespace: string;
        name: string;
        value: unknown;
        type?: string;
        version: number;
        writer: number;
      }
    >;
    list(
      namespace: string,
      options?: { prefix?: string },
    ): Promise<{ name: string; version: number; type?: string }[]>;
    delete(namespace: string, name: string): Promise<void>;
    defineType(
      namespace: string,
      name: string,
      schema: Record<string, unknown>,
    ): Promise<void>;
    share(
      namespace: string,
      pid: number,
      rights: ("read" | "write" | "delete")[],
    ): Promise<void>;
  };
  /** The clock: `time.*`. */
  time: {
    now(): Promise<number>;
    sleep(ms: number): Promise<void>;
  };
  /** Topic events: `event.*`. */
  event: {
    emit(topic: string, data?: unknown): Promise<void>;
    wait(
      topic: string,
      options?: { timeoutMs?: number },
    ): Promise<{ topic: string; data: unknown }>;
  };
  /** The mailbox: `msg.*`. */
  msg: {
    send(pid: number, data: unknown): Promise<void>;
    recv(options?: { timeoutMs?: number }): Promise<
      { from: number; data: unknown }
    >;
  };
  /** The human queue: `human.*`. */
  human: {
    ask(
      question: string,
      options?: Omit<SyscallArgs<"human.ask">, "question">,
    ): Promise<unknown>;
    requestPermission(capability: string, reason?: string): Promise<string>;
    notify(message: string): Promise<void>;
  };
  /** Model completions: `model.*`. */
  model: {
    complete(request: SyscallArgs<"model.complete">): Promise<ModelReply>;
  };
  /** Commands: `exec.*`. */
  exec: {
    run(argv: string[], options?: Omit<SyscallArgs<"exec.run">, "argv">): Promise<
      {
        code: number;
        signal: string | null;
        stdout: string;
        stderr: string;
        truncated: boolean;
        timedOut: boolean;
      }
    >;
  };
  /** HTTP: `net.*`. */
  net: {
    fetch(url: string, options?: Omit<SyscallArgs<"net.fetch">, "url">): Promise<
      {
        status: number;
        statusText: string;
        url: string;
        headers: Record<string, string>;
        body: string;
        truncated: boolean;
        redirects: string[];
      }
    >;
  };
  /** JIT tools: `tool.*`. */
  tool: {
    register(tool: SyscallArgs<"tool.register">): Promise<{ name: string; digest: string }>;
    call(name: string, args: Record<string, unknown>): Promise<unknown>;
    list(): Promise<
      { name: string; description: string; input?: Record<string, unknown>; builtin: boolean }[]
    >;
  };
  /** Images: `image.*`. */
  image: {
    register(image: Record<string, unknown>): Promise<
      { tag: string; digest: string }
    >;
    list(): Promise<{ tag: string; digest: string }[]>;
  };
  /** Capabilities: `cap.*`. */
  cap: {
    list(): Promise<CapabilityView[]>;
    request(capability: string, reason?: string): Promise<string>;
    delegate(pid: number, capability: string): Promise<string>;
    drop(id: string): Promise<void>;
  };
  /** Checkpoints: `ckpt.*`. */
  ckpt: {
    save(state: unknown): Promise<{ seq: number }>;
    list(): Promise<{ seq: number; at: number }[]>;
  };
  /** The raw transport, for syscalls by name. */
  call(name: SyscallName, args: unknown): Promise<unknown>;
}

/** A capability as `cap.list` returns it: its record fields and its text form. */
export type { CapabilityView };

/** A model reply as `model.complete` returns it. */
export interface ModelReply {
  /** The assistant message. */
  message: {
    role: "assistant";
    content?: string;
    tool_calls?: {
      id: string;
      name: string;
      arguments: Record<string, unknown>;
    }[];
  };
  /** True when the model means to end the process. */
  exit?: boolean;
  /** Tokens the call consumed, charged to the process's budget. */
  usage: { inputTokens: number; outputTokens: number };
}

/** Builds the `sys` object over a transport. */
export function createSys(transport: Transport): Sys {
  const call = <T>(name: SyscallName, args: unknown = {}): Promise<T> =>
    transport(name, args) as Promise<T>;
  return {
    proc: {
      self: () => call("proc.self"),
      spawn: (options) => call("proc.spawn", options),
      fork: (options = {}) => call("proc.fork", options),
      exec: (options) => call("proc.exec", options),
      wait: (pid, options = {}) => call("proc.wait", { pid, ...options }),
      signal: (pid, signal) => call("proc.signal", { pid, signal }),
      exit: (result) => call("proc.exit", { result }),
      children: () => call("proc.children"),
      chdir: (path) => call("proc.chdir", { path }),
      cwd: () => call("proc.cwd"),
    },
    fs: {
      read: (path, options = {}) => call("fs.read", { path, ...options }),
      write: (path, content) => call("fs.write", { path, content }),
      append: (path, content) => call("fs.append", { path, content }),
      list: (path) => call("fs.list", { path }),
      stat: (path) => call("fs.stat", { path }),
      mkdir: (path, options = {}) => call("fs.mkdir", { path, ...options }),
      remove: (path, options = {}) => call("fs.remove", { path, ...options }),
      rename: (from, to) => call("fs.rename", { from, to }),
    },
    obj: {
      put: (namespace, name, value, options = {}) =>
        call("obj.put", { namespace, name, value, ...options }),
      get: (namespace, name) => call("obj.get", { namespace, name }),
      list: (namespace, options = {}) => call("obj.list", { namespace, ...options }),
      delete: (namespace, name) => call("obj.delete", { namespace, name }),
      defineType: (namespace, name, schema) => call("obj.define_type", { namespace, name, schema }),
      share: (namespace, pid, rights) => call("obj.share", { namespace, pid, rights }),
    },
    time: {
      now: () => call("time.now"),
      sleep: (ms) => call("time.sleep", { ms }),
    },
    event: {
      emit: (topic, data) => call("event.emit", { topic, data }),
      wait: (topic, options = {}) => call("event.wait", { topic, ...options }),
    },
    msg: {
      send: (pid, data) => call("msg.send", { pid, data }),
      recv: (options = {}) => call("msg.recv", options),
    },
    human: {
      ask: (question, options = {}) => call("human.ask", { question, ...options }),
      requestPermission: (capability, reason) =>
        call("human.request_permission", { capability, reason }),
      notify: (message) => call("human.notify", { message }),
    },
    model: { complete: (request) => call("model.complete", request) },
    exec: { run: (argv, options = {}) => call("exec.run", { argv, ...options }) },
    net: { fetch: (url, options = {}) => call("net.fetch", { url, ...options }) },
    tool: {
      register: (tool) => call("tool.register", tool),
      call: async (name, args) => {
        // A JIT tool runs as a child process: its end state carries the result.
        const end = await call<WaitResult>("tool.call", { name, args });
        if (end.state !== "exited") {
          throw new SysError(
            end.error?.code ?? "EINVAL",
            `Tool "${name}" ${end.state}: ${end.error?.message ?? "no reason given"}`,
          );
        }
        return end.result;
      },
      list: () => call("tool.list"),
    },
    image: {
      register: (image) => call("image.register", { image }),
      list: () => call("image.list"),
    },
    cap: {
      list: () => call("cap.list"),
      request: (capability, reason) => call("cap.request", { capability, reason }),
      delegate: (pid, capability) => call("cap.delegate", { pid, capability }),
      drop: (id) => call("cap.drop", { id }),
    },
    ckpt: {
      save: (state) => call("ckpt.save", { state }),
      list: () => call("ckpt.list"),
    },
    call: (name, args) => call(name, args),
  };
}
