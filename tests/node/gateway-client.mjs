// omni2's /mcp from the TypeScript MCP SDK client (@modelcontextprotocol/sdk), for
// omni2-core/tests/gateway.rs.
//
//   node gateway-client.mjs URL [--wait-change]   (headers as JSON on stdin, one line)
//
// Session revision (initialize, Mcp-Session-Id). Each step prints one JSON line
// {"step": ...}. With --wait-change: prints {"step":"ready"}, waits (bounded) for
// notifications/tools/list_changed, lists the tools again, and calls py__counter (whose
// server the test has stopped: the breaker's fast error, step "down_call").
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ToolListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js';
import { createInterface } from 'node:readline';

const out = (step, fields = {}) => console.log(JSON.stringify({ step, ...fields }));
const names = (r) => r.tools.map((t) => t.name).sort();

async function call(client, name, args) {
  const started = performance.now();
  try {
    const r = await client.callTool({ name, arguments: args });
    return {
      ok: true,
      is_error: Boolean(r.isError),
      structured: r.structuredContent ?? null,
      text: (r.content ?? []).filter((c) => c.type === 'text').map((c) => c.text),
      cached: r._meta?.['omni2/cached'] ?? null,
      ms: performance.now() - started,
    };
  } catch (e) {
    return { ok: false, code: e.code ?? null, message: String(e.message), data: e.data ?? null, ms: performance.now() - started };
  }
}

const [url, ...flags] = process.argv.slice(2);
const waitChange = flags.includes('--wait-change');
const lines = createInterface({ input: process.stdin });
const headers = JSON.parse(await new Promise((resolve) => lines.once('line', resolve)));
lines.close();

const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });
const client = new Client({ name: 'omni2-gateway-test', version: '1.0.0' });
let changed;
const changedOnce = new Promise((resolve) => { changed = resolve; });
client.setNotificationHandler(ToolListChangedNotificationSchema, () => changed());
await client.connect(transport);
out('initialize', {
  protocol: transport.protocolVersion ?? null,
  server: client.getServerVersion()?.name ?? null,
  list_changed: Boolean(client.getServerCapabilities()?.tools?.listChanged),
  session: Boolean(transport.sessionId),
});
out('list', { tools: names(await client.listTools()) });
if (waitChange) {
  out('ready');
  const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error('no list_changed within 60 s')), 60_000));
  await Promise.race([changedOnce, timeout]);
  out('changed', { tools: names(await client.listTools()) });
  out('down_call', await call(client, 'py__counter', {}));
} else {
  out('add', await call(client, 'py__add', { a: 20, b: 22 }));
  out('counter1', await call(client, 'py__counter', {}));
  out('counter2', await call(client, 'py__counter', {}));
  out('everything_echo', await call(client, 'ev__echo', { message: 'from ts' }));
  out('everything_sum', await call(client, 'ev__get-sum', { a: 1, b: 2 }));
}
await client.close();
process.exit(0);
