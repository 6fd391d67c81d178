'use strict';
// kettle's registry mirror for `pnpm fetch` (toolchain/pnpm/depcache.go).
// It runs inside the fetch sandbox: node mirror.js PLAN PNPM ARGS...
// serves on the sandbox's own loopback exactly the tarballs PLAN names
// (a path per registry package of pnpm-lock.yaml), each either from the
// shared dependency cache (read-only here) or downloaded from the
// upstream registry into the job's directory, and runs pnpm with its
// registry pointed at it. Nothing it does is trusted: pnpm checks every
// tarball against the lockfile's integrity, and kettle hashes its own copy
// of each download again before it enters the shared cache.
const fs = require('fs');
const http = require('http');
const https = require('https');
const tls = require('tls');
const { spawn } = require('child_process');

const plan = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const pending = new Map();

function proxyFor(u) {
  const e = process.env;
  const p = u.protocol === 'https:'
    ? (e.https_proxy || e.HTTPS_PROXY || e.all_proxy || e.ALL_PROXY)
    : (e.http_proxy || e.HTTP_PROXY || e.all_proxy || e.ALL_PROXY);
  return p ? new URL(p) : null;
}

// open sends GET url, through the egress proxy when there is one (node 20
// ignores HTTPS_PROXY by itself).
function open(url) {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const tlsOn = u.protocol === 'https:';
    const port = Number(u.port || (tlsOn ? 443 : 80));
    const p = proxyFor(u);
    if (!p) {
      (tlsOn ? https : http).get(u, resolve).on('error', reject);
      return;
    }
    const pport = Number(p.port || 80);
    if (!tlsOn) {
      http.get({ host: p.hostname, port: pport, path: u.href, headers: { host: u.host } }, resolve).on('error', reject);
      return;
    }
    const target = u.hostname + ':' + port;
    const c = http.request({ host: p.hostname, port: pport, method: 'CONNECT', path: target, headers: { host: target } });
    c.on('error', reject);
    c.on('connect', (res, socket) => {
      if (res.statusCode !== 200) {
        socket.destroy();
        reject(new Error('the egress proxy refused ' + u.host + ' (' + res.statusCode + ')'));
        return;
      }
      // No agent: a request with createConnection and no agent uses it.
      https.get({
        host: u.hostname, port, path: u.pathname + u.search, servername: u.hostname,
        createConnection: () => tls.connect({ socket, servername: u.hostname }),
      }, resolve).on('error', reject);
    });
    c.end();
  });
}

async function fetchTo(url, out) {
  for (let i = 0; i < 5; i++) {
    const res = await open(url);
    if ([301, 302, 303, 307, 308].includes(res.statusCode) && res.headers.location) {
      res.resume();
      url = new URL(res.headers.location, url).href;
      continue;
    }
    if (res.statusCode !== 200) {
      res.resume();
      throw new Error('HTTP ' + res.statusCode);
    }
    await new Promise((resolve, reject) => {
      const f = fs.createWriteStream(out + '.part');
      let n = 0;
      const fail = (e) => { f.destroy(); res.destroy(); reject(e); };
      res.on('data', (b) => {
        n += b.length;
        if (n > plan.max) fail(new Error('larger than ' + plan.max + ' bytes'));
      });
      res.on('error', fail);
      res.on('aborted', () => fail(new Error('connection closed')));
      f.on('error', fail);
      f.on('finish', resolve);
      res.pipe(f);
    });
    fs.renameSync(out + '.part', out);
    return;
  }
  throw new Error('too many redirects');
}

const server = http.createServer((req, res) => {
  let p = '';
  try {
    p = decodeURIComponent(new URL(req.url, 'http://mirror').pathname);
  } catch (e) { /* not a package */ }
  const pkg = Object.prototype.hasOwnProperty.call(plan.pkgs, p) ? plan.pkgs[p] : null;
  if (!pkg || (req.method !== 'GET' && req.method !== 'HEAD')) {
    console.error('kettle mirror: no package at ' + JSON.stringify(p.slice(0, 200)));
    res.writeHead(404);
    res.end();
    return;
  }
  let ready;
  if (pkg.file) {
    ready = Promise.resolve(pkg.file);
  } else {
    if (!pending.has(p)) {
      pending.set(p, fetchTo(pkg.upstream, pkg.out).then(() => pkg.out, (e) => { pending.delete(p); throw e; }));
    }
    ready = pending.get(p);
  }
  // Messages carry error codes, never paths (the build log is the
  // client's).
  ready.then((file) => {
    let st;
    try {
      st = fs.statSync(file);
    } catch (e) {
      console.error('kettle mirror: ' + pkg.id + ': cannot read the tarball (' + e.code + ')');
      res.writeHead(500);
      res.end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': st.size });
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    fs.createReadStream(file).on('error', () => res.destroy()).pipe(res);
  }, (e) => {
    console.error('kettle mirror: ' + pkg.id + ': ' + (e.code || e.message));
    res.writeHead(502);
    res.end();
  });
});

server.listen(0, '127.0.0.1', () => {
  const reg = 'http://127.0.0.1:' + server.address().port + '/';
  const local = '127.0.0.1';
  const env = Object.assign({}, process.env, {
    npm_config_registry: reg, NPM_CONFIG_REGISTRY: reg,
    NO_PROXY: local, no_proxy: local, npm_config_noproxy: local,
  });
  const child = spawn(process.argv[3], process.argv.slice(4), { stdio: 'inherit', env });
  child.on('error', (e) => { console.error('kettle mirror: ' + e.message); process.exit(1); });
  child.on('exit', (code) => process.exit(code === null ? 1 : code));
});
