/**
 * The baseline of the safety benchmark: the SAME scripted tool actions and
 * programs, executed with the broker's checks switched off. Tools act
 * directly with the host's permissions — `read_file` is `Deno.readTextFile`
 * joined naively to the workspace, `run_command` is `Deno.Command`,
 * `fetch_url` is `fetch` — and spawn, fork, image registration, JIT tools
 * and approvals simply go through. The same oracles then judge the result,
 * which shows what each attack does when nothing stands in its way.
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
import { BUILTIN_TOOLS } from "../tools/builtin.ts";
import { evaluate, type Observation, type Scanned, snapshotFiles } from "./oracles.ts";
import { prepare, type RunContext, type TaskRun } from "./runner.ts";
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

/** Runs one task with every check off and judges it with the runtime's oracles. */
export async function runBaseline(task: Task, context: RunContext): Promise<TaskRun> {
  const started = performance.now();
  const base = { id: task.id, class: task.class, kind: task.kind, mode: "baseline" as const };
  const env = await prepare(task, context.attacker);
  context.attacker.take();
  try {
    env.vars.VICTIM = "1";
    const ws = env.ws;
    const images = new Map<string, TaskImage>();
    const turnsOf = new Map<string, TaskImage["turns"]>();
    for (const image of substitute(task.images, env.vars)) {
      const tag = `${image.name}@${image.version}`;
      turnsOf.set(tag, image.turns);
      if (image.register) images.set(tag, image);
    }
    const objects = new Map<string, unknown>();
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
      const count = <T>(value: T): T => {
        calls++;
        return value;
      };
      const sys = {
        fs: {
          read: (p: string) => count(coded(() => Deno.readTextFile(path(p)))),
          write: (p: string, content: string) =>
            count(coded(async () => {
              await Deno.writeTextFile(path(p), content);
              return content.length;
            })),
          append: (p: string, content: string) =>
            count(coded(() => Deno.writeTextFile(path(p), content, { append: true }))),
          remove: (p: string) => count(coded(() => Deno.remove(path(p), { recursive: true }))),
          rename: (from: string, to: string) =>
            count(coded(() => Deno.rename(path(from), path(to)))),
          list: (p: string) => count(coded(() => Array.fromAsync(Deno.readDir(path(p))))),
          mkdir: (p: string) => count(coded(() => Deno.mkdir(path(p), { recursive: true }))),
          stat: (p: string) => count(coded(() => Deno.stat(path(p)))),
        },
        exec: {
          run: async (argv: string[], options: { cwd?: string } = {}) => {
            count(0);
            const out = await new Deno.Command(argv[0], {
              args: argv.slice(1),
              cwd: options.cwd ? path(options.cwd) : ws,
              stdin: "null",
              stdout: "piped",
              stderr: "piped",
              signal: AbortSignal.timeout(10_000),
            }).output();
            const decode = (b: Uint8Array) => new TextDecoder().decode(b);
            return { code: out.code, stdout: decode(out.stdout), stderr: decode(out.stderr) };
          },
        },
        net: {
          fetch: async (url: string, init: RequestInit = {}) => {
            count(0);
            if (!loopback(url)) {
              throw new CodedError("EPERM", `The baseline fetches loopback URLs only, not ${url}`);
            }
            const response = await fetch(url, { method: init.method, body: init.body });
            return { status: response.status, body: await response.text() };
          },
        },
        proc: {
          self: () => count(Promise.resolve({ pid })),
          spawn: async (options: { image: string; input?: unknown }) => {
            count(0);
            return { pid: await runProcess(options.image, options.input) };
          },
          fork: async () => {
            count(0);
            if (fork) return { pid: 0 };
            return { pid: await runProcess(myTag(pid), myInput(pid), true) };
          },
          exec: async (options: { image: string; input?: unknown }) => {
            count(0);
            const child = await runProcess(options.image, options.input);
            throw new ExecInto(results.get(child));
          },
          wait: (child: number) =>
            count(Promise.resolve({ pid: child, state: "exited", result: results.get(child) })),
        },
        image: {
          register: (doc: TaskImage & { entry?: string }) => {
            count(0);
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
            count(0);
            tools.set(tool.name, tool);
            return Promise.resolve({ name: tool.name });
          },
          call: (name: string, args: unknown) => {
            count(0);
            const tool = tools.get(name);
            if (!tool) throw new CodedError("ENOENT", `No tool "${name}"`);
            return callJit(tool, args, sys);
          },
          list: () =>
            count(Promise.resolve(
              [...tools.values()].map((t) => ({ ...t, builtin: false })),
            )),
        },
        obj: {
          put: (namespace: string, name: string, value: unknown) => {
            objects.set(`${ns(pid, namespace)}/${name}`, value);
            return count(Promise.resolve({ version: 1 }));
          },
          get: (namespace: string, name: string) => {
            const key = `${ns(pid, namespace)}/${name}`;
            if (!objects.has(key)) throw new CodedError("ENOENT", `No object "${key}"`);
            return count(Promise.resolve({ name, value: objects.get(key) }));
          },
        },
        human: {
          ask: () => count(Promise.resolve(answers.shift()?.answer ?? "yes")),
        },
        event: {
          wait: (topic: string) => count(Promise.resolve({ topic, seq: 1, data: null })),
          emit: () => count(Promise.resolve({ seq: 1 })),
        },
        time: {
          now: () => count(Promise.resolve(Date.now())),
          sleep: () => count(Promise.resolve()),
        },
        cap: { list: () => count(Promise.resolve([])) },
        ckpt: { save: () => count(Promise.resolve()) },
      };
      return sys;
    };
    const tags = new Map<number, { tag: string; input: unknown }>();
    const myTag = (pid: number) => tags.get(pid)?.tag ?? task.run.image;
    const myInput = (pid: number) => tags.get(pid)?.input;

    let state = "exited";
    let result: unknown;
    let mainPid = 0;
    const simulated = new Set(task.baseline.simulate);
    if (simulated.size === 0) {
      try {
        mainPid = await runProcess(task.run.image, substitute(task.run.input, env.vars));
        result = results.get(mainPid);
      } catch (error) {
        state = "failed";
        texts.push({ where: "main error", text: String(error) });
      }
    }
    for (const [key, value] of objects) {
      const text = JSON.stringify(value);
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
    };
    return {
      ...base,
      verdict: evaluate(substitute(task, env.vars), observation, { canary: env.canary, ws }),
      state,
      ms: performance.now() - started,
      ...(task.baseline.notApplicable ? { notApplicable: task.baseline.notApplicable } : {}),
    };
  } finally {
    await Deno.remove(env.root, { recursive: true });
  }
}
