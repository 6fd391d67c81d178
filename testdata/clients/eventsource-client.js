// Follows GET /build/{id}/events with the `eventsource` package from the
// npm registry (a real EventSource: it reconnects by itself with
// Last-Event-ID) and prints one JSON line when it gives up for good.
//
// usage: NODE_PATH=... node eventsource-client.js URL TIMEOUT_MS
const { EventSource } = require('eventsource');
const [url, timeoutMs] = process.argv.slice(2);

const ids = [];
let errors = 0;
const es = new EventSource(url);
es.onmessage = (e) => { ids.push(Number(e.lastEventId)); };
es.onerror = () => {
  errors++;
  if (es.readyState === EventSource.CLOSED) {
    console.log(JSON.stringify({ closed: true, ids, errors }));
    process.exit(0);
  }
};
setTimeout(() => {
  console.log(JSON.stringify({ closed: false, ids, errors, readyState: es.readyState }));
  es.close();
  process.exit(0);
}, Number(timeoutMs));
