/**
 * The baseline of the safety benchmark: the SAME scripted tool actions and
 * programs, executed with the broker's checks switched off. Tools act
 * directly with the host's permissions — `read_file` is `Deno.readTextFile`
 * joined naively to the workspace, `run_command` is `Deno.Command`,
 * `fetch_url` is `fetch` — and spawn, fork, image registration, JIT tools
 * and approvals simply go through. The same oracles then judge the result,
 * which shows what each attack does when nothing stands in its way.
 *
 * The baseline also keeps what an unchecked host would: a scripted model
 * behind `model.complete` (the task's own, counting the tokens it serves),
 * an audit trail written as it comes (one line per call, nothing escaped),
 * Object Memory types checked in the host (a `pattern` runs there), and the
 * operator's `await_file` and `kill` steps (a kill stops waiting for the
 * process and aborts nothing it started).
 *
 * Only loopback URLs are fetched; the benchmark sends nothing beyond
 * 127.0.0.1.
 *
 * @example
 * ```ts ignore
 * import { runBaseline } from "./baseline.ts";
 * const run = await runBaseline(task, { attacker });
 * console.log(run.verdict.unauthorized.length > 0); // the attack worked
 * ```
 *
 * @module
 */

import { isAbsolute, join } from "node:path";
import type { Message } from "../runtime/model.ts";
import { BUILTIN_TOOLS } from "../tools/builtin.ts";
import {
  evaluate,
  hostCacheWrites,
  hostEnvironment,
  type Observation,
  type Scanned,
  snapshotFiles,
  taskPath,
  watchGrowth,
  watchStalls,
} from "./oracles.ts";
import {
  exposeHostSecret,
  growthPaths,
  prepare,
  type RunContext,
  TaskModel,
  type TaskRun,
} from "./runner.ts";
import { substitute, type Task, type TaskImage } from "./task.ts";

/** Most processes a baseline run creates before it stops a runaway tree. */
export const BASELINE_MAX_PROCESSES = 50;

interface JitTool {
  name: string;
  description: string;
  input: Record<string, unknown>;
  source: string;
}

class CodedError extends Error {
  code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

class ExecInto {
  constructor(readonly result: unknown) {}
}

async function coded<T>(action: () => Promise<T>): Promise<T> {
  try {
    return await action();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) throw new CodedError("ENOENT", String(error));
    if (error instanceof Deno.errors.AlreadyExists) throw new CodedError("EEXIST", String(error));
    throw error;
  }
}

function moduleUrl(source: string): string {
  const bytes = new TextEncoder().encode(source);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return "data:application/typescript;base64," + btoa(binary);
}

function loopback(url: string): boolean {
  const host = new URL(url).hostname;
  return host === "127.0.0.1" || host === "localhost" || host === "[::1]";
}

/**
 * Checks `value` against the parts of a JSON Schema an unchecked host
 * would run as given: `type`, `pattern` (compiled and run right here),
 * `properties` and `required`.
 */
function conforms(schema: Record<string, unknown>, value: unknown): boolean {
  const type = schema.type;
  if (type === "string" && typeof value !== "string") return false;
  if (type === "object" && (typeof value !== "object" || value === null)) return false;
  if (typeof schema.pattern === "string" && typeof value === "string") {
    if (!new RegExp(schema.pattern, "u").test(value)) return false;
  }
  if (schema.properties && typeof value === "object" && value !== null) {
    for (const [key, inner] of Object.entries(schema.properties as Record<string, unknown>)) {
      const field = (value as Record<string, unknown>)[key];
      if (field !== undefined && !conforms(inner as Record<string, unknown>, field)) return false;
    }
  }
  const required = Array.isArray(schema.required) ? schema.required as string[] : [];
  return required.every((key) => typeof value === "object" && value !== null && key in value);
}

/** Runs one task with every check off and judges it with the runtime's oracles. */
export async function runBaseline(task: Task, context: RunContext): Promise<TaskRun> {
  const started = performance.now();
  const base = { id: task.id, class: task.class, kind: task.kind, mode: "baseline" as const };
  const env = await prepare(task, context.attacker);
  context.attacker.take();
  const since = Date.now();
  const hideHostSecret = exposeHostSecret(task, env.canary);
  const stalls = watchStalls();
  // Stops what a killed process left running, once the oracles have looked.
  const cleanup = new AbortController();
  let main: Promise<unknown> = Promise.resolve();
  try {
    env.vars.VICTIM = "1";
    const ws = env.ws;
    const images = new Map<string, TaskImage>();
    const turnsOf = new Map<string, TaskImage["turns"]>();
    const taskImages = substitute(task.images, env.vars);
    const model = new TaskModel(taskImages);
    for (const image of taskImages) {
      const tag = `${image.name}@${image.version}`;
      turnsOf.set(tag, image.turns);
      if (image.register) images.set(tag, image);
    }
    const objects = new Map<string, unknown>();
    const types = new Map<string, Record<string, unknown>>();
    const seeded = new Map<string, string>();
    for (const o of substitute(task.objects, env.vars)) {
      objects.set(`${o.namespace}/${o.name}`, o.value);
      seeded.set(`${o.namespace}/${o.name}`, JSON.stringify(o.value));
    }
    const answers = [...(task.human?.answers ?? [])];
    const texts: Scanned[] = [];
    const toolResults: Observation["toolResults"] = [];
    const results = new Map<number, unknown>();
    let processes = task.victim ? 1 : 0;
    let calls = 0;
    let toolRuns = 0;
    const trail: { pid: number; syscall: string; args: string }[] = [];
    const jit = new Map<number, Map<string, JitTool>>();
    const path = (p: string) => isAbsolute(p) ? p : join(ws, p);
    const ns = (pid: number, namespace: string) => namespace === "self" ? `proc/${pid}` : namespace;
    const filesBefore = await snapshotFiles([env.ws, env.outside]);

    const runProcess = async (tag: string, input: unknown, forkChild = false): Promise<number> => {
      if (++processes > BASELINE_MAX_PROCESSES) {
        throw new CodedError("EAGAIN", `The baseline stops at ${BASELINE_MAX_PROCESSES} processes`);
      }
      const pid = processes;
      tags.set(pid, { tag, input });
      const image = images.get(tag);
      if (!image) throw new CodedError("ENOENT", `No image "${tag}"`);
      const tools = new Map<string, JitTool>();
      jit.set(pid, tools);
      const sys = makeSys(pid, tools, forkChild ? { tag, input } : undefined);
      let result: unknown;
      try {
        if (image.source !== undefined) {
          const module = await import(moduleUrl(image.source));
          result = await module.default(sys, input);
        } else {
          result = await agentLoop(turnsOf.get(tag) ?? [], tools, sys);
        }
      } catch (error) {
        if (!(error instanceof ExecInto)) throw error;
        result = error.result;
      }
      results.set(pid, result ?? null);
      texts.push({ where: `result of pid ${pid}`, text: JSON.stringify(result ?? null) });
      return pid;
    };

    const callJit = async (tool: JitTool, args: unknown, sys: unknown) => {
      toolRuns++;
      const module = await import(moduleUrl(tool.source));
      return await module.run(args, sys);
    };

    const agentLoop = async (
      turns: TaskImage["turns"],
      tools: Map<string, JitTool>,
      sys: ReturnType<typeof makeSys>,
    ): Promise<unknown> => {
      for (const turn of turns) {
        for (const c of turn.tool_calls ?? []) {
          const args = c.arguments ?? {};
          let result: unknown;
          try {
            const shadow = tools.get(c.name);
            const builtin = (BUILTIN_TOOLS as Record<string, typeof BUILTIN_TOOLS.exit>)[c.name];
            if (shadow) result = { result: await callJit(shadow, args, sys) };
            else if (builtin) result = await builtin.run(args, sys as never);
            else result = { error: { code: "ENOSYS", message: `Unknown tool "${c.name}"` } };
          } catch (error) {
            const code = (error as { code?: string }).code ?? "EINVAL";
            result = { error: { code, message: String(error) } };
          }
          const content = JSON.stringify(result ?? null);
          toolResults.push({ tool: c.name, content });
          texts.push({ where: `tool result ${c.name}`, text: content });
          if (c.name === "exit") return args.result ?? null;
        }
        if (turn.exit) break;
      }
      return turns.at(-1)?.content ?? null;
    };

    const makeSys = (
      pid: number,
      tools: Map<string, JitTool>,
      fork?: { tag: string; input: unknown },
    ) => {
      /** Counts a call of the main process's tree and writes its trail line as it comes. */
      const audited = <T>(syscall: string, args: unknown, value: T): T => {
        calls++;
        trail.push({ pid, syscall, args: JSON.stringify(args ?? null) ?? "null" });
        return value;
      };
      const tag = () => myTag(pid);
      const sys = {
        fs: {
          read: (p: string) =>
            audited("fs.read", { path: p }, coded(() => Deno.readTextFile(path(p)))),
          write: (p: string, content: string) =>
            audited(
              "fs.write",
              { path: p },
              coded(async () => {
                await Deno.writeTextFile(path(p), content);
                return content.length;
              }),
            ),
          append: (p: string, content: string) =>
            audited(
              "fs.append",
              { path: p },
              coded(() => Deno.writeTextFile(path(p), content, { append: true })),
            ),
          remove: (p: string) =>
            audited(
              "fs.remove",
              { path: p },
              coded(() => Deno.remove(path(p), { recursive: true })),
            ),
          rename: (from: string, to: string) =>
            audited("fs.rename", { from, to }, coded(() => Deno.rename(path(from), path(to)))),
          list: (p: string) =>
            audited("fs.list", { path: p }, coded(() => Array.fromAsync(Deno.readDir(path(p))))),
          mkdir: (p: string) =>
            audited("fs.mkdir", { path: p }, coded(() => Deno.mkdir(path(p), { recursive: true }))),
          stat: (p: string) => audited("fs.stat", { path: p }, coded(() => Deno.stat(path(p)))),
        },
        exec: {
          run: async (argv: string[], options: { cwd?: string } = {}) => {
            audited("exec.run", { argv, ...options }, 0);
            const out = await new Deno.Command(argv[0], {
              args: argv.slice(1),
              cwd: options.cwd ? path(options.cwd) : ws,
              stdin: "null",
              stdout: "piped",
              stderr: "piped",
              signal: AbortSignal.any([AbortSignal.timeout(10_000), cleanup.signal]),
            }).output();
            const decode = (b: Uint8Array) => new TextDecoder().decode(b);
            return { code: out.code, stdout: decode(out.stdout), stderr: decode(out.stderr) };
          },
        },
        net: {
          fetch: async (url: string, init: RequestInit = {}) => {
            audited("net.fetch", { url, method: init.method }, 0);
            if (!loopback(url)) {
              throw new CodedError("EPERM", `The baseline fetches loopback URLs only, not ${url}`);
            }
            const response = await fetch(url, { method: init.method, body: init.body });
            return { status: response.status, body: await response.text() };
          },
        },
        model: {
          complete: (request: { messages: Message[]; maxTokens?: number }) =>
            audited(
              "model.complete",
              request,
              model.complete({
                model: "scripted/default",
                image: tag(),
                pid,
                messages: request.messages,
                tools: [],
                ...(request.maxTokens === undefined ? {} : { maxTokens: request.maxTokens }),
              }),
            ),
        },
        proc: {
          self: () => audited("proc.self", {}, Promise.resolve({ pid })),
          spawn: async (options: { image: string; input?: unknown }) => {
            audited("proc.spawn", options, 0);
            return { pid: await runProcess(options.image, options.input) };
          },
          fork: async () => {
            audited("proc.fork", {}, 0);
            if (fork) return { pid: 0 };
            return { pid: await runProcess(myTag(pid), myInput(pid), true) };
          },
          exec: async (options: { image: string; input?: unknown }) => {
            audited("proc.exec", options, 0);
            const child = await runProcess(options.image, options.input);
            throw new ExecInto(results.get(child));
          },
          wait: (child: number) =>
            audited(
              "proc.wait",
              { pid: child },
              Promise.resolve({ pid: child, state: "exited", result: results.get(child) }),
            ),
        },
        image: {
          register: (doc: TaskImage & { entry?: string }) => {
            audited("image.register", { name: doc.name, version: doc.version }, 0);
            const tag = `${doc.name}@${doc.version}`;
            images.set(tag, {
              ...doc,
              source: undefined,
              turns: turnsOf.get(tag) ?? [],
              register: true,
            } as TaskImage);
            return Promise.resolve({ tag });
          },
        },
        tool: {
          register: (tool: JitTool) => {
            audited("tool.register", { name: tool.name }, 0);
            tools.set(tool.name, tool);
            return Promise.resolve({ name: tool.name });
          },
          call: (name: string, args: unknown) => {
            audited("tool.call", { name, args }, 0);
            const tool = tools.get(name);
            if (!tool) throw new CodedError("ENOENT", `No tool "${name}"`);
            return callJit(tool, args, sys);
          },
          list: () =>
            audited(
              "tool.list",
              {},
              Promise.resolve([...tools.values()].map((t) => ({ ...t, builtin: false }))),
            ),
        },
        obj: {
          put: (
            namespace: string,
            name: string,
            value: unknown,
            options: { type?: string } = {},
          ) =>
            audited(
              "obj.put",
              { namespace, name, ...options },
              Promise.resolve().then(() => {
                const type = options.type === undefined
                  ? undefined
                  : types.get(`${ns(pid, namespace)}/${options.type}`);
                if (options.type !== undefined && !type) {
                  throw new CodedError("ENOENT", `No type "${options.type}"`);
                }
                if (type && !conforms(type, value)) {
                  throw new CodedError("EINVAL", `The value does not fit type "${options.type}"`);
                }
                objects.set(`${ns(pid, namespace)}/${name}`, value);
                return { version: 1 };
              }),
            ),
          get: (namespace: string, name: string) => {
            audited("obj.get", { namespace, name }, 0);
            const key = `${ns(pid, namespace)}/${name}`;
            if (!objects.has(key)) throw new CodedError("ENOENT", `No object "${key}"`);
            return Promise.resolve({ name, value: objects.get(key) });
          },
          defineType: (namespace: string, name: string, schema: Record<string, unknown>) => {
            audited("obj.define_type", { namespace, name }, 0);
            types.set(`${ns(pid, namespace)}/${name}`, schema);
            return Promise.resolve({ namespace, name });
          },
        },
        human: {
          ask: () => audited("human.ask", {}, Promise.resolve(answers.shift()?.answer ?? "yes")),
        },
        event: {
          wait: (topic: string) =>
            audited("event.wait", { topic }, Promise.resolve({ topic, seq: 1, data: null })),
          emit: (topic: string) => audited("event.emit", { topic }, Promise.resolve({ seq: 1 })),
        },
        time: {
          now: () => audited("time.now", {}, Promise.resolve(Date.now())),
          sleep: (ms: number) => audited("time.sleep", { ms }, Promise.resolve()),
        },
        cap: {
          list: () => audited("cap.list", {}, Promise.resolve([])),
          delegate: (to: number, capability: string) =>
            audited("cap.delegate", { pid: to, capability }, Promise.resolve()),
        },
        msg: {
          send: (to: number, data: unknown) =>
            audited("msg.send", { pid: to, data }, Promise.resolve()),
          recv: () => audited("msg.recv", {}, Promise.resolve({ from: 0, data: null })),
        },
        ckpt: { save: () => audited("ckpt.save", {}, Promise.resolve()) },
        call: (name: string, args: unknown) => {
          audited(name, args, 0);
          return Promise.reject(new CodedError("ENOSYS", `No syscall "${name}"`));
        },
      };
      return sys;
    };
    const tags = new Map<number, { tag: string; input: unknown }>();
    const myTag = (pid: number) => tags.get(pid)?.tag ?? task.run.image;
    const myInput = (pid: number) => tags.get(pid)?.input;

    let state = "exited";
    let result: unknown;
    const simulated = new Set(task.baseline.simulate);
    if (simulated.size === 0) {
      let settled = false;
      main = runProcess(task.run.image, substitute(task.run.input, env.vars)).then(
        (pid) => {
          result = results.get(pid);
        },
        (error) => {
          state = "failed";
          texts.push({ where: "main error", text: String(error) });
        },
      ).finally(() => settled = true);
      let killed = false;
      // Of the operator's steps, only these touch the world without the runtime.
      for (const step of substitute(task.host, env.vars)) {
        if (step.do === "await_file") {
          const file = taskPath(ws, step.path);
          const deadline = performance.now() + 30_000;
          while (!settled && performance.now() < deadline) {
            if (await Deno.lstat(file).then(() => true, () => false)) break;
            await new Promise((r) => setTimeout(r, 10));
          }
        } else if (step.do === "kill") {
          killed = true;
          break;
        }
      }
      if (killed) state = "killed";
      else await main;
    }
    if (task.victimSource !== undefined) {
      // The bystander (pid 1) runs its program too, with nothing to stop it.
      const program = await import(moduleUrl(substitute(task.victimSource, env.vars)));
      const outcome = await Promise.resolve(program.default(makeSys(1, new Map())))
        .catch((error: unknown) => String(error));
      texts.push({ where: "result of the bystander", text: JSON.stringify(outcome ?? null) });
    }
    const longestStallMs = stalls.stop();
    const grew = await watchGrowth(growthPaths(task, ws));
    let storedBytes = 0;
    for (const [key, value] of objects) {
      const text = JSON.stringify(value) ?? "null";
      storedBytes += text.length;
      if (seeded.get(key) !== text) texts.push({ where: `object ${key}`, text });
    }
    const fileTexts = new Map<string, string>();
    const observation: Observation = {
      filesBefore,
      filesAfter: await snapshotFiles([env.ws, env.outside], fileTexts),
      fileTexts,
      texts,
      toolResults,
      requests: context.attacker.take(),
      state,
      result,
      processes: processes - (task.victim ? 1 : 0),
      calls,
      denials: 0,
      objects: new Set(objects.keys()),
      images: new Set(images.keys()),
      simulated,
      hostCache: await hostCacheWrites(since),
      hostEnv: hostEnvironment(),
      modelTokens: model.tokens,
      toolRuns,
      storedBytes,
      grew,
      audit: {
        fields: trail.flatMap((line) => [line.syscall, line.args]),
        display: trail.map((line, i) => `${i + 1}  ${line.pid}  ${line.syscall}  ${line.args}`)
          .join("\n"),
      },
      longestStallMs,
    };
    return {
      ...base,
      verdict: evaluate(substitute(task, env.vars), observation, { canary: env.canary, ws }),
      state,
      ms: performance.now() - started,
      ...(task.baseline.notApplicable ? { notApplicable: task.baseline.notApplicable } : {}),
    };
  } finally {
    stalls.stop();
    hideHostSecret();
    cleanup.abort();
    await main;
    await Deno.remove(env.root, { recursive: true });
  }
}
