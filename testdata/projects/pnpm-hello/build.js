// Writes dist/ from src/ with the help of a registry dependency (ms): what a
// real bundler does, in a few lines.
const fs = require("fs");
const path = require("path");
const ms = require("ms");

fs.rmSync("dist", { recursive: true, force: true });
fs.mkdirSync(path.join("dist", "lib"), { recursive: true });
fs.mkdirSync(path.join("dist", "bin"), { recursive: true });
fs.copyFileSync(path.join("src", "greet.js"), path.join("dist", "lib", "greet.js"));
fs.writeFileSync(
  path.join("dist", "index.js"),
  `module.exports = { greet: require("./lib/greet"), dayMs: ${ms("1d")} };\n`,
);
fs.writeFileSync(path.join("dist", "bin", "hello"), '#!/usr/bin/env node\nconsole.log(require("../lib/greet")("kettle"));\n', { mode: 0o755 });
console.log(`built dist/ (one day is ${ms("1d")} ms)`);
