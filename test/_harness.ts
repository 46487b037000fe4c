/**
 * Test harness: a kernel over an in-memory store with a temp workspace, and
 * helpers to register and run program images.
 *
 * @module
 */

import { join } from "node:path";
import type { AgentImage } from "../runtime/image.ts";
import { Kernel, type KernelOptions, type SpawnOptions } from "../runtime/kernel.ts";
import type { ProcessRecord, ProcessState } from "../runtime/process_table.ts";

/** What a test gets. */
export interface Harness {
  kernel: Kernel;
  /** The real path of a fresh workspace directory. */
  workspace: string;
  /** A scratch directory outside the workspace. */
  outside: string;
  /** Registers a program image whose entry module is `source`; returns its tag. */
  program(name: string, source: string, image?: Partial<AgentImage>): Promise<string>;
  /** Registers and runs a program to its end. */
  run(
    source: string,
    options?: Omit<Partial<SpawnOptions>, "image"> & { image?: Partial<AgentImage> },
  ): Promise<ProcessRecord>;
}

let counter = 0;

/** Runs `body` with a fresh harness and cleans up after it. */
export async function withHarness(
  body: (h: Harness) => Promise<void>,
  options: KernelOptions = {},
): Promise<void> {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-test-" }));
  const workspace = join(root, "ws");
  const outside = join(root, "outside");
  await Deno.mkdir(workspace);
  await Deno.mkdir(outside);
  // Every result a handler returns must fit its declared type. A blocked
  // process parks at once (these tests are about replay) unless a test
  // asks for a grace period (or LIBOS_TEST_WAIT_GRACE_MS gives one to all).
  const kernel = await Kernel.open({
    store: ":memory:",
    checkResults: true,
    waitGraceMs: Number(Deno.env.get("LIBOS_TEST_WAIT_GRACE_MS") ?? 0),
    ...options,
  });
  const program: Harness["program"] = async (name, source, image = {}) => {
    const registered = await kernel.images.register({
      name,
      version: "1.0.0",
      entry: "./main.ts",
      tools: [],
      capabilities: [],
      policy: {},
      ...image,
    } as AgentImage, { entrySource: source });
    return registered.tag;
  };
  const h: Harness = {
    kernel,
    workspace,
    outside,
    program,
    run: async (source, options = {}) => {
      const { image, ...spawn } = options;
      const tag = await program(`prog-${++counter}`, source, image);
      return await kernel.run({ image: tag, workspace, ...spawn });
    },
  };
  try {
    await body(h);
  } finally {
    await kernel.close();
    await Deno.remove(root, { recursive: true });
  }
}

/** Resolves when `pid` reaches `state` (checked now and on every transition). */
export function reach(h: Harness, pid: number, state: ProcessState): Promise<ProcessRecord> {
  return new Promise((resolve) => {
    const unsubscribe = h.kernel.processes.subscribe((record) => {
      if (record.pid === pid && record.state === state) {
        unsubscribe();
        resolve(record);
      }
    });
    h.kernel.processes.get(pid).then((record) => {
      if (record?.state === state) {
        unsubscribe();
        resolve(record);
      }
    });
  });
}
