import assert from "node:assert/strict";
import { type DeterminismScope, determinize, seededRandom } from "./determinism.ts";

/** A stand-in for the Worker's globals, so the test runner's own stay untouched. */
function scope(): DeterminismScope {
  return {
    Date,
    Math: { random: Math.random },
    performance: { now: () => performance.now() },
    crypto: {
      getRandomValues: crypto.getRandomValues.bind(crypto),
      randomUUID: crypto.randomUUID.bind(crypto),
    },
  };
}

const EPOCH = Date.UTC(2030, 0, 1);

Deno.test("the clock reads the epoch, then the journal times it is moved to, never back", () => {
  const s = scope();
  const clock = determinize(s, EPOCH, 1);
  assert.equal(s.Date.now(), EPOCH);
  assert.equal(new s.Date().getTime(), EPOCH);
  assert.equal(s.performance.now(), 0);
  clock.advance(EPOCH + 1500);
  assert.equal(s.Date.now(), EPOCH + 1500);
  assert.equal(new s.Date().getTime(), EPOCH + 1500);
  assert.equal(s.performance.now(), 1500);
  clock.advance(EPOCH + 10);
  assert.equal(clock.now(), EPOCH + 1500);
  assert.equal(new s.Date(0).getTime(), 0, "a date given its time keeps it");
});

Deno.test("the same seed gives the same randomness; another seed another", () => {
  const draw = (seed: number) => {
    const s = scope();
    determinize(s, EPOCH, seed);
    return {
      numbers: [s.Math.random(), s.Math.random(), s.Math.random()],
      bytes: [...s.crypto.getRandomValues(new Uint8Array(8))],
      uuid: s.crypto.randomUUID(),
    };
  };
  const first = draw(7);
  assert.deepEqual(draw(7), first);
  assert.notDeepEqual(draw(8), first);
  assert.ok(first.numbers.every((n) => n >= 0 && n < 1));
  assert.match(first.uuid, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.deepEqual(
    first.numbers,
    (() => {
      const next = seededRandom(7);
      return [next(), next(), next()];
    })(),
  );
});

Deno.test("getRandomValues fills only the view it is given", () => {
  const s = scope();
  determinize(s, EPOCH, 3);
  const buffer = new Uint8Array(16);
  s.crypto.getRandomValues(new Uint8Array(buffer.buffer, 4, 8));
  assert.deepEqual([...buffer.slice(0, 4), ...buffer.slice(12)], new Array(8).fill(0));
  assert.ok(buffer.slice(4, 12).some((b) => b !== 0));
});

Deno.test("a program cannot put the real clock or randomness back", () => {
  const s = scope();
  determinize(s, EPOCH, 1);
  const realNow = Date.now;
  assert.throws(() => {
    (s as { Date: unknown }).Date = Date;
  }, TypeError);
  assert.throws(() => {
    s.Math.random = Math.random;
  }, TypeError);
  assert.throws(() => {
    s.performance.now = () => 1;
  }, TypeError);
  assert.throws(() => Object.defineProperty(s.crypto, "randomUUID", { value: () => "x" }));
  assert.equal(s.Date.now(), EPOCH);
  assert.notEqual(s.Date.now, realNow);
});
