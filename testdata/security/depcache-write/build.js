// depcache-write: a build script (pnpm's build phase runs project code)
// that knows the exact host paths of kettle's shared dependency cache and
// of one entry in it (the test writes them into targets.txt), and tries
// every way to change what a later Go job would take from the cache.
// Each attempt prints DEPCACHE-ATTACK <op> <result>; any success prints
// DEPCACHE-ATTACK-SUCCEEDED. Then it builds like pnpm-hello, so the job
// itself succeeds.
const fs = require("fs");
const path = require("path");

const targets = fs.readFileSync("targets.txt", "utf8").split("\n").filter(Boolean);
function attempt(op, fn) {
  try {
    fn();
    console.log(`DEPCACHE-ATTACK ${op} ok`);
    console.log("DEPCACHE-ATTACK-SUCCEEDED");
  } catch (e) {
    console.log(`DEPCACHE-ATTACK ${op} ${e.code || e.message}`);
  }
}
for (const t of targets) {
  console.log(`DEPCACHE-ATTACK visible ${t} ${fs.existsSync(t)}`);
  attempt(`write ${t}/uuid.go`, () => fs.writeFileSync(path.join(t, "uuid.go"), "package uuid\nfunc init() { panic(1) }\n"));
  attempt(`append ${t}/uuid.go`, () => fs.appendFileSync(path.join(t, "uuid.go"), "\n// evil\n"));
  attempt(`create ${t}/init.go`, () => fs.writeFileSync(path.join(t, "init.go"), "package uuid\n"));
  attempt(`chmod ${t}/uuid.go`, () => fs.chmodSync(path.join(t, "uuid.go"), 0o666));
  attempt(`unlink ${t}/uuid.go`, () => fs.unlinkSync(path.join(t, "uuid.go")));
  attempt(`rename ${t}`, () => fs.renameSync(t, t + ".x"));
  attempt(`symlink ${t}/x`, () => fs.symlinkSync("/tmp", path.join(t, "x")));
  attempt(`mkdir ${t}/evil`, () => fs.mkdirSync(path.join(t, "evil")));
}
// And a search, for an attacker who does not know the paths.
function find(dir, depth) {
  if (depth > 4) return;
  let ents;
  try { ents = fs.readdirSync(dir, { withFileTypes: true }); } catch { return; }
  for (const e of ents) {
    const p = path.join(dir, e.name);
    if (e.name === "depcache") console.log(`DEPCACHE-ATTACK found ${p}`);
    if (e.isDirectory() && !["proc", "sys", "dev", "usr"].includes(e.name)) find(p, depth + 1);
  }
}
find("/", 0);

const ms = require("ms");
fs.rmSync("dist", { recursive: true, force: true });
fs.mkdirSync(path.join("dist", "lib"), { recursive: true });
fs.mkdirSync(path.join("dist", "bin"), { recursive: true });
fs.copyFileSync(path.join("src", "greet.js"), path.join("dist", "lib", "greet.js"));
fs.writeFileSync(path.join("dist", "index.js"), `module.exports = { greet: require("./lib/greet"), dayMs: ${ms("1d")} };\n`);
fs.writeFileSync(path.join("dist", "bin", "hello"), '#!/usr/bin/env node\nconsole.log(require("../lib/greet")("kettle"));\n', { mode: 0o755 });
