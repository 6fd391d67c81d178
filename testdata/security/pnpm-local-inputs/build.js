// Builds dist/ from the local packages and the (patched) registry package.
const fs = require("fs");
fs.mkdirSync("dist", { recursive: true });
fs.writeFileSync("dist/index.js", `module.exports = ${JSON.stringify({ ms: require("ms")("1d") })};\n`);
console.log("built dist/");
