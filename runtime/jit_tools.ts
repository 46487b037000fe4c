/**
 * JIT tools (SPEC section 10): TypeScript a process registers at run time.
 * Registration checks the source (size, no imports or escape hatches, a
 * type check in a subprocess that runs nothing), stores it content-
 * addressed, and adds the tool to the registering process's table only;
 * registering grants nothing. A call runs the tool as a short-lived child
 * process in its own zero-permission cell, with the intersection of its
 * manifest and the caller's capabilities, and its own limits.
 *
 * Keys: `["tool", pid, name]` the table entry. The source lives in the
 * image registry, as the entry of a synthetic image `tool.<name>@<digest>`.
 *
 * @module
 */

import {
  formatCapability,
  intersectCapabilities,
  parseCapability,
  resolveScope,
} from "../broker/capability.ts";
import { canonicalJson, sha256Hex } from "../broker/digest.ts";
import { SyscallError } from "../broker/errors.ts";
import { compileSchema, SchemaError, type SchemaIssue } from "../broker/json_schema.ts";
import { describeIssue } from "../broker/schema_errors.ts";
import { BUILTIN_TOOL_CATALOG } from "./_tool_catalog.ts";
import { makePrivateDenoDir, removePrivateDenoDir } from "./deno_dir.ts";
import { makeHostTempDir, spawnHostChild } from "./host_children.ts";
import type { CapabilityStore } from "../broker/capability_store.ts";
import type { ParkedAudit } from "../broker/journal.ts";
import type { ProgramEntries } from "./program_entries.ts";
import type { AgentImage, ImageRegistry } from "./image.ts";
import type { ProcessRecord, ProcessTable } from "./process_table.ts";
import type { Store } from "./store.ts";
import { toolEntrySource, ToolModuleError } from "./tool_module.ts";
import type { ParkedCall } from "./waits.ts";

/** What the JIT tool tables need from the kernel. */
export interface JitToolKernel {
  /** The store the tool tables are kept in. */
  readonly store: Pick<Store, "kv">;
  /** The process table: a JIT tool's own process cannot register tools. */
  readonly processes: Pick<ProcessTable, "require">;
  /** The image registry, where a tool's source lives as a synthetic image. */
  readonly images: Pick<ImageRegistry, "get" | "register">;
  /** The capability store: a call passes on what the caller holds of the manifest. */
  readonly caps: Pick<CapabilityStore, "list" | "cachedHoldings">;
  /** The clock. */
  readonly now: () => number;
  /** The program entries: a tool's types are erased once it is registered. */
  readonly entries: Pick<ProgramEntries, "erase">;
  /**
   * Spawns the child process that runs one call of a tool; with `waitedBy`,
   * the caller blocks on that call in the commit that makes the child.
   */
  spawnChild(ppid: number, options: {
    image: string;
    input: unknown;
    capabilities: readonly string[];
    onParentExit: "kill";
    tool: { name: string; digest: string };
    waitedBy?: ParkedCall;
    waitedByAudit?: ParkedAudit;
    parentEntry?: Deno.KvEntry<ProcessRecord>;
  }): Promise<ProcessRecord>;
}

/** A registered JIT tool in a process's table. */
export interface JitTool {
  /** The name the tool is called by. */
  name: string;
  /** What the tool does, as the model reads it. */
  description: string;
  /** The JSON Schema of the tool's arguments. */
  input: Record<string, unknown>;
  /** The capabilities the tool may use, in text form (narrowed to the caller's at call time). */
  manifest: { capabilities: string[] };
  /** SHA-256 of the source. */
  digest: string;
  /** The synthetic image that runs it. */
  image: string;
  /** When the tool was registered, in ms since the epoch. */
  registeredAt: number;
}

/** What `tool.register` takes. */
export interface ToolRegistration {
  /** The name the tool is called by. */
  name: string;
  /** What the tool does, as the model reads it. */
  description: string;
  /** The JSON Schema of the tool's arguments. */
  input: Record<string, unknown>;
  /** The capabilities the tool may use, in text form. */
  manifest: { capabilities: string[] };
  /** The tool's TypeScript source. */
  source: string;
}

/** Limits every JIT tool call runs under. */
export const TOOL_LIMITS = { cpuMs: 5_000, memoryMb: 128, outputBytes: 64 * 1024 } as const;
/** Longest a JIT tool call may take, in ms. */
export const TOOL_WALL_MS = 60_000;
/** Largest JIT tool source, in bytes. */
export const MAX_TOOL_SOURCE = 64 * 1024;

const NAME = /^[a-z][a-z0-9_]{0,63}$/;

/** Most tool entries a host keeps copies of; past it the copies are dropped. */
const KNOWN_TOOLS = 4096;

/** Names a tool entry by its process and name. */
function _toolId(pid: number, name: string): string {
  return `${pid}/${name}`;
}

const FORBIDDEN: readonly [RegExp, string][] = [
  [/\bimport\b/, "imports are not allowed"],
  [/\brequire\s*\(/, "require() is not allowed"],
  [/\beval\b/, "eval is not allowed"],
  [/\bFunction\s*\(|\bnew\s+Function\b/, "the Function constructor is not allowed"],
  [/\bDeno\b/, "the Deno namespace is not allowed: use sys"],
  [/\bglobalThis\b|\bself\b|\bwindow\b/, "the global object is not allowed"],
  [
    /\bWorker\b|\bSharedArrayBuffer\b|\bAtomics\b|\bWebAssembly\b/,
    "workers, shared memory and WebAssembly are not allowed",
  ],
  [/\bfetch\s*\(/, "fetch is not allowed: use sys.net.fetch"],
  [/\b__libos/, "names that start with __libos are reserved"],
];

/** Checks a JIT tool's source without running it; throws `EINVAL` naming the first problem. */
export function checkToolSource(name: string, source: string): void {
  const bytes = new TextEncoder().encode(source).length;
  if (bytes > MAX_TOOL_SOURCE) {
    throw new SyscallError(
      "EINVAL",
      `Cannot register tool "${name}": its source is ${bytes} bytes, over ${MAX_TOOL_SOURCE}`,
    );
  }
  const code = source.replace(/\/\*[\s\S]*?\*\//g, "").replace(/\/\/[^\n]*/g, "");
  for (const [pattern, why] of FORBIDDEN) {
    if (pattern.test(code)) {
      throw new SyscallError("EINVAL", `Cannot register tool "${name}": ${why}`);
    }
  }
}

/**
 * Checks a JIT tool's source (see {@link checkToolSource}) and the shape of
 * its exports (see `tool_module.ts`); returns the entry module that runs it.
 * Throws `EINVAL` naming the first problem.
 */
export async function checkToolModule(name: string, source: string): Promise<string> {
  checkToolSource(name, source);
  try {
    return await toolEntrySource(source);
  } catch (error) {
    if (!(error instanceof ToolModuleError)) throw error;
    throw new SyscallError("EINVAL", `Cannot register tool "${name}": ${error.message}`);
  }
}

/** Most `deno check` subprocesses of JIT tools that run at once in a host; others wait their turn. */
export const MAX_TYPE_CHECKS = 2;
/** Longest a type check may take, in ms; then it is killed and the registration refused. */
export const TYPE_CHECK_MS = 60_000;
/** V8 heap of a type check, in MiB. */
const TYPE_CHECK_HEAP_MB = 512;

let _typeChecksRunning = 0;
const _typeChecksWaiting: (() => void)[] = [];

/** Runs `body` once fewer than {@link MAX_TYPE_CHECKS} type checks run, first come first served. */
async function _inTypeCheckSlot<T>(body: () => Promise<T>): Promise<T> {
  if (_typeChecksRunning < MAX_TYPE_CHECKS) _typeChecksRunning++;
  else await new Promise<void>((resolve) => _typeChecksWaiting.push(resolve));
  try {
    return await body();
  } finally {
    // The slot passes to the next waiter, or is freed.
    const next = _typeChecksWaiting.shift();
    if (next) next();
    else _typeChecksRunning--;
  }
}

/**
 * Type-checks a tool's source in a `deno check` subprocess (which runs no
 * tool code), with a private Deno cache: what the source makes Deno load
 * (a `/// <reference>` to a `data:` module) never reaches the host's. Each
 * check is a compiler run whose cost the source chooses, so at most
 * {@link MAX_TYPE_CHECKS} run at once (registrations in parallel take turns),
 * each with a bounded heap and killed after {@link TYPE_CHECK_MS}.
 */
function typeCheck(name: string, source: string): Promise<void> {
  return _inTypeCheckSlot(() => _typeCheck(name, source));
}

async function _typeCheck(name: string, source: string): Promise<void> {
  const dir = await makeHostTempDir("libos-tool-");
  const denoDir = await makePrivateDenoDir();
  try {
    await Deno.writeTextFile(`${dir}/tool.ts`, source);
    await Deno.writeTextFile(
      `${dir}/deno.json`,
      JSON.stringify({ compilerOptions: { strict: false } }),
    );
    const child = spawnHostChild(Deno.execPath(), {
      args: [
        "check",
        `--v8-flags=--max-old-space-size=${TYPE_CHECK_HEAP_MB}`,
        "--quiet",
        "--no-remote",
        "--no-npm",
        "--no-lock",
        "--config",
        `${dir}/deno.json`,
        `${dir}/tool.ts`,
      ],
      cwd: dir,
      stdout: "null",
      stderr: "piped",
      clearEnv: true,
      env: { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1", DENO_DIR: denoDir, HOME: denoDir },
    });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        child.kill("SIGKILL");
      } catch {
        // Already gone.
      }
    }, TYPE_CHECK_MS);
    const { code, stderr } = await child.output().finally(() => clearTimeout(timer));
    if (timedOut) {
      throw new SyscallError(
        "EINVAL",
        `Cannot register tool "${name}": its type check took longer than ${TYPE_CHECK_MS} ms`,
      );
    }
    if (code !== 0) {
      const first = new TextDecoder().decode(stderr).split("\n").find((l) =>
        /ERROR|error/.test(l)
      ) ?? "type check failed";
      throw new SyscallError(
        "EINVAL",
        `Cannot register tool "${name}": ${first.replaceAll(dir + "/", "").trim()}`,
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await removePrivateDenoDir(denoDir);
  }
}

/** Whether `tool` (with source digest `digest`) registers exactly what `entry` holds. */
function sameRegistration(entry: JitTool, tool: ToolRegistration, digest: string): boolean {
  return entry.digest === digest && entry.description === tool.description &&
    canonicalJson(entry.input) === canonicalJson(tool.input) &&
    canonicalJson(entry.manifest) === canonicalJson(tool.manifest);
}

/**
 * The JIT tool tables of a kernel.
 *
 * @example
 * ```ts ignore
 * await kernel.tools.register(pid, { name: "count", description: "…", input: { type: "object" },
 *   manifest: { capabilities: [] }, source: "export function run(args) { return 1; }" });
 * ```
 */
export class ToolTables {
  #kernel: JitToolKernel;
  /**
   * Entries read or registered by this host, by pid and name. An entry is
   * never changed or removed once stored (a registration under a taken
   * name is refused), so a copy is as good as a read.
   */
  #known = new Map<string, JitTool>();

  /** Tool tables of `kernel`. */
  constructor(kernel: JitToolKernel) {
    this.#kernel = kernel;
  }

  /** Registers a tool for `pid` after checking it; returns its entry. */
  async register(pid: number, tool: ToolRegistration): Promise<JitTool> {
    const kernel = this.#kernel;
    const proc = await kernel.processes.require(pid);
    if (proc.tool) {
      throw new SyscallError(
        "EPERM",
        `Cannot register tool "${tool.name}": a JIT tool cannot register tools`,
      );
    }
    if (!NAME.test(tool.name)) {
      throw new SyscallError(
        "EINVAL",
        `Cannot register tool "${tool.name}": names are lowercase letters, digits and _`,
      );
    }
    if (Object.hasOwn(BUILTIN_TOOL_CATALOG, tool.name)) {
      throw new SyscallError(
        "EEXIST",
        `Cannot register tool "${tool.name}": it would shadow a built-in tool`,
      );
    }
    try {
      compileSchema(tool.input);
    } catch (error) {
      if (!(error instanceof SchemaError)) throw error;
      throw new SyscallError(
        "EINVAL",
        `Cannot register tool "${tool.name}": in its input schema, ${error.message}`,
      );
    }
    for (const text of tool.manifest.capabilities) {
      try {
        parseCapability(text);
      } catch (error) {
        throw new SyscallError(
          "EINVAL",
          `Cannot register tool "${tool.name}": ${(error as Error).message}`,
        );
      }
    }
    const entrySource = await checkToolModule(tool.name, tool.source);
    const digest = await sha256Hex(tool.source);
    const existing = await this.get(pid, tool.name);
    if (existing) {
      // The same registration again (a redo after the host died between the
      // commit and its journaled outcome, or a program that registers twice)
      // answers what the first one did; anything else under that name is refused.
      if (sameRegistration(existing, tool, digest)) return existing;
      throw new SyscallError(
        "EEXIST",
        `Cannot register tool "${tool.name}": the process already has another tool of that name`,
      );
    }
    const image: AgentImage = {
      name: `tool.${tool.name.replaceAll("_", "-")}`,
      version: digest.slice(0, 16),
      description: tool.description.slice(0, 500),
      entry: "./tool.ts",
      tools: [],
      capabilities: tool.manifest.capabilities,
      policy: {},
      limits: { ...TOOL_LIMITS },
      budget: { wallMs: TOOL_WALL_MS },
    };
    const tag = `${image.name}@${image.version}`;
    let registered = await kernel.images.get(tag);
    if (!registered) {
      await typeCheck(tool.name, tool.source);
      registered = await kernel.images.register(image, { entrySource });
    }
    // Its first call then runs JavaScript already.
    await kernel.entries.erase(registered);
    const entry: JitTool = {
      name: tool.name,
      description: tool.description,
      input: tool.input,
      manifest: tool.manifest,
      digest,
      image: tag,
      registeredAt: kernel.now(),
    };
    await kernel.store.kv.set(["tool", pid, tool.name], entry);
    this.#remember(pid, entry);
    return entry;
  }

  /** One tool of `pid`'s table. */
  async get(pid: number, name: string): Promise<JitTool | undefined> {
    const known = this.#known.get(_toolId(pid, name));
    if (known) return known;
    const entry = (await this.#kernel.store.kv.get<JitTool>(["tool", pid, name])).value;
    if (!entry) return undefined;
    this.#remember(pid, entry);
    return entry;
  }

  #remember(pid: number, entry: JitTool): void {
    if (this.#known.size >= KNOWN_TOOLS) this.#known.clear();
    this.#known.set(_toolId(pid, entry.name), entry);
  }

  /** `pid`'s JIT tools, by name. */
  async list(pid: number): Promise<JitTool[]> {
    const out: JitTool[] = [];
    for await (const e of this.#kernel.store.kv.list<JitTool>({ prefix: ["tool", pid] })) {
      out.push(e.value);
    }
    return out;
  }

  /** Copies `from`'s table to `to` (fork). */
  async copy(from: number, to: number): Promise<void> {
    for (const tool of await this.list(from)) {
      await this.#kernel.store.kv.set(["tool", to, tool.name], tool);
    }
  }

  /**
   * Starts a call of `name` for `caller` (with `options.callerEntry`, its
   * stored entry as read for this call, which the child's create commit
   * checks instead of reading it again): a child process of the tool's
   * image with the manifest capabilities the caller itself holds. Returns
   * the child; the caller waits for it like for any child. With
   * `options.call` (the caller's `tool.call`), the caller is blocked on that call in the
   * commit that makes the child: one commit before the tool's first
   * instruction, and a crash leaves both or neither. With `options.audit`
   * (the call's audit entry), the call is audited in that commit too.
   */
  async start(
    caller: ProcessRecord,
    name: string,
    args: Record<string, unknown>,
    options: {
      call?: ParkedCall;
      audit?: ParkedAudit;
      callerEntry?: Deno.KvEntry<ProcessRecord>;
    } = {},
  ): Promise<ProcessRecord> {
    const kernel = this.#kernel;
    const { call, audit, callerEntry } = options;
    const tool = await this.get(caller.pid, name);
    if (!tool) {
      throw new SyscallError(
        "ENOENT",
        `Cannot call tool "${name}": the process has no such JIT tool`,
      );
    }
    // Compiled again on every call: a tool registered before a keyword was
    // refused is refused here, and no regular expression of its runs.
    let issue: SchemaIssue | undefined;
    try {
      issue = compileSchema(tool.input).check(args);
    } catch (error) {
      if (!(error instanceof SchemaError)) throw error;
      throw new SyscallError(
        "EINVAL",
        `Cannot call tool "${name}": its arguments cannot be checked: ${error.message}`,
      );
    }
    if (issue) {
      throw new SyscallError("EINVAL", `Cannot call tool "${name}": ${describeIssue(issue)}`);
    }
    // The intersection of manifest and caller, entry by entry, in every
    // attribute: `delegable` only when both are. Counted (one-shot) grants
    // never pass to a tool: a copy would double their uses. A caller's
    // capability that expires is not passed either: the child is given text,
    // which cannot carry an absolute expiry.
    // With the caller's entry, its copy of the caller's capabilities serves
    // (the create commit checks they are unchanged, and decides again from
    // the store when they are not: see `spawnChild`).
    const now = kernel.now();
    const cached = callerEntry && kernel.caps.cachedHoldings(caller.pid, now);
    const held = (cached?.capabilities ?? await kernel.caps.list(caller.pid, now)).filter((c) =>
      c.uses === undefined && c.expiresAt === undefined
    );
    const granted = new Set<string>();
    for (const text of tool.manifest.capabilities) {
      const wanted = resolveScope(parseCapability(text), { workspace: caller.workspace });
      for (const cap of held) {
        const both = intersectCapabilities(wanted, cap, now);
        if (!both) continue;
        const { expiresAt: _expiresAt, ...spec } = both;
        granted.add(formatCapability({ ...spec, ttlMs: wanted.ttlMs }));
      }
    }
    return await kernel.spawnChild(caller.pid, {
      image: tool.image,
      input: args,
      capabilities: [...granted],
      onParentExit: "kill",
      tool: { name, digest: tool.digest },
      ...(callerEntry ? { parentEntry: callerEntry } : {}),
      ...(call ? { waitedBy: call, waitedByAudit: audit } : {}),
    });
  }
}
