// A browser-style EventSource client (the npm package `eventsource`, which
// implements the WHATWG spec: reconnect with Last-Event-ID, stop on 204) on
// GET /build/{id}/events. It does nothing when `complete` arrives, as a
// careless page would, so the server's answer to the reconnect decides
// whether it loops. After WATCH_MS it prints what it saw as JSON.
//
// usage: node eventsource-client.js EVENTS_URL WATCH_MS   (NODE_PATH finds the package)
const { EventSource } = require('eventsource');
const [url, watchMs] = process.argv.slice(2);

const seen = { messages: 0, complete: false, errors: 0, ids: [] };
const es = new EventSource(url);
es.onmessage = (e) => {
  seen.messages++;
  seen.ids.push(e.lastEventId);
  if (JSON.parse(e.data).type === 'complete') seen.complete = true;
};
es.onerror = () => { seen.errors++; };
setTimeout(() => {
  seen.readyState = es.readyState; // 2 = CLOSED: it gave up reconnecting
  es.close();
  console.log(JSON.stringify(seen));
  process.exit(0);
}, Number(watchMs));
