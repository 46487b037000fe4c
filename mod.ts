/**
 * Agent libOS: a Deno-native runtime that runs LLM agents as long-lived,
 * capability-controlled processes. Tools are libc-like wrappers; syscalls
 * are the authority boundary.
 *
 * @example
 * ```ts ignore
 * import { Kernel, ScriptedModel } from "@libos/agent-libos";
 *
 * const kernel = await Kernel.open({
 *   store: ":memory:",
 *   model: new ScriptedModel({ turns: [{ content: "done", exit: true }] }),
 * });
 * await kernel.images.register({
 *   name: "hello", version: "1.0.0", entry: "libos:agent",
 *   tools: ["exit"], capabilities: [], policy: {},
 * });
 * const proc = await kernel.run({ image: "hello@1.0.0", workspace: "." });
 * console.log(proc.state, proc.result); // exited done
 * await kernel.close();
 * ```
 *
 * @module
 */

export { Kernel } from "./runtime/kernel.ts";
export { createApp } from "./api/app.ts";
export type { ApiApp, ControlKernel, CreateAppOptions } from "./api/app.ts";
export type {
  ChildSpawnOptions,
  KernelOptions,
  SpawnOptions,
  TranscriptEntry,
} from "./runtime/kernel.ts";
export { openStore } from "./runtime/store.ts";
export type { OpenStoreOptions, Store } from "./runtime/store.ts";
export { ProcessTable } from "./runtime/process_table.ts";
export type {
  Budget,
  ProcessEvent,
  ProcessRecord,
  ProcessState,
  Usage,
  WaitingOn,
} from "./runtime/process_table.ts";
export { DEFAULT_LIMITS } from "./runtime/execution.ts";
export type { ProcessLimits } from "./runtime/execution.ts";
export {
  AgentImageSchema,
  imageDigest,
  ImageRegistry,
  imageTag,
  loadImageFile,
  parseImage,
} from "./runtime/image.ts";
export type { AgentImage, RegisteredImage } from "./runtime/image.ts";
export { ScriptedModel } from "./runtime/model.ts";
export { OpenAIModel } from "./runtime/openai_model.ts";
export type { OpenAIModelOptions } from "./runtime/openai_model.ts";
export { DenyingHuman, HumanQueue, ScriptedHuman } from "./runtime/human_queue.ts";
export type {
  HumanAnswer,
  HumanDecision,
  HumanRequest,
  HumanResponder,
} from "./runtime/human_queue.ts";
export { Snapshots } from "./runtime/snapshots.ts";
export type { RestoreReport, Snapshot } from "./runtime/snapshots.ts";
export type {
  Message,
  ModelProvider,
  ModelReply,
  ModelRequest,
  ToolCall,
  ToolSpec,
} from "./runtime/model.ts";
export { ObjectMemory } from "./runtime/object_memory.ts";
export type { ObjectRecord, ObjectType } from "./runtime/object_memory.ts";
export { LocalFs } from "./runtime/fs_provider.ts";
export type { FsEntry, FsProvider, FsStat } from "./runtime/fs_provider.ts";
export { createSys, SysError } from "./runtime/libc.ts";
export type { Sys } from "./runtime/libc.ts";
export { BUILTIN_TOOLS } from "./tools/builtin.ts";
export type { Tool } from "./tools/builtin.ts";
export { formatCapability, parseCapability, RESOURCES } from "./broker/capability.ts";
export type { Capability, CapabilitySpec, Operation, Resource } from "./broker/capability.ts";
export { decide, parsePolicy } from "./broker/policy.ts";
export type { Decision, PolicyRule } from "./broker/policy.ts";
export { AuditLog } from "./broker/audit.ts";
export type { AuditEntry, AuditRecord } from "./broker/audit.ts";
export { Broker } from "./broker/broker.ts";
export { SYSCALL_ARGS, SYSCALL_NAMES } from "./broker/abi.ts";
export type { SyscallName, SyscallReply, SyscallRequest } from "./broker/abi.ts";
export { ERROR_CODES, SyscallError } from "./broker/errors.ts";
export type { ErrorCode } from "./broker/errors.ts";
