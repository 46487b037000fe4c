/**
 * The worker-side libc: the guest end of every syscall. Above, the typed
 * `sys` object a program (`entry` module) or a JIT tool receives, one
 * function per syscall; beneath it, the channel that posts each call to the
 * cell with a fresh id and settles its promise when the reply with that id
 * comes back, in whatever order replies arrive. Nothing here carries
 * authority. A refused call throws a {@link SysError} whose `code` is the ABI
 * error code.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { createChannel, createSys } from "./libc.ts";
 * // A cell that answers every call at once with the current time, for illustration.
 * const channel = createChannel((message) => {
 *   channel.receive({ id: message.id, ok: true, value: 42 });
 * });
 * const sys = createSys(channel.call);
 * assert((await sys.time.now()) === 42);
 * ```
 *
 * @module
 */

import type {
  CapabilityView,
  SyscallArgs,
  SyscallName,
  SyscallReply,
  SyscallResult,
} from "../../broker/abi.ts";
import type { WorkerToCell } from "./cell_protocol.ts";

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
export type DirEntry = SyscallResult<"fs.list">[number];

/** What `proc.wait` returns. */
export type WaitResult = SyscallResult<"proc.wait">;

/**
 * The `sys` object: one typed function per syscall of ABI v1. Each resolves
 * with the syscall's result as `broker/abi.ts` declares it (`SyscallResult`),
 * but for `proc.exit` and `proc.exec`, which never return to the program, and
 * `tool.call`, which answers the tool's own result.
 */
export interface Sys {
  /** Processes: `proc.*`. */
  proc: {
    self(): Promise<SyscallResult<"proc.self">>;
    spawn(
      options: SyscallArgs<"proc.spawn">,
    ): Promise<SyscallResult<"proc.spawn">>;
    fork(options?: SyscallArgs<"proc.fork">): Promise<SyscallResult<"proc.fork">>;
    exec(options: SyscallArgs<"proc.exec">): Promise<never>;
    wait(pid: number, options?: { timeoutMs?: number }): Promise<WaitResult>;
    signal(
      pid: number,
      signal: SyscallArgs<"proc.signal">["signal"],
    ): Promise<SyscallResult<"proc.signal">>;
    exit(result?: unknown): Promise<never>;
    children(): Promise<SyscallResult<"proc.children">>;
    chdir(path: string): Promise<SyscallResult<"proc.chdir">>;
    cwd(): Promise<SyscallResult<"proc.cwd">>;
  };
  /** Files under the workspace: `fs.*`. */
  fs: {
    read(path: string, options?: { maxBytes?: number }): Promise<SyscallResult<"fs.read">>;
    write(path: string, content: string): Promise<SyscallResult<"fs.write">>;
    append(path: string, content: string): Promise<SyscallResult<"fs.append">>;
    list(path: string): Promise<SyscallResult<"fs.list">>;
    stat(path: string): Promise<SyscallResult<"fs.stat">>;
    mkdir(path: string, options?: { recursive?: boolean }): Promise<SyscallResult<"fs.mkdir">>;
    remove(path: string, options?: { recursive?: boolean }): Promise<SyscallResult<"fs.remove">>;
    rename(from: string, to: string): Promise<SyscallResult<"fs.rename">>;
  };
  /** Object memory: `obj.*`. */
  obj: {
    put(
      namespace: string,
      name: string,
      value: unknown,
      options?: { type?: string; expectedVersion?: number },
    ): Promise<SyscallResult<"obj.put">>;
    get(namespace: string, name: string): Promise<SyscallResult<"obj.get">>;
    list(
      namespace: string,
      options?: { prefix?: string },
    ): Promise<SyscallResult<"obj.list">>;
    delete(namespace: string, name: string): Promise<SyscallResult<"obj.delete">>;
    defineType(
      namespace: string,
      name: string,
      schema: Record<string, unknown>,
    ): Promise<SyscallResult<"obj.define_type">>;
    share(
      namespace: string,
      pid: number,
      rights: ("read" | "write" | "delete")[],
    ): Promise<SyscallResult<"obj.share">>;
  };
  /** The clock: `time.*`. */
  time: {
    now(): Promise<SyscallResult<"time.now">>;
    sleep(ms: number): Promise<SyscallResult<"time.sleep">>;
  };
  /** Topic events: `event.*`. */
  event: {
    emit(topic: string, data?: unknown): Promise<SyscallResult<"event.emit">>;
    wait(
      topic: string,
      options?: { timeoutMs?: number },
    ): Promise<SyscallResult<"event.wait">>;
  };
  /** The mailbox: `msg.*`. */
  msg: {
    send(pid: number, data: unknown): Promise<SyscallResult<"msg.send">>;
    recv(options?: { timeoutMs?: number }): Promise<SyscallResult<"msg.recv">>;
  };
  /** The human queue: `human.*`. */
  human: {
    ask(
      question: string,
      options?: Omit<SyscallArgs<"human.ask">, "question">,
    ): Promise<SyscallResult<"human.ask">>;
    requestPermission(
      capability: string,
      reason?: string,
    ): Promise<SyscallResult<"human.request_permission">>;
    notify(message: string): Promise<SyscallResult<"human.notify">>;
  };
  /** Model completions: `model.*`. */
  model: {
    complete(request: SyscallArgs<"model.complete">): Promise<SyscallResult<"model.complete">>;
  };
  /** Commands: `exec.*`. */
  exec: {
    run(
      argv: string[],
      options?: Omit<SyscallArgs<"exec.run">, "argv">,
    ): Promise<SyscallResult<"exec.run">>;
  };
  /** HTTP: `net.*`. */
  net: {
    fetch(
      url: string,
      options?: Omit<SyscallArgs<"net.fetch">, "url">,
    ): Promise<SyscallResult<"net.fetch">>;
  };
  /** JIT tools: `tool.*`. */
  tool: {
    register(tool: SyscallArgs<"tool.register">): Promise<SyscallResult<"tool.register">>;
    call(name: string, args: Record<string, unknown>): Promise<unknown>;
    list(): Promise<SyscallResult<"tool.list">>;
  };
  /** Images: `image.*`. */
  image: {
    register(image: Record<string, unknown>): Promise<SyscallResult<"image.register">>;
    list(): Promise<SyscallResult<"image.list">>;
  };
  /** Capabilities: `cap.*`. */
  cap: {
    list(): Promise<SyscallResult<"cap.list">>;
    request(capability: string, reason?: string): Promise<SyscallResult<"cap.request">>;
    delegate(pid: number, capability: string): Promise<SyscallResult<"cap.delegate">>;
    drop(id: string): Promise<SyscallResult<"cap.drop">>;
  };
  /** Checkpoints: `ckpt.*`. */
  ckpt: {
    save(state: unknown): Promise<SyscallResult<"ckpt.save">>;
    list(): Promise<SyscallResult<"ckpt.list">>;
  };
  /** The raw transport, for syscalls by name. */
  call(name: SyscallName, args: unknown): Promise<unknown>;
}

/** A capability as `cap.list` returns it: its record fields and its text form. */
export type { CapabilityView };

/** A model reply as `model.complete` returns it. */
export type ModelReply = SyscallResult<"model.complete">;

/** Builds the `sys` object over a transport (a {@link SyscallChannel}'s `call`). */
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

/** The two ends of the channel the libc calls through. */
export interface SyscallChannel {
  /** Posts one call and settles with its reply; what `createSys` is given. */
  call: Transport;
  /** Settles the call a reply answers; a reply to no pending call is ignored. */
  receive(reply: SyscallReply): void;
}

/** A channel posting each call with `post` (to the cell, in a Worker). */
export function createChannel(
  post: (message: Extract<WorkerToCell, { t: "syscall" }>) => void,
): SyscallChannel {
  const pending = new Map<
    number,
    { resolve: (value: unknown) => void; reject: (error: unknown) => void }
  >();
  let nextId = 1;
  return {
    call: (name, args) =>
      new Promise((resolve, reject) => {
        const id = nextId++;
        pending.set(id, { resolve, reject });
        post({ t: "syscall", id, name, args });
      }),
    receive(reply: SyscallReply): void {
      const waiter = pending.get(reply.id);
      if (!waiter) return;
      pending.delete(reply.id);
      if (reply.ok) waiter.resolve(reply.value);
      else waiter.reject(new SysError(reply.error.code, reply.error.message));
    },
  };
}
