// The seed's JavaScript client for POST /build/stream, as its docs gave it
// ("Streaming build progress"), unchanged below the marked line; only the
// constants above it are filled in by the test (argv). It reads the body
// with fetch + getReader and parses each read on its own: an event split
// across two reads is a SyntaxError, which is what issue 18 saw.
//
// usage: node seed-stream-client.js API_URL REPO_URL REF
const [API_URL, REPO_URL, REF] = process.argv.slice(2);

// ---- seed client ----
async function streamBuild(repoUrl, ref) {
  const form = new FormData();
  form.append('repo_url', repoUrl);
  form.append('ref', ref);

  const response = await fetch(`${API_URL}/build/stream`, {
    method: 'POST',
    body: form,
  });

  const reader = response.body.getReader();
  const decoder = new TextDecoder();

  while (true) {
    const { done, value } = await reader.read();
    if (done) break;

    const chunk = decoder.decode(value);
    const lines = chunk.split('\n');

    for (const line of lines) {
      if (line.startsWith('data: ')) {
        const data = JSON.parse(line.slice(6));
        if (data.type === 'complete') {
          console.log('Build complete:', JSON.stringify(data.result));
        } else {
          console.log(data.message);
        }
      }
    }
  }
}

streamBuild(REPO_URL, REF);
