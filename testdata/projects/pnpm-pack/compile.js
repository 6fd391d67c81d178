// Writes dist/ from src/ (what a library's compile step does).
const fs = require("fs");
const path = require("path");
const ms = require("ms");

fs.rmSync("dist", { recursive: true, force: true });
fs.mkdirSync("dist", { recursive: true });
fs.copyFileSync(path.join("src", "index.js"), path.join("dist", "index.js"));
fs.writeFileSync(path.join("dist", "day.json"), JSON.stringify({ dayMs: ms("1d") }) + "\n");
console.log("compiled dist/");
