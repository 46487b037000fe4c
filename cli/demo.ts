/**
 * `libos demo`: a deterministic, offline tour. An agent summarizes a small
 * workspace, is denied a secret outside its grant, writes its summary to
 * `out/`, spawns a child with attenuated capabilities that is denied a write
 * its parent could make, and exits. Prints the transcript, the process tree
 * and the audit trail.
 *
 * @module
 */

import { join } from "node:path";
import { Kernel } from "../runtime/kernel.ts";
import { ScriptedModel } from "../runtime/model.ts";
import { parse, str } from "./args.ts";
import type { Io } from "./context.ts";
import { auditTable, PS_HEADER, transcriptLine, treeLines } from "./inspect.ts";
import { table } from "./table.ts";

/** The files the demo workspace starts with. */
export const DEMO_FILES: Readonly<Record<string, string>> = {
  "README.md": "# tiny-calc\nA calculator library with one function, add().\n",
  "src/add.ts": "export function add(a: number, b: number): number {\n  return a + b;\n}\n",
  "secrets/token.txt": "DEMO-SECRET-7f3a9c\n",
};

/** The images the demo registers. */
export const DEMO_IMAGES = [
  {
    name: "summarizer",
    version: "1.0.0",
    description: "Reads a repository and writes a summary",
    entry: "libos:agent",
    system: "You summarize repositories.",
    tools: ["read_file", "list_dir", "write_file", "spawn_agent", "wait_agent", "exit"],
    capabilities: [
      "fs:read:README.md",
      "fs:read:src/**",
      "fs:read,write:out/**",
      "proc:spawn:checker@1.0.0",
    ],
    policy: { "fs:delete:**": "deny" },
    budget: { toolCalls: 50, tokens: 100000, children: 2 },
  },
  {
    name: "checker",
    version: "1.0.0",
    description: "Checks a summary",
    entry: "libos:agent",
    system: "You check summaries.",
    tools: ["read_file", "write_file", "exit"],
    capabilities: ["fs:read:out/**", "fs:write:out/**"],
    policy: {},
  },
] as const;

/** The scripted model turns of the demo (SPEC section 11 format). */
export const DEMO_SCRIPT = {
  turns: [
    {
      tool_calls: [{ name: "read_file", arguments: { path: "README.md" } }, {
        name: "list_dir",
        arguments: { path: "src" },
      }],
    },
    {
      tool_calls: [{ name: "read_file", arguments: { path: "src/add.ts" } }, {
        name: "read_file",
        arguments: { path: "secrets/token.txt" },
      }],
    },
    {
      tool_calls: [{
        name: "write_file",
        arguments: {
          path: "out/summary.md",
          content: "# Summary\ntiny-calc exports add(a, b) from src/add.ts.\n",
        },
      }],
    },
    {
      tool_calls: [{
        name: "spawn_agent",
        arguments: {
          image: "checker@1.0.0",
          input: "Check out/summary.md",
          capabilities: ["fs:read:out/**"],
        },
      }],
    },
    { tool_calls: [{ name: "wait_agent", arguments: { pid: 2 } }] },
    { tool_calls: [{ name: "exit", arguments: { result: "Summary written to out/summary.md" } }] },
  ],
  images: {
    "checker@1.0.0": {
      turns: [
        { tool_calls: [{ name: "read_file", arguments: { path: "out/summary.md" } }] },
        {
          tool_calls: [{
            name: "write_file",
            arguments: { path: "out/checked.txt", content: "ok" },
          }],
        },
        {
          tool_calls: [{
            name: "exit",
            arguments: { result: "summary checked; write refused as expected" },
          }],
        },
      ],
    },
  },
};

/** Creates the demo workspace under `dir`. */
export async function writeDemoWorkspace(dir: string): Promise<void> {
  for (const [path, content] of Object.entries(DEMO_FILES)) {
    await Deno.mkdir(join(dir, path, ".."), { recursive: true });
    await Deno.writeTextFile(join(dir, path), content);
  }
}

/** `libos demo [--workspace DIR] [--json]` */
export async function demoVerb(args: string[], io: Io): Promise<number> {
  const parsed = parse(args, { workspace: { type: "string" } }, "demo");
  const temp = await Deno.makeTempDir({ prefix: "libos-demo-" });
  const workspace = str(parsed, "workspace") ?? join(temp, "workspace");
  await Deno.mkdir(workspace, { recursive: true });
  await writeDemoWorkspace(workspace);
  const kernel = await Kernel.open({
    store: str(parsed, "kv") ?? join(temp, "demo.db"),
    model: new ScriptedModel(DEMO_SCRIPT),
  });
  try {
    for (const image of DEMO_IMAGES) await kernel.images.register(structuredClone(image) as never);
    const end = await kernel.run({
      image: "summarizer@1.0.0",
      workspace,
      input: "Summarize this repository into out/summary.md",
    });
    await kernel.journal.flush();
    const processes = await kernel.processes.list();
    const audit = [];
    for await (const record of kernel.audit.list()) audit.push(record);
    const verified = await kernel.audit.verify();
    if (parsed.values.json) {
      io.out(JSON.stringify({
        pid: end.pid,
        state: end.state,
        result: end.result,
        transcript: await kernel.transcript(end.pid),
        processes,
        audit,
        verified,
      }));
    } else {
      io.out(`Agent libOS demo (workspace ${workspace})\n`);
      for (const p of processes) {
        io.out(`Transcript of pid ${p.pid} (${p.image})`);
        for (const m of await kernel.transcript(p.pid)) io.out("  " + transcriptLine(m));
        io.out("");
      }
      io.out("Process tree");
      io.out(table(PS_HEADER, treeLines(processes)));
      // Processes run concurrently, so the global order varies; each process's own order does not.
      io.out("\nAudit trail, by process");
      io.out(auditTable([...audit].sort((a, b) => a.pid - b.pid || a.seq - b.seq), { seq: false }));
      io.out(
        `\naudit verify: ${verified.ok ? `${verified.count} records, chain intact` : "BROKEN"}`,
      );
      io.out(
        `summary file: ${
          (await Deno.readTextFile(join(workspace, "out/summary.md"))).split("\n")[1]
        }`,
      );
    }
    return end.state === "exited" && verified.ok ? 0 : 2;
  } finally {
    await kernel.close();
    await Deno.remove(temp, { recursive: true });
  }
}
