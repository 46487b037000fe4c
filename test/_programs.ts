/**
 * Helpers for kernel behaviour tests: program sources built around an
 * `attempt` helper that turns a refused syscall into a plain result, hooks
 * on the broker that let a test observe or hold a syscall without sleeping,
 * and readers of what the kernel recorded about a process.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { SyscallRequest } from "../broker/abi.ts";
import type { AuditRecord } from "../broker/audit.ts";
import type { CallContext } from "../broker/broker.ts";
import type { JournalRecord } from "../broker/journal.ts";
import type { AgentImage } from "../runtime/image.ts";
import type { Kernel, KernelOptions, SpawnOptions } from "../runtime/kernel.ts";
import { type Harness, withHarness } from "./_harness.ts";
import { END_STATES, type ProcessRecord, type ProcessState } from "../runtime/process_table.ts";

/** What `attempt(() => sys.x(...))` gives a program: the value, or the error code and message. */
export type Attempt<T = unknown> =
  | { ok: true; value: T }
  | { ok: false; code: string; message: string };

/** Source of the `attempt` helper that every {@link program} can use. */
const ATTEMPT = `const attempt = async (f) => {
  try { return { ok: true, value: await f() }; }
  catch (e) { return { ok: false, code: e.code, message: e.message }; }
};`;

/** Asserts that `attempt` (an {@link Attempt} a program returned) failed with `code`, and its message matches. */
export function failed(attempt: unknown, code: string, message?: RegExp): void {
  const a = attempt as Attempt;
  assert.equal(a.ok, false, `expected ${code}, got ${JSON.stringify(a)}`);
  if (!a.ok) {
    assert.equal(a.code, code, a.message);
    if (message) assert.match(a.message, message);
  }
}

/** Asserts that `attempt` (an {@link Attempt} a program returned) succeeded; returns its value. */
export function succeeded<T = unknown>(attempt: unknown): T {
  const a = attempt as Attempt<T>;
  assert.equal(a.ok, true, `expected success, got ${JSON.stringify(a)}`);
  return (a as { value: T }).value;
}

/**
 * An entry module whose `main(sys, input)` runs `body`; `attempt(fn)`
 * is in scope and never throws.
 *
 * @example
 * ```ts ignore
 * const source = program(`return await attempt(() => sys.fs.read("a.txt"));`);
 * ```
 */
export function program(body: string): string {
  return `${ATTEMPT}\nexport default async function main(sys, input) {\n${body}\n}\n`;
}

/** A program that makes one syscall and then idles until it is stopped. */
export const IDLE: string = program(`await sys.time.now();\nawait new Promise(() => {});`);

/** Which calls a broker hook applies to. */
export type CallMatch = (ctx: Omit<CallContext, "argsDigest">, request: SyscallRequest) => boolean;

/** What the broker's `dispatch` resolves with. */
export type DispatchResult = Awaited<ReturnType<Kernel["broker"]["dispatch"]>>;

interface Hook {
  before?: (ctx: Omit<CallContext, "argsDigest">, request: SyscallRequest) => Promise<void>;
  after?: (
    ctx: Omit<CallContext, "argsDigest">,
    request: SyscallRequest,
    reply: DispatchResult,
  ) => void;
}

/** The hooks on one kernel's broker, and the calls it is handling. */
interface Hooked {
  hooks: Set<Hook>;
  inFlight: Set<Promise<unknown>>;
}

const hooked = new WeakMap<Kernel, Hooked>();

/** Wraps the kernel's broker once, so hooks can be added and calls tracked. */
function hookedBroker(kernel: Kernel): Hooked {
  let state = hooked.get(kernel);
  if (state) return state;
  const created: Hooked = { hooks: new Set(), inFlight: new Set() };
  state = created;
  hooked.set(kernel, created);
  const broker = kernel.broker;
  const inner = broker.dispatch.bind(broker);
  broker.dispatch = (ctx, request) => {
    const call = (async () => {
      for (const h of [...created.hooks]) await h.before?.(ctx, request);
      const reply = await inner(ctx, request);
      for (const h of [...created.hooks]) h.after?.(ctx, request, reply);
      return reply;
    })();
    created.inFlight.add(call);
    call.then(() => created.inFlight.delete(call), () => created.inFlight.delete(call));
    return call;
  };
  return created;
}

/**
 * Adds a hook around the kernel's broker: `before` runs ahead of every call
 * and `after` once its reply is known. Returns a function that removes it.
 */
function hookBroker(kernel: Kernel, hook: Hook): () => void {
  const { hooks } = hookedBroker(kernel);
  hooks.add(hook);
  return () => {
    hooks.delete(hook);
  };
}

/**
 * Resolves with the reply of the first call matching `match` once the
 * broker has answered it.
 *
 * @example
 * ```ts ignore
 * const started = afterSyscall(kernel, (ctx, req) => ctx.pid === pid && req.name === "time.now");
 * kernel.start(pid);
 * await started;
 * ```
 */
export function afterSyscall(kernel: Kernel, match: CallMatch): Promise<DispatchResult> {
  return new Promise((resolve) => {
    let done = false;
    const unhook = hookBroker(kernel, {
      after: (ctx, request, reply) => {
        if (done || !match(ctx, request)) return;
        done = true;
        unhook();
        resolve(reply);
      },
    });
  });
}

/** A held call: `reached` resolves when it arrives, `release()` lets it through. */
export interface Gate {
  /** Resolves when the first matching call has arrived (and is being held). */
  reached: Promise<void>;
  /** Lets the held call (and every later matching one) through. */
  release(): void;
}

/**
 * Holds every call matching `match` before the broker sees it, until
 * `release()`; a test orders events across processes with it instead of
 * sleeping.
 */
export function holdSyscall(kernel: Kernel, match: CallMatch): Gate {
  let arrived!: () => void;
  let open!: () => void;
  const reached = new Promise<void>((resolve) => arrived = resolve);
  const released = new Promise<void>((resolve) => open = resolve);
  const unhook = hookBroker(kernel, {
    before: async (ctx, request) => {
      if (!match(ctx, request)) return;
      arrived();
      await released;
    },
  });
  return {
    reached,
    release: () => {
      unhook();
      open();
    },
  };
}

/** Resolves with the record once `pid` is in `state` (or has ended, whichever first). */
export function whenState(
  kernel: Kernel,
  pid: number,
  state: ProcessState,
): Promise<ProcessRecord> {
  return new Promise((resolve, reject) => {
    const settle = (record: ProcessRecord) => {
      if (record.state !== state && !END_STATES.has(record.state)) return false;
      unsubscribe();
      resolve(record);
      return true;
    };
    const unsubscribe = kernel.processes.subscribe((record) => {
      if (record.pid === pid) settle(record);
    });
    kernel.processes.require(pid).then(settle, (error) => {
      unsubscribe();
      reject(error);
    });
  });
}

/** The audit records of `pid`, after flushing the journal. */
export async function auditOf(kernel: Kernel, pid: number): Promise<AuditRecord[]> {
  await kernel.journal.flush();
  const out: AuditRecord[] = [];
  for await (const record of kernel.audit.list({ pid })) out.push(record);
  return out;
}

/** The journal records of `pid` in seq order, after flushing the journal. */
export async function journalOf(kernel: Kernel, pid: number): Promise<JournalRecord[]> {
  await kernel.journal.flush();
  const out: JournalRecord[] = [];
  for await (const entry of kernel.store.kv.list<JournalRecord>({ prefix: ["journal", pid] })) {
    out.push(entry.value);
  }
  return out;
}

/**
 * Everything the kernel keeps about `pid` as one string (its record, audit
 * and journal records, the program's output), to show some bytes are absent.
 */
export async function everythingAbout(kernel: Kernel, pid: number): Promise<string> {
  const parts: unknown[] = [await kernel.processes.get(pid)];
  parts.push(await auditOf(kernel, pid), await journalOf(kernel, pid));
  parts.push(kernel.executionOf(pid)?.slot?.cell.output ?? []);
  return JSON.stringify(parts);
}

/**
 * Like `Harness.run`, but once the process has exited it also waits until
 * the broker has finished its `proc.exit` call, so the journal and audit
 * records of every call are queued (`waitFor` resolves as soon as the state
 * changes, before the exit call's own records are written).
 */
export async function runRecorded(
  h: Harness,
  source: string,
  options: Omit<Partial<SpawnOptions>, "image"> & { image?: Partial<AgentImage> } = {},
): Promise<ProcessRecord> {
  const { image, ...spawn } = options;
  const tag = await h.program(`recorded-${++recorded}`, source, image);
  const proc = await h.kernel.spawn({ image: tag, workspace: h.workspace, ...spawn });
  const exited = afterSyscall(
    h.kernel,
    (ctx, request) => ctx.pid === proc.pid && request.name === "proc.exit",
  );
  h.kernel.start(proc.pid);
  const end = await h.kernel.waitFor(proc.pid);
  if (end.state === "exited") await exited;
  return end;
}

let recorded = 0;

/**
 * Runs `body` with a fresh harness. Before the harness closes the kernel, it
 * kills every process still alive and waits until the broker has answered
 * every call it was handling, so that no call outlives the journal.
 */
export async function withKernel(
  body: (h: Harness) => Promise<void>,
  options: KernelOptions = {},
): Promise<void> {
  await withHarness(async (h) => {
    const { inFlight } = hookedBroker(h.kernel);
    try {
      await body(h);
    } finally {
      for (const proc of await h.kernel.processes.list()) {
        if (END_STATES.has(proc.state)) continue;
        await h.kernel.signal(proc.pid, "kill").catch(() => {});
      }
      while (inFlight.size) await Promise.allSettled([...inFlight]);
    }
  }, options);
}
