/**
 * The host program of the crash-recovery test (`crash_test.ts`), which runs
 * it as a subprocess and kills it with SIGKILL at random moments:
 *
 * ```sh
 * deno run --no-prompt --allow-read --allow-write --allow-run --allow-env \
 *   test/_crash_host.ts KV_PATH WORKSPACE COUNT
 * ```
 *
 * It opens the kernel over the KV file, registers the parent and child
 * images (registering again is a no-op), and on the first run (an empty
 * process table) spawns COUNT parents with inputs 1..COUNT and writes
 * `manifest.json` beside the KV file: each parent's pid, input and the id
 * of its one-shot grant. Every run then recovers whatever the store holds,
 * posts an event on topic `go` every 100 ms, and exits 0 once no live
 * process remains.
 *
 * @module
 */

import { dirname, join } from "node:path";
import { Kernel } from "../runtime/kernel.ts";

/** Tag of the image every parent runs. */
export const PARENT_TAG = "crash-parent@1.0.0";

/** Tag of the image each parent spawns once. */
export const CHILD_TAG = "crash-child@1.0.0";

/** What the first run writes beside the KV file, one entry per parent. */
export interface CrashManifest {
  parents: { pid: number; n: number; grant: string }[];
}

/** The result a parent returns. */
export interface ParentResult {
  n: number;
  /** Steps whose syscall answered `EUNCERTAIN`: `a`, `child` or `b`. */
  uncertain: string[];
  /** What the one-shot read returned. */
  grant: string;
}

/**
 * The parent program. Each step that has a non-idempotent effect is wrapped
 * in `step`, which records `EUNCERTAIN` and rethrows anything else.
 */
const PARENT_SOURCE = `
export default async function main(sys, n) {
  const uncertain = [];
  const step = async (name, f) => {
    try {
      return await f();
    } catch (error) {
      if (error.code !== "EUNCERTAIN") throw error;
      if (!uncertain.includes(name)) uncertain.push(name);
      return undefined;
    }
  };
  const log = "out/log-" + n + ".txt";
  await step("a", () => sys.fs.append(log, n + ":a\\n"));
  await sys.fs.write("out/w-" + n + ".txt", "written by " + n + "\\n");
  const grant = await sys.fs.read("grants/" + n + ".txt");
  await sys.time.sleep(50 + (n * 53) % 251);
  await sys.event.wait("go");
  let child = await step("child", () =>
    sys.proc.spawn({
      image: "${CHILD_TAG}",
      input: n,
      capabilities: ["fs:write:" + log],
    })
  );
  if (!child) {
    // The spawn may or may not have happened: look for the child it made.
    const children = await sys.proc.children();
    if (children.length) child = { pid: children[0].pid };
  }
  if (child) {
    const end = await sys.proc.wait(child.pid);
    if (end.state !== "exited") {
      throw new Error("child " + child.pid + " " + end.state + ": " + JSON.stringify(end.error));
    }
    if (end.result.uncertain && !uncertain.includes("child")) uncertain.push("child");
  }
  await step("b", () => sys.fs.append(log, n + ":b\\n"));
  return { n, uncertain, grant };
}
`;

/** The child program: one append, and whether its outcome is unknown. */
const CHILD_SOURCE = `
export default async function main(sys, n) {
  try {
    await sys.fs.append("out/log-" + n + ".txt", n + ":child\\n");
    return { n, uncertain: false };
  } catch (error) {
    if (error.code !== "EUNCERTAIN") throw error;
    return { n, uncertain: true };
  }
}
`;

async function registerImages(kernel: Kernel): Promise<void> {
  const [parentName, version] = PARENT_TAG.split("@");
  await kernel.images.register({
    name: parentName,
    version,
    entry: "./parent.ts",
    tools: [],
    capabilities: [
      "fs:read,write:out/**",
      "fs:read:grants/**",
      "time:sleep:*",
      "event:wait:go",
      `proc:spawn:${CHILD_TAG}`,
    ],
    policy: {},
  }, { entrySource: PARENT_SOURCE });
  await kernel.images.register({
    name: CHILD_TAG.split("@")[0],
    version,
    entry: "./child.ts",
    tools: [],
    capabilities: ["fs:write:out/**"],
    policy: {},
  }, { entrySource: CHILD_SOURCE });
}

async function spawnParents(
  kernel: Kernel,
  workspace: string,
  count: number,
): Promise<CrashManifest> {
  const manifest: CrashManifest = { parents: [] };
  for (let n = 1; n <= count; n++) {
    const proc = await kernel.spawn({
      image: PARENT_TAG,
      workspace,
      input: n,
      capabilities: [
        "fs:read,write:out/**",
        `fs:read:grants/${n}.txt;uses=1`,
        "time:sleep:*",
        "event:wait:go",
        `proc:spawn:${CHILD_TAG}`,
      ],
    });
    const grant = (await kernel.caps.list(proc.pid)).find((c) => c.uses === 1);
    if (!grant) throw new Error(`Cannot find the one-shot grant of process ${proc.pid}`);
    manifest.parents.push({ pid: proc.pid, n, grant: grant.id });
  }
  return manifest;
}

async function hostMain(args: string[]): Promise<number> {
  const [kvPath, workspace, countText] = args;
  const count = Number(countText);
  if (!kvPath || !workspace || !Number.isInteger(count) || count < 1) {
    console.error("usage: _crash_host.ts KV_PATH WORKSPACE COUNT");
    return 1;
  }
  const kernel = await Kernel.open({ store: kvPath });
  await registerImages(kernel);
  if ((await kernel.processes.list()).length === 0) {
    const manifest = await spawnParents(kernel, workspace, count);
    const path = join(dirname(kvPath), "manifest.json");
    await Deno.writeTextFile(`${path}.tmp`, JSON.stringify(manifest));
    await Deno.rename(`${path}.tmp`, path);
  }
  const go = setInterval(() => {
    kernel.postEvent("go", {}).catch((error) => {
      if (!kernel.closed) console.error(`crash host: cannot post "go": ${error.message}`);
    });
  }, 100);
  await kernel.recover();
  await kernel.idle();
  clearInterval(go);
  await kernel.close();
  return 0;
}

if (import.meta.main) {
  Deno.exit(await hostMain(Deno.args));
}
