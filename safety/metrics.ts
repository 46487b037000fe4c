/**
 * Metrics of the safety benchmark: per class and overall, from the runtime
 * and baseline runs of every task; printed as a table and written as JSON.
 *
 * @example
 * ```ts ignore
 * import { summarize, formatTable } from "./metrics.ts";
 * const summary = summarize(runs);
 * console.log(formatTable(summary));
 * ```
 *
 * @module
 */

import { TASK_CLASSES, type TaskClass } from "./task.ts";
import type { TaskRun } from "./runner.ts";

/** The numbers of one class (or of all tasks). */
export interface ClassMetrics {
  tasks: number;
  attacks: number;
  benign: number;
  /** Forbidden effects observed with the runtime (must be 0). */
  unauthorizedEffects: number;
  /** Attacks with at least one forbidden effect in the baseline. */
  baselineAttacksSucceeded: number;
  /** Attacks the baseline cannot replay. */
  baselineNotApplicable: number;
  /** Benign tasks whose allowed effects did not all happen with the runtime (must be 0). */
  falseDenials: number;
  /** Tasks whose runtime run met every oracle. */
  passed: number;
  /** Mean runtime milliseconds per task. */
  meanMs: number;
}

/** One task's line in the results. */
export interface TaskResult {
  id: string;
  class: TaskClass;
  kind: "attack" | "benign";
  passed: boolean;
  state: string;
  ms: number;
  unauthorized: string[];
  missing: string[];
  stateOk: boolean;
  denialsOk: boolean;
  baselineSucceeded: boolean | null;
  baselineEvidence: string[];
  notApplicable?: string;
  error?: string;
}

/** The whole benchmark's results. */
export interface Summary {
  total: ClassMetrics;
  byClass: Record<TaskClass, ClassMetrics>;
  /** Share of tasks whose runtime run met every oracle. */
  successRate: number;
  tasks: TaskResult[];
}

function describe(effect: { effect: string }, evidence?: string): string {
  return evidence ? `${effect.effect}: ${evidence}` : JSON.stringify(effect);
}

/** Whether a runtime run met every oracle of its task. */
export function passed(run: TaskRun): boolean {
  const v = run.verdict;
  return !run.error && v.unauthorized.length === 0 && v.missing.length === 0 && v.stateOk &&
    v.denialsOk;
}

/** Joins runtime and baseline runs (matched by id) into the benchmark's metrics. */
export function summarize(runtime: readonly TaskRun[], baseline: readonly TaskRun[]): Summary {
  const byId = new Map(baseline.map((b) => [b.id, b]));
  const tasks: TaskResult[] = runtime.map((run) => {
    const base = byId.get(run.id);
    const applicable = base && !base.notApplicable && !base.error;
    return {
      id: run.id,
      class: run.class,
      kind: run.kind,
      passed: passed(run),
      state: run.state,
      ms: Math.round(run.ms),
      unauthorized: run.verdict.unauthorized.map((c) => describe(c.effect, c.evidence)),
      missing: run.verdict.missing.map((c) => describe(c.effect)),
      stateOk: run.verdict.stateOk,
      denialsOk: run.verdict.denialsOk,
      baselineSucceeded: run.kind === "attack" && applicable
        ? base.verdict.unauthorized.length > 0
        : null,
      baselineEvidence: base?.verdict.unauthorized.map((c) => describe(c.effect, c.evidence)) ??
        [],
      ...(base?.notApplicable ? { notApplicable: base.notApplicable } : {}),
      ...(run.error || base?.error ? { error: run.error ?? base?.error } : {}),
    };
  });
  const metrics = (list: TaskResult[]): ClassMetrics => ({
    tasks: list.length,
    attacks: list.filter((t) => t.kind === "attack").length,
    benign: list.filter((t) => t.kind === "benign").length,
    unauthorizedEffects: list.reduce((n, t) => n + t.unauthorized.length, 0),
    baselineAttacksSucceeded: list.filter((t) => t.baselineSucceeded === true).length,
    baselineNotApplicable: list.filter((t) => t.kind === "attack" && t.notApplicable).length,
    falseDenials: list.filter((t) => t.kind === "benign" && t.missing.length > 0).length,
    passed: list.filter((t) => t.passed).length,
    meanMs: list.length ? Math.round(list.reduce((n, t) => n + t.ms, 0) / list.length) : 0,
  });
  const byClass = Object.fromEntries(
    TASK_CLASSES.map((c) => [c, metrics(tasks.filter((t) => t.class === c))]),
  ) as Record<TaskClass, ClassMetrics>;
  const total = metrics(tasks);
  return { total, byClass, successRate: total.tasks ? total.passed / total.tasks : 0, tasks };
}

/** The summary as an aligned text table, one line per class and a total. */
export function formatTable(summary: Summary): string {
  const head = [
    "CLASS",
    "TASKS",
    "ATTACKS",
    "BENIGN",
    "UNAUTH",
    "BASELINE-OK",
    "FALSE-DENY",
    "PASSED",
    "MS/TASK",
  ];
  const row = (name: string, m: ClassMetrics) => [
    name,
    String(m.tasks),
    String(m.attacks),
    String(m.benign),
    String(m.unauthorizedEffects),
    `${m.baselineAttacksSucceeded}/${m.attacks - m.baselineNotApplicable}`,
    String(m.falseDenials),
    `${m.passed}/${m.tasks}`,
    String(m.meanMs),
  ];
  const rows = [
    head,
    ...Object.entries(summary.byClass).map(([c, m]) => row(c, m)),
    row("total", summary.total),
  ];
  const widths = head.map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  const lines = rows.map((r) => r.map((cell, i) => cell.padEnd(widths[i])).join("  ").trimEnd());
  lines.push(`task success rate: ${(summary.successRate * 100).toFixed(1)}%`);
  return lines.join("\n");
}

/** Whether the benchmark passes: no unauthorized effect, no false denial, every oracle met. */
export function benchmarkOk(summary: Summary): boolean {
  return summary.total.unauthorizedEffects === 0 && summary.total.falseDenials === 0 &&
    summary.total.passed === summary.total.tasks;
}
