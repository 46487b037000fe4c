import assert from "node:assert/strict";
import { analyzeCommand, analyzeShellScript, ANY_COMMAND } from "./command_analysis.ts";

/** `argv` may run any program: it needs `exec:run:*`, and says why. */
function assertUnbounded(argv: readonly string[]): void {
  const { commands: found, reasons } = analyzeCommand(argv, { cwd: "/ws" });
  assert.ok(found.includes(ANY_COMMAND), `${JSON.stringify(argv)} → ${found.join(" ")}`);
  assert.ok(reasons.some((r) => r.startsWith(`${ANY_COMMAND}: `)), reasons.join("\n"));
}

/** `argv` runs exactly these commands, none of them `*`. */
function assertRuns(argv: readonly string[], expected: string[]): void {
  const { commands: found, reasons } = analyzeCommand(argv, { cwd: "/ws" });
  assert.deepEqual(found, expected, `${JSON.stringify(argv)}\n${reasons.join("\n")}`);
}

const M = "/tmp/marker";

// -- attacks: each must need exec:run:* ---------------------------------------

const ATTACKS: Record<string, string[][]> = {
  "control and non-printable characters in scripts, names and options": [
    ["bash", "-c", `echo\r# ; touch ${M}`],
    ["bash", "-c", `true\r;\rtouch ${M}`],
    ["sh", "-c", `ls\v# ; touch ${M}`],
    ["bash", "-c", `ls\f#;touch ${M}`],
    ["bash", "-c", `ls\u0085;touch ${M}`],
    ["bash", "-c", `ls\u2028touch ${M}`],
    ["bash", "-c", `echo \u200b; touch ${M}`],
    ["bash", "-c", `echo x\ntouch ${M}`],
    ["bash", "-c", `echo x\ttouch ${M}`],
    ["bash", "-c", "ls", "\r"],
    ["bash", "-c", "ls\u001b[2J"],
    ["dash", "-c", `echo '\u009b'`],
    ["ls\r"],
    ["env", "ls\u007f"],
    ["git", "log", "--format=%h\r"],
    ["sort", "-k\u001b[2J", "f"],
    ["grep", "-e", "x", "--colour\u0007"],
    ["sed", "-n", `1p\r`, "f"],
    ["sed", "-n", `p;\ve touch ${M}`, "f"],
    ["find", ".", "-name\r", "x"],
  ],
  "shell features that evaluate text": [
    ["bash", "-c", `trap -- 'touch ${M}' EXIT`],
    ["bash", "-c", `trap 'touch ${M}' EXIT`],
    ["bash", "-c", `x='$(touch ${M})'; echo \${x@P}`],
    ["bash", "-c", `x='a[$(touch ${M})]'; echo \${!x}`],
    ["bash", "-c", `printf -v PS4 '$(touch ${M})'; set -x; true`],
    ["bash", "-c", `set -a; printf -v BASH_ENV %s '$(touch ${M})'; bash -c true`],
    ["bash", "-c", `printf -v 'a[$(touch ${M})]' x`],
    ["bash", "-c", `printf '-v' PS4 x`],
    ["bash", "-c", `test -v 'a[$(touch ${M})]'`],
    ["bash", "-c", `[ -v 'a[$(touch ${M})]' ]`],
    ["bash", "-c", `[ -R x ]`],
    ["bash", "-c", `read -r PS4 < f; set -x; true`],
    ["bash", "-c", `eval 'touch ${M}'`],
    ["bash", "-c", `'ev'al 'touch ${M}'`],
    ["bash", "-c", "source ./env.sh"],
    ["bash", "-c", ". ./env.sh"],
    ["bash", "-c", `declare x='$(touch ${M})'`],
    ["bash", "-c", `export PS4='$(touch ${M})'`],
    ["bash", "-c", "readonly PROMPT_COMMAND=x"],
    ["bash", "-c", "typeset -i x=y"],
    ["bash", "-c", "local x=y"],
    ["bash", "-c", `command touch ${M}`],
    ["bash", "-c", "builtin eval x"],
    ["bash", "-c", `exec touch ${M}`],
    ["bash", "-c", `coproc touch ${M}`],
    ["bash", "-c", `alias ls='touch ${M}'`],
    ["bash", "-c", `f() { touch ${M}; }; f`],
    ["bash", "-c", `function f { touch ${M}; }`],
    ["bash", "-c", `cat <<EOF\n$(touch ${M})\nEOF`],
    ["bash", "-c", `cat <<'EOF' > f`],
    ["bash", "-c", `cat <<< 'x'`],
    ["bash", "-c", `diff <(touch ${M}) f`],
    ["bash", "-c", `cat >(touch ${M})`],
    ["bash", "-c", `echo \`touch ${M}\``],
    ["bash", "-c", `echo "$(touch ${M})"`],
    ["bash", "-c", `echo "\`touch ${M}\`"`],
    ["bash", "-c", `echo $'\\x74ouch'`],
    ["bash", "-c", `let 'a[$(touch ${M})]'`],
    ["bash", "-c", "(( x ))"],
    ["bash", "-c", "echo $((a[x]))"],
    ["bash", "-c", `mapfile -C 'touch ${M}' -c 1 < f`],
    ["bash", "-c", `complete -C 'touch ${M}' x`],
    ["bash", "-c", "enable -f ./x.so y"],
    ["bash", "-c", "hash -p /ws/evil ls; ls"],
    ["bash", "-c", "shopt -s expand_aliases"],
    ["bash", "-c", "set -k"],
    ["bash", "-c", "set -o posix"],
    ["bash", "-c", "set -o"],
    ["bash", "-c", `wait -p 'a[$(touch ${M})]'`],
    ["bash", "-c", `exit 'a[$(touch ${M})]'`],
    ["bash", "-c", "kill -l x"],
    ["bash", "-c", "getopts a x"],
    ["bash", "-c", `PS4='$(touch ${M})' bash -xc true`],
    ["bash", "-c", "BASH_ENV=./x.sh bash -c true"],
    ["bash", "-c", "PATH=/ws/bin git status"],
    ["bash", "-c", "echo x > $HOME/y"],
    ["bash", "-c", "echo x > /dev/tcp/127.0.0.1/9"],
    ["bash", "-c", "cat < /dev/udp/127.0.0.1/9"],
    ["bash", "-c", "echo x >& /dev/tcp/127.0.0.1/9"],
    ["bash", "-c", "if true; then ls; fi"],
    ["bash", "-c", "for f in a; do ls; done"],
    ["bash", "-c", "while false; do ls; done"],
    ["bash", "-c", "case x in x) ls;; esac"],
    ["bash", "-c", "[[ -f x ]]"],
    ["bash", "-c", "{ ls; }"],
    ["bash", "-c", "(ls)"],
    ["bash", "-c", "! ls"],
    ["bash", "-c", "time ls"],
    ["bash", "-c", "/usr/bin/tou?h x"],
    ["bash", "-c", "t*h x"],
    ["bash", "-c", "{touch,x}"],
    ["bash", "-c", "~/bin/tool"],
    ["bash", "-c", `ls # ; touch ${M}`],
    ["bash", "-c", "ls &&"],
    ["bash", "-c", "; ls"],
    ["bash", "-c", "echo 'unterminated"],
    ["bash", "-c", "ls >"],
    ["bash", "-c", "ls > > x"],
    ["sh", "-c", `echo x &>/dev/null touch ${M}`],
    ["sh", "-c", `echo x &>>log touch ${M}`],
    ["sh", "-c", `git grep -e 12>/dev/null -Otouch\ ${M} x`],
    ["bash", "-c", "ls 10>x"],
    ["bash", "-c", `ls >&-touch ${M}`],
    ["bash", "-c", `ls 2<&-x`],
    ["bash", "-c", "ls |& cat"],
    ["bash", "-c", `X=1 touch ${M}`],
    ["bash", "-c", "bash -c 'eval x'"],
    ["bash", "script.sh"],
    ["bash"],
    ["bash", "-s"],
    ["bash", "-i", "-c", "ls"],
    ["bash", "-l", "-c", "ls"],
    ["bash", "--login", "-c", "ls"],
    ["bash", "--rcfile", "x", "-c", "ls"],
    ["bash", "-O", "extglob", "-c", "ls"],
    ["bash", "+x", "-c", "ls"],
    ["bash", "-o", "posix", "-c", "ls"],
    ["bash", "-c", "-i", "ls"],
    ["sh", "-e", "--", "build.sh"],
    ["zsh", "-c", "ls"],
  ],
  "cd hidden by quoting, and relative programs after it": [
    ["bash", "-c", "c''d sub && ./tool"],
    ["bash", "-c", `"cd" sub; ./tool`],
    ["bash", "-c", "\\cd sub; ./tool"],
    ["bash", "-c", "'c'd sub"],
    ["bash", "-c", "pushd sub && ./tool"],
    ["bash", "-c", "popd"],
    ["bash", "-c", "builtin cd sub"],
    ["bash", "-c", "command cd sub"],
    ["bash", "-c", "CDPATH=sub cd tool"],
    ["bash", "-c", "cd"],
    ["bash", "-c", "./tool"],
    ["bash", "-c", "sub/tool"],
  ],
  "git settings, aliases, hooks and programs git runs": [
    ["git", "-c", `alias.x=!touch ${M}`, "x"],
    ["git", "-c", "user.name=a", "log"],
    ["git", "-c", "core.hooksPath=h", "commit", "-m", "x"],
    ["git", "-c", `core.fsmonitor=touch ${M}`, "status"],
    ["git", "-ccore.pager=x", "log"],
    ["git", "--config-env=core.pager=P", "log"],
    ["git", "--exec-path=/ws/bin", "status"],
    ["git", "--exec-path", "status"],
    ["git", "-p", "log"],
    ["git", "--paginate", "log"],
    ["git", "--help"],
    ["git", "--", "status"],
    ["git", "--version", "status"],
    ["git", "config", "user.name", `!touch ${M}`],
    ["git", "config", "--rename-section", "user", "alias"],
    ["git", "config", "--file", ".git/config", "alias.x", `!touch ${M}`],
    ["git", "config", "--add", "alias.x", "!x"],
    ["git", "config", "--get", "x", "--add", "alias.x", "!x"],
    ["git", "config", "-e"],
    ["git", "config", "--edit"],
    ["git", "x"],
    ["git", "name"],
    ["git", "commit", "-m", "x"],
    ["git", "push"],
    ["git", "fetch", "origin"],
    ["git", "clone", "ext::sh -c touch% /tmp/m", "d"],
    ["git", "rebase", "--exec", `touch ${M}`, "HEAD~1"],
    ["git", "submodule", "foreach", `touch ${M}`],
    ["git", "bisect", "run", "touch", M],
    ["git", "difftool", "-x", "touch"],
    ["git", "filter-branch", "--tree-filter", `touch ${M}`],
    ["git", "help", "log"],
    ["git", "hook", "run", "pre-commit"],
    ["git", "init", "--template=t"],
    ["git", "instaweb"],
    ["git", "grep", `-Otouch ${M}`, "x"],
    ["git", "grep", "-O", "x"],
    ["git", "grep", `--open-files-in-pager=touch ${M}`, "x"],
    ["git", "grep", "--textconv", "x"],
    ["git", "log", "--ext-diff"],
    ["git", "log", "--textconv", "-p"],
    ["git", "log", "--show-signature"],
    ["git", "log", "--format=%G?"],
    ["git", "show", "--pretty=format:%h %GS"],
    ["git", "diff", "--output=M"],
    ["git", "branch", "--edit-description"],
    ["git", "branch", "--format=%(refname)"],
    ["git", "branch", "new-branch"],
    ["git", "branch", "-v", "new-branch", "HEAD"],
    ["git", "status", "--no-such-option"],
  ],
  "GNU long options abbreviated to a prefix": [
    ["sort", "--compress-prog=sh", "f"],
    ["sort", "--compress=sh", "f"],
    ["sort", "--comp=sh", "f"],
    ["sort", "--c", "f"],
    ["diff", "--pag", "a", "b"],
    ["diff", "--paginate", "a", "b"],
    ["diff", "-l", "a", "b"],
    ["diff", "-ul", "a", "b"],
    ["sed", "--fi=script.sed", "f"],
    ["sed", `--e=1e touch ${M}`, "f"],
    ["sed", `--expr=0~1e touch ${M}`, "f"],
    ["sed", "--expr", `w ${M}`, "f"],
    ["git", "grep", `--open-files-in=touch ${M}`, "x"],
    ["git", "grep", "--open", "x"],
    ["git", "grep", "--o", "x"],
    ["git", "grep", "--textc", "x"],
    ["tar", `--to-c=touch ${M}`, "-xf", "a.tar"],
    ["tar", "--use-compress-prog=sh", "-xf", "a.tar"],
    ["env", `--split-s=touch ${M}`],
    ["env", "--ch=sub", "./tool"],
    ["ls", "--hyperlink=always", "--x"],
  ],
  "sed addresses and commands that run or write": [
    ["sed", "-n", `0~1e touch ${M}`, "f"],
    ["sed", "-n", `1,+1e touch ${M}`, "f"],
    ["sed", "-n", `2,~4e touch ${M}`, "f"],
    ["sed", "-n", `\\,x,e touch ${M}`, "f"],
    ["sed", "-n", `\\%x%Ie touch ${M}`, "f"],
    ["sed", "-n", `/x/Ie touch ${M}`, "f"],
    ["sed", "-n", `/x/,/y/Me touch ${M}`, "f"],
    ["sed", "-n", `$!e touch ${M}`, "f"],
    ["sed", "-n", `1!e touch ${M}`, "f"],
    ["sed", "-n", `0,/x/e touch ${M}`, "f"],
    ["sed", "-n", `1 e touch ${M}`, "f"],
    ["sed", "-n", ` e touch ${M}`, "f"],
    ["sed", "-n", `1{p;e touch ${M}\n}`, "f"],
    ["sed", "-n", `{e touch ${M}\n}`, "f"],
    ["sed", "-n", `p;e touch ${M}`, "f"],
    ["sed", "-n", `p\ne touch ${M}`, "f"],
    ["sed", `s/x/touch ${M}/e`, "f"],
    ["sed", `s|x|touch ${M}|ge`, "f"],
    ["sed", `s/[/]/touch ${M}/e`, "f"],
    ["sed", `s/[]/]/x/;e touch ${M}`, "f"],
    ["sed", `s/x/y/w ${M}`, "f"],
    ["sed", "-n", `w ${M}`, "f"],
    ["sed", "-n", `1W ${M}`, "f"],
    ["sed", `y/a/b/;e touch ${M}`, "f"],
    ["sed", "1r /etc/passwd", "f"],
    ["sed", "R /etc/passwd", "f"],
    ["sed", "v 4.2", "f"],
    ["sed", "-e", "p", "-e", `e touch ${M}`, "f"],
    ["sed", `--expression=e touch ${M}`, "f"],
    ["sed", "-f", "script.sed", "f"],
    ["sed", "-fscript.sed", "f"],
    ["sed", "1a\\", "f"],
    ["sed", "1a foo\\", "f"],
    ["sed", "s/a/b\\\n/", "f"],
    ["sed", "/x/{p", "f"],
    ["sed", "p}", "f"],
    ["sed", "b}", "f"],
    ["sed", "s a b ", "f"],
    ["sed", "s\\a\\b\\", "f"],
  ],
  "interpreter entry points": [
    ["python3", "script.py"],
    ["python3", "-m", "evil"],
    ["python3", "-c", "print(1)"],
    ["python3", "-"],
    ["python3", "--version"],
    ["node", "--import", "./x.mjs", "y.js"],
    ["node", "-r", "./x", "y.js"],
    ["node", "--require=./x", "y.js"],
    ["node", "x.js"],
    ["deno", "run", "x.ts"],
    ["deno", "eval", "1"],
    ["perl", "-Mx", "-e1"],
    ["perl", "x.pl"],
    ["ruby", "-rx", "y.rb"],
    ["awk", "-f", "x.awk", "f"],
    ["awk", `BEGIN { system("touch ${M}") }`],
    ["awk", "{ print $1 }", "f"],
    ["gawk", "-E", "x.awk"],
    ["sqlite3", "db", `.shell touch ${M}`],
    ["sqlite3", "-cmd", `.system touch ${M}`, "db"],
    ["php", "-r", "1;"],
    ["lua", "-e", "1"],
    ["make"],
    ["make", "-f", "x.mk"],
    ["npm", "test"],
    ["npx", "x"],
    ["ssh", "host", "touch", M],
    ["ssh", "-o", `ProxyCommand=touch ${M}`, "host"],
    ["xargs", "touch"],
    ["find", ".", "-exec", "touch", M, ";"],
    ["find", ".", "-execdir", "touch", M, "+"],
    ["find", ".", "-ok", "touch", M, ";"],
    ["find", ".", "-okdir", "touch", M, ";"],
    ["find", ".", "-name", "x", "-o", "-exec", "touch", M, ";"],
    ["find", ".", "-fprint", M],
    ["find", ".", "-files0-from", "list"],
    ["find", "-D", "exec", "."],
    ["find", ".", "-name", "x", "stray"],
    ["tar", "-I", `touch ${M}`, "-xf", "a.tar"],
    ["tar", "--checkpoint-action=exec=touch", "-cf", "a", "b"],
    ["tar", "-xzf", "a.tar.gz"],
    ["sort", `--compress-program=touch ${M}`, "f"],
    ["vim", "-c", `!touch ${M}`],
    ["dc", "-e", `!touch ${M}`],
    ["split", `--filter=touch ${M}`, "f"],
  ],
  "env with options, variables or a relative program": [
    ["env", "-C", "sub", "./tool"],
    ["env", "--chdir=sub", "./tool"],
    ["env", "-Csub", "./tool"],
    ["env", "-S", `touch ${M}`],
    ["env", `--split-string=touch ${M}`],
    ["env", "-i", "touch", M],
    ["env", "-u", "PATH", "ls"],
    ["env", "PATH=/ws/bin", "ls"],
    ["env", "LD_PRELOAD=/ws/x.so", "ls"],
    ["env", "BASH_ENV=./x.sh", "bash", "-c", "true"],
    ["env", "--", "-x"],
    ["env", "./tool"],
    ["env", "--default-signal", "ls"],
    ["env", "env", "env", "make"],
  ],
  "programs the analysis does not know": [
    ["make"],
    ["curl", "http://127.0.0.1:9/"],
    ["ssh-agent", "touch", M],
    ["ed", "f"],
    ["m4", "f"],
    ["nohup", "touch", M],
    ["timeout", "5", "touch", M],
    ["nice", "touch", M],
    ["sudo", "ls"],
    ["busybox", "sh"],
    ["time", "ls"],
    ["watch", "ls"],
    ["stdbuf", "-oL", "ls"],
    ["setsid", "ls"],
    ["/usr/bin/make"],
    ["/opt/tool/bin/tool"],
    ["./build.sh"],
    ["tools/run"],
    ["./git", "status"],
    [""],
  ],
};

for (const [name, argvs] of Object.entries(ATTACKS)) {
  Deno.test(`analyzeCommand needs exec:run:* for ${name}`, () => {
    for (const argv of argvs) assertUnbounded(argv);
  });
}

// -- benign commands run under their own grant ----------------------------------

const BENIGN: [string[], string[]][] = [
  [["git", "status"], ["git"]],
  [["git", "log", "--oneline"], ["git"]],
  [["git", "log", "--oneline", "-n", "5", "--", "src"], ["git"]],
  [["git", "log", "-3", "--format=%h %an %s", "--since=2.weeks"], ["git"]],
  [["git", "-C", "sub", "status", "--short", "--branch"], ["git"]],
  [["git", "status", "--porc"], ["git"]],
  [["git", "--no-pager", "diff", "--stat", "HEAD~1"], ["git"]],
  [["git", "diff", "--cached", "--name-only"], ["git"]],
  [["git", "show", "HEAD:README.md"], ["git"]],
  [["git", "rev-parse", "--show-toplevel"], ["git"]],
  [["git", "ls-files", "-z", "--others", "--exclude-standard"], ["git"]],
  [["git", "blame", "-L", "1,5", "f"], ["git"]],
  [["git", "grep", "-n", "-e", "TODO", "--", "*.ts"], ["git"]],
  [["git", "branch", "-a", "-vv"], ["git"]],
  [["git", "branch", "--show-current"], ["git"]],
  [["git", "branch", "--list", "feat/*", "--contains", "HEAD"], ["git"]],
  [["git", "config", "--get", "user.email"], ["git"]],
  [["git", "config", "--list", "--show-origin"], ["git"]],
  [["git", "--version"], ["git"]],
  [["git", "version"], ["git"]],
  [["/usr/bin/git", "status"], ["git"]],
  [["ls", "-la"], ["ls"]],
  [["ls", "--color=never", "-1", "src"], ["ls"]],
  [["cat", "file"], ["cat"]],
  [["cat", "-n", "a", "b"], ["cat"]],
  [["head", "-n", "5", "f"], ["head"]],
  [["head", "-5", "f"], ["head"]],
  [["tail", "-n", "+2", "f"], ["tail"]],
  [["wc", "-l", "f"], ["wc"]],
  [["grep", "-rn", "x", "."], ["grep"]],
  [["grep", "-E", "--include=*.ts", "-e", "a|b", "--", "src"], ["grep"]],
  [["grep", "-C3", "--color=never", "x", "f"], ["grep"]],
  [["sort", "-rn", "-k", "2,2", "f"], ["sort"]],
  [["sort", "--check", "f"], ["sort"]],
  [["uniq", "-c"], ["uniq"]],
  [["cut", "-d:", "-f1", "/etc/passwd"], ["cut"]],
  [["tr", "a-z", "A-Z"], ["tr"]],
  [["diff", "-u", "a", "b"], ["diff"]],
  [["mkdir", "-p", "a/b"], ["mkdir"]],
  [["touch", "f"], ["touch"]],
  [["rm", "-rf", "build"], ["rm"]],
  [["cp", "-r", "a", "b"], ["cp"]],
  [["mv", "a", "b"], ["mv"]],
  [["pwd"], ["pwd"]],
  [["basename", "/a/b.ts", ".ts"], ["basename"]],
  [["echo", "-e", "--anything"], ["echo"]],
  [["printf", "%s\n", "x"], ["printf"]],
  [["yes"], ["yes"]],
  [["sleep", "1"], ["sleep"]],
  [["env"], ["env"]],
  [["env", "ls", "-la"], ["env", "ls"]],
  [["env", "--", "git", "status"], ["env", "git"]],
  [["sed", "-n", "1,5p", "f"], ["sed"]],
  [["sed", "-i", "s/a/b/g", "f"], ["sed"]],
  [["sed", "-E", "s/(a|b)+/x/2", "f"], ["sed"]],
  [["sed", "-e", "/^#/d", "-e", "s/[[:space:]]*$//", "f"], ["sed"]],
  [["sed", "s/[^a-z]/_/g;s#/#-#", "f"], ["sed"]],
  [["sed", "1i header; not a command", "f"], ["sed"]],
  [["sed", ":a;N;$!ba;s/\\n/ /g", "f"], ["sed"]],
  [["sed", "-n", "/start/,/end/{/x/p;}", "f"], ["sed"]],
  [["sed", "-n", "0~2p;$=", "f"], ["sed"]],
  [["sed", "y/abc/xyz/", "f"], ["sed"]],
  [["sed", "$d", "f"], ["sed"]],
  [["sed", "-n", "\\,x,Ip", "f"], ["sed"]],
  [["sed", "# comment\np", "f"], ["sed"]],
  [["find", ".", "-name", "*.ts", "-type", "f"], ["find"]],
  [["find", "src", "-maxdepth", "2", "-newermt", "2020-01-01", "-print0"], ["find"]],
  [["find", ".", "(", "-name", "a", "-o", "-name", "-exec", ")", "-prune"], ["find"]],
  [["find", "-L", ".", "-name", "x", "-delete"], ["find"]],
  [["bash", "-c", "ls -la"], ["bash", "ls"]],
  [["sh", "-c", "git status && git log --oneline | head -5"], ["sh", "git", "head"]],
  [["bash", "-euo", "pipefail", "-c", "grep -c x f || true"], ["bash", "grep"]],
  [["bash", "-c", "echo hi > out.txt 2>&1"], ["bash"]],
  [["bash", "-c", "[ -f x ] && cat x"], ["bash", "cat"]],
  [["bash", "-c", "set -eu; ls; exit 3"], ["bash", "ls"]],
  [["bash", "-c", `echo 'a $b' "c d" e\\ f "\\$x" '$(id)'`], ["bash"]],
  [["bash", "-c", "ls >/dev/null 2>&1 &"], ["bash", "ls"]],
  [["bash", "-c", "cat < in.txt >> out.txt; wc -l <out.txt 2>/dev/null"], ["bash", "cat", "wc"]],
  [["bash", "-c", "printf '%s\\n' a b | sort -u | uniq -c"], ["bash", "sort", "uniq"]],
  [["bash", "-c", "sed -n 1,5p f 2>&1 | tee -a log"], ["bash", "sed", "tee"]],
  [["bash", "-c", ""], ["bash"]],
  [["bash", "-c", "ls;"], ["bash", "ls"]],
  [["bash", "-c", "sh -c 'ls -l'"], ["bash", "sh", "ls"]],
  [["env", "bash", "-c", "echo x"], ["env", "bash"]],
  [["dash", "-c", "test -n x && echo y", "name", "arg"], ["dash"]],
];

Deno.test("analyzeCommand allows benign commands under their own grant", () => {
  for (const [argv, expected] of BENIGN) assertRuns(argv, expected);
});

Deno.test("analyzeCommand needs exec:run:* for an interpreter running a script file", () => {
  // A script runs whatever its code says, and the process may have written it.
  assertRuns(["python3", "script.py"], ["python3", ANY_COMMAND]);
  assertRuns(["node", "server.js"], ["node", ANY_COMMAND]);
});

// -- names ------------------------------------------------------------------

Deno.test("analyzeCommand names system programs by basename and other paths by path", () => {
  assertRuns(["/usr/bin/ls", "x"], ["ls"]);
  assertRuns(["/bin/../usr/bin/git", "status"], ["git"]);
  assertRuns(["../../usr/bin/ls"], ["ls"]);
  assertRuns(["./git", "status"], ["/ws/git", ANY_COMMAND]);
  assertRuns(["tools/run.sh"], ["/ws/tools/run.sh", ANY_COMMAND]);
  assertRuns(["/opt/tool/bin/tool"], ["/opt/tool/bin/tool", ANY_COMMAND]);
  assertRuns(["bash", "-c", "./x"], ["bash", "/ws/x", ANY_COMMAND]);
  assert.deepEqual(analyzeCommand(["./x"]).commands, ["./x", ANY_COMMAND]);
});

Deno.test("analyzeCommand matches long options by unique prefix, as getopt_long does", () => {
  assertRuns(["sort", "--numeric", "--rev", "f"], ["sort"]);
  assertRuns(["tail", "--lin=3", "f"], ["tail"]);
  // A prefix of an option that runs a program is that option.
  assertUnbounded(["sort", "--compress-p=x", "f"]);
  // A prefix of two options is ambiguous, whatever they do.
  const { reasons } = analyzeCommand(["sort", "--c", "f"]);
  assert.ok(reasons.some((r) => r.includes("ambiguous")), reasons.join("\n"));
  assertUnbounded(["ls", "--dere", "x"]);
});

// -- reasons and limits -----------------------------------------------------------

Deno.test("analyzeCommand explains what it unwrapped and why it needs exec:run:*", () => {
  const { commands: found, reasons } = analyzeCommand(["env", "bash", "-c", "ls; cd x"]);
  assert.deepEqual(found, ["env", "bash", "ls", ANY_COMMAND]);
  assert.ok(reasons.includes("bash: run by env"), reasons.join("\n"));
  assert.ok(reasons.includes("ls: run by bash -c"), reasons.join("\n"));
  assert.ok(reasons.some((r) => r.startsWith("*: ") && r.includes('"cd"')), reasons.join("\n"));
  // Reasons never carry a control character through.
  const escaped = analyzeCommand(["bash", "-c", "ls\u001b[2J\r"]).reasons;
  assert.ok(escaped.every((r) => !/\p{Cc}/u.test(r)), escaped.join("\n"));
  assert.ok(escaped.some((r) => r.includes("\\u{1b}")), escaped.join("\n"));
});

Deno.test("analyzeCommand reports each program by name even when the argv is unbounded", () => {
  // `curl` is reported by name, so a policy deny on it still refuses the call.
  assertRuns(["sh", "-c", "touch x && curl y"], ["sh", "touch", "curl", ANY_COMMAND]);
});

Deno.test("analyzeCommand stays bounded on hostile input", () => {
  let nested: string[] = ["ls"];
  for (let i = 0; i < 100; i++) nested = ["env", ...nested];
  assertUnbounded(nested);
  let script = "ls";
  for (let i = 0; i < 12; i++) {
    script = `bash -c ${script.replace(/[^A-Za-z0-9]/g, (c) => `\\${c}`)}`;
  }
  assertUnbounded(["bash", "-c", script]);
  const long = Array.from({ length: 5000 }, () => "ls -la").join(" && ");
  assertRuns(["bash", "-c", long], ["bash", "ls"]);
  const quotes = "'a'\"b\"".repeat(20_000);
  assertRuns(["sh", "-c", quotes], ["sh", "ab".repeat(20_000), ANY_COMMAND]);
  assertUnbounded(["sed", "s/x/y/;".repeat(20_000) + "e id", "f"]);
});

Deno.test("analyzeShellScript analyzes a bare shell script", () => {
  assert.deepEqual(
    analyzeShellScript("git status --short | grep -c M > count.txt").commands,
    ["git", "grep"],
  );
  assert.deepEqual(analyzeShellScript("cd src && make").commands, [ANY_COMMAND, "make"]);
});

Deno.test("uname runs nothing else; an option it does not have needs any program", () => {
  assertRuns(["uname", "-s"], ["uname"]);
  assertRuns(["uname", "-sr", "--kernel-n"], ["uname"]);
  assertUnbounded(["uname", "--exec=x"]);
});
