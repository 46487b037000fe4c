import assert from "node:assert/strict";
import { commandConfinement } from "./command_confinement.ts";

const SETPRIV = "/usr/bin/setpriv";

Deno.test("commands start without capabilities whenever setpriv exists", () => {
  for (const nonDumpable of [true, false]) {
    for (const capabilities of [true, false]) {
      const { prefix } = commandConfinement({ nonDumpable, capabilities, setpriv: SETPRIV });
      assert.deepEqual(prefix, [
        SETPRIV,
        "--no-new-privs",
        "--inh-caps=-all",
        "--ambient-caps=-all",
        "--bounding-set=-all",
        "--",
      ]);
    }
  }
});

Deno.test("commands run only when the host is non-dumpable or holds capabilities they lack", () => {
  const refused = (nonDumpable: boolean, capabilities: boolean, setpriv?: string) =>
    commandConfinement({ nonDumpable, capabilities, setpriv }).refusal;
  // With setpriv: a root host is safe from capability-less commands, any host once non-dumpable.
  assert.equal(refused(false, true, SETPRIV), undefined);
  assert.equal(refused(true, false, SETPRIV), undefined);
  assert.equal(refused(true, true, SETPRIV), undefined);
  // A host without capabilities that stayed dumpable: same user, nothing stops a command.
  assert.match(refused(false, false, SETPRIV)!, /could not make itself non-dumpable/);
  // Without setpriv a command keeps whatever capabilities a root host gives it.
  assert.equal(refused(true, false), undefined);
  assert.match(refused(true, true)!, /no setpriv to drop them/);
  assert.match(refused(false, true)!, /no setpriv to drop them/);
  assert.match(refused(false, false)!, /could not make itself non-dumpable/);
});
