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

// tunnelAgent keeps TLS connections to the registry alive, each through a
// CONNECT tunnel of the egress proxy (node 20 ignores HTTPS_PROXY).
function tunnelAgent(proxy) {
  const agent = new https.Agent({ keepAlive: true, maxSockets: 16 });
  agent.createConnection = (opts, cb) => {
    const target = opts.host + ':' + opts.port;
    const c = http.request({ host: proxy.hostname, port: Number(proxy.port || 80), method: 'CONNECT', path: target, headers: { host: target } });
    c.on('error', (e) => cb(e));
    c.on('connect', (res, socket) => {
      if (res.statusCode !== 200) {
        socket.destroy();
        cb(new Error('the egress proxy refused the registry (' + res.statusCode + ')'));
        return;
      }
      cb(null, tls.connect({ socket, servername: opts.servername || opts.host }));
    });
    c.end();
  };
  return agent;
}

const agents = new Map();
const httpAgent = new http.Agent({ keepAlive: true, maxSockets: 16 });

// open sends GET url (through the egress proxy when there is one).
function open(url) {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const p = proxyFor(u);
    if (u.protocol === 'https:') {
      const key = p ? p.href : '';
      if (!agents.has(key)) agents.set(key, p ? tunnelAgent(p) : new https.Agent({ keepAlive: true, maxSockets: 16 }));
      https.get(u, { agent: agents.get(key), servername: u.hostname }, resolve).on('error', reject);
    } else if (p) {
      http.get({ host: p.hostname, port: Number(p.port || 80), path: u.href, headers: { host: u.host }, agent: httpAgent }, resolve).on('error', reject);
    } else {
      http.get(u, { agent: httpAgent }, resolve).on('error', reject);
    }
  });
}

// upstream opens the package's tarball, following redirects.
async function upstream(url) {
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
    return res;
  }
  throw new Error('too many redirects');
}

// relay streams a download to pnpm and into the job's file at once; the
// file is renamed into place only when complete.
function relay(pkg, req, res) {
  return upstream(pkg.upstream).then((up) => new Promise((resolve, reject) => {
    const headers = { 'content-type': 'application/octet-stream' };
    if (up.headers['content-length']) headers['content-length'] = up.headers['content-length'];
    res.writeHead(200, headers);
    const f = fs.createWriteStream(pkg.out + '.part');
    let n = 0;
    let failed = false;
    const fail = (e) => {
      if (failed) return;
      failed = true;
      f.destroy();
      up.destroy();
      res.destroy();
      reject(e);
    };
    up.on('data', (b) => {
      n += b.length;
      if (n > plan.max) {
        fail(new Error('larger than ' + plan.max + ' bytes'));
        return;
      }
      f.write(b);
      if (!res.write(b)) {
        up.pause();
        res.once('drain', () => up.resume());
      }
    });
    up.on('error', fail);
    up.on('aborted', () => fail(new Error('connection closed')));
    f.on('error', fail);
    up.on('end', () => {
      if (failed) return;
      res.end();
      f.end(() => {
        try {
          fs.renameSync(pkg.out + '.part', pkg.out);
          resolve();
        } catch (e) {
          reject(e);
        }
      });
    });
  }));
}

function serveFile(pkg, file, req, res) {
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
  // Messages carry error codes, never paths (the build log is the
  // client's).
  if (pkg.file) {
    serveFile(pkg, pkg.file, req, res);
    return;
  }
  if (fs.existsSync(pkg.out)) { // downloaded by an earlier request
    serveFile(pkg, pkg.out, req, res);
    return;
  }
  if (pending.has(p) || req.method === 'HEAD') {
    // Another request is downloading it: serve the file once complete.
    (pending.get(p) || Promise.reject(new Error('not downloaded yet'))).then(() => serveFile(pkg, pkg.out, req, res), (e) => {
      console.error('kettle mirror: ' + pkg.id + ': ' + (e.code || e.message));
      res.writeHead(502);
      res.end();
    });
    return;
  }
  const done = relay(pkg, req, res).finally(() => pending.delete(p));
  pending.set(p, done);
  done.catch((e) => {
    console.error('kettle mirror: ' + pkg.id + ': ' + (e.code || e.message));
    if (!res.headersSent) {
      res.writeHead(502);
      res.end();
    }
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
