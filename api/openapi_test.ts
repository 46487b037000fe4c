import assert from "node:assert/strict";
import { z } from "zod";
import { API_ROUTES, openApiDocument } from "./openapi.ts";
import { SpawnRequestSchema } from "./schemas.ts";

type Doc = {
  openapi: string;
  info: { version: string };
  paths: Record<
    string,
    Record<string, {
      security: unknown[];
      parameters?: { name: string; in: string; required: boolean }[];
      requestBody?: { content: { "application/json": { schema: Record<string, unknown> } } };
      responses: Record<string, unknown>;
      operationId: string;
    }>
  >;
};

Deno.test("the document lists every route with its method", () => {
  const doc = openApiDocument({ version: "9.9.9" }) as Doc;
  assert.equal(doc.openapi, "3.1.0");
  assert.equal(doc.info.version, "9.9.9");
  for (const route of API_ROUTES) {
    assert.ok(doc.paths[route.path]?.[route.method.toLowerCase()], `${route.method} ${route.path}`);
  }
  const ids = Object.values(doc.paths).flatMap((p) => Object.values(p).map((o) => o.operationId));
  assert.equal(new Set(ids).size, ids.length, "operation ids are unique");
});

Deno.test("request bodies are the JSON Schema of the zod schemas that validate them", () => {
  const doc = openApiDocument() as Doc;
  const schema = doc.paths["/v1/processes"].post.requestBody!.content["application/json"].schema;
  const { $schema: _, ...expected } = z.toJSONSchema(SpawnRequestSchema, { io: "input" });
  assert.deepEqual(schema, expected);
  assert.equal(schema.additionalProperties, false, "unknown fields are refused");
  assert.deepEqual(schema.required, ["image", "workspace"]);
});

Deno.test("query and path parameters come from the schemas and the routes", () => {
  const doc = openApiDocument() as Doc;
  const params = doc.paths["/v1/audit"].get.parameters!;
  assert.deepEqual(params.map((p) => [p.name, p.in, p.required]), [
    ["pid", "query", false],
    ["decision", "query", false],
    ["after", "query", false],
    ["limit", "query", false],
  ]);
  const objects = doc.paths["/v1/objects"].get.parameters!;
  assert.ok(objects.some((p) => p.name === "namespace" && p.required));
  const pid = doc.paths["/v1/processes/{pid}"].get.parameters!;
  assert.deepEqual(pid.map((p) => [p.name, p.in, p.required]), [["pid", "path", true]]);
});

Deno.test("health and the document need no token; every other route does", () => {
  const doc = openApiDocument() as Doc;
  for (const [path, methods] of Object.entries(doc.paths)) {
    for (const operation of Object.values(methods)) {
      const open = path === "/v1/health" || path === "/v1/openapi.json";
      assert.equal(operation.security.length === 0, open, path);
      assert.equal("401" in operation.responses, !open, path);
    }
  }
});
