// HTTP phase of `outpost bench` (scripts/bench.ts): serves the bench's store with the appliance's own
// serve path (appliance/cluster.ts, OUTPOST_HTTP_WORKERS processes, default one per core) and measures,
// with autocannon in this process, GET /api/v1/lookup beside a bare node:http server answering a fixed
// JSON body with the same number of processes; p99 at half that load; NDJSON batch throughput; and
// lookups while a delta package is imported and its filters swapped in.
import { fork } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { httpWorkerCount, startServing } from '../appliance/cluster.ts';
import { createLogger } from '../appliance/log.ts';
import { createToken } from '../appliance/tokens.ts';
import { importPackage } from '../sync/import.ts';
import type { HttpBench } from './bench.ts';

// autocannon ships no types; the parts used here.
interface Result {
  requests: { average: number };
  latency: { p50: number; p99: number; max: number };
  errors: number;
  timeouts: number;
  non2xx: number;
  statusCodeStats?: Record<string, unknown>;
}
type Options = Record<string, unknown> & { url: string };
interface Instance {
  stop(): void;
  once(event: 'done', fn: (r: Result) => void): void;
}
const autocannon = createRequire(import.meta.url)('autocannon') as (opts: Options, cb?: (err: Error | null, res: Result) => void) => Instance;

function cannon(opts: Options): Promise<Result> {
  return new Promise((resolve, reject) => {
    autocannon(opts, (err, res) => (err ? reject(err) : resolve(res)));
  });
}

/** autocannon options for GET lookups cycling through `values`. */
function lookupLoad(url: string, token: string, values: string[], extra: Partial<Options>): Options {
  const paths = values.slice(0, 5000).map((v) => `/api/v1/lookup?value=${encodeURIComponent(v)}`);
  let i = 0;
  return {
    url,
    connections: 32,
    pipelining: 1,
    headers: { authorization: `Bearer ${token}` },
    requests: [{ setupRequest: (req: any) => ({ ...req, path: paths[i++ % paths.length] }) }],
    ...extra,
  } as Options;
}

// A bare node:http server with `workers` processes (node:cluster, like ours) answering a fixed JSON body.
const RAW_SERVER = `
const cluster = require('node:cluster');
const http = require('node:http');
const body = Buffer.from(process.env.RAW_BODY);
const n = Number(process.env.RAW_WORKERS);
if (cluster.isPrimary) {
  let up = 0;
  for (let i = 0; i < n; i++) cluster.fork().on('listening', (a) => { if (++up === n) process.send({ port: a.port }); });
  process.on('message', () => { for (const w of Object.values(cluster.workers)) w.kill(); process.exit(0); });
} else {
  http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length });
    res.end(body);
  }).listen(0, '127.0.0.1');
}
`;

async function startRaw(dir: string, workers: number, body: string): Promise<{ url: string; stop(): void }> {
  const file = path.join(dir, 'raw-server.cjs');
  fs.writeFileSync(file, RAW_SERVER);
  const child = fork(file, [], { env: { ...process.env, RAW_BODY: body, RAW_WORKERS: String(workers) }, execArgv: [], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const port = await new Promise<number>((resolve, reject) => {
    child.once('message', (m: { port: number }) => resolve(m.port));
    child.once('exit', (c) => reject(new Error(`raw server exited with ${c}`)));
  });
  return { url: `http://127.0.0.1:${port}`, stop: () => child.send('stop') };
}

/** NDJSON streams, one per worker, each posting `lines` values; returns answered values per second. */
async function ndjson(url: string, token: string, values: string[], streams: number, lines: number): Promise<{ perS: number; answered: number; errors: number }> {
  let body = '';
  for (let i = 0; i < lines; i++) body += values[i % values.length] + '\n';
  const payload = Buffer.from(body);
  const t0 = performance.now();
  let errors = 0;
  const counts = await Promise.all(
    Array.from({ length: streams }, () =>
      new Promise<number>((resolve, reject) => {
        const req = http.request(`${url}/api/v1/lookup`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/x-ndjson' } }, (res) => {
          if (res.statusCode !== 200) errors++;
          let n = 0;
          res.on('data', (chunk: Buffer) => {
            for (let i = chunk.indexOf(10); i >= 0; i = chunk.indexOf(10, i + 1)) n++;
          });
          res.on('end', () => resolve(n));
          res.on('error', reject);
        });
        req.on('error', reject);
        req.end(payload);
      }),
    ),
  );
  const answered = counts.reduce((a, b) => a + b, 0);
  if (answered !== streams * lines) errors++;
  return { perS: answered / ((performance.now() - t0) / 1000), answered, errors };
}

const errorsOf = (r: Result) => r.errors + r.timeouts + r.non2xx;
const fmt = (n: number, d = 0) => n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });

export const benchHttp: HttpBench = async ({ cfg, dataDir, misses, mixed, seconds, delta, say }) => {
  const workers = process.env.OUTPOST_HTTP_WORKERS ? httpWorkerCount() : Math.max(1, os.availableParallelism());
  const log = createLogger('warn');
  const t0 = performance.now();
  const served = await startServing(cfg, log, workers);
  const serveStartMs = performance.now() - t0;
  const out: Record<string, number | null> = { http_workers: workers, serve_start_ms: Math.round(serveStartMs) };
  try {
    const { token } = createToken(served.db, 'bench', 'lookup');
    // The bare server answers a real result body, so both sides write the same bytes.
    const body = JSON.stringify(served.engine.lookup(misses[0]));
    const warm = await cannon(lookupLoad(served.url, token, misses, { duration: 1 }));
    if (errorsOf(warm) > 0) throw new Error(`HTTP warm-up saw ${errorsOf(warm)} errors/non-2xx (first status codes: ${JSON.stringify(warm.statusCodeStats)})`);

    const raw = await startRaw(path.dirname(dataDir), workers, body);
    let rawRes: Result;
    try {
      // Same client work on both sides (rotating paths, the Authorization header): on a small machine the
      // load generator shares the cores, so a cheaper client setup would flatter the bare server.
      await cannon(lookupLoad(raw.url, token, misses, { duration: 1 }));
      rawRes = await cannon(lookupLoad(raw.url, token, misses, { duration: seconds }));
    } finally {
      raw.stop();
    }
    const ours = await cannon(lookupLoad(served.url, token, misses, { duration: seconds }));
    out.raw_http_rps = Math.round(rawRes.requests.average);
    out.http_rps = Math.round(ours.requests.average);
    out.http_vs_raw = Math.round((100 * ours.requests.average) / rawRes.requests.average) / 100;
    out.http_errors = errorsOf(ours);
    say(`http_rps            ${fmt(ours.requests.average)} req/s   GET /api/v1/lookup, 32 connections, ${workers} process(es); bare node:http ${fmt(rawRes.requests.average)} req/s → ${fmt(out.http_vs_raw * 100)}% (p99 ${ours.latency.p99} ms at full load)`);

    const half = Math.max(1, Math.round(ours.requests.average / 2));
    const halfRes = await cannon(lookupLoad(served.url, token, misses, { duration: seconds, overallRate: half }));
    out.http_p99_half_ms = halfRes.latency.p99;
    out.http_p50_half_ms = halfRes.latency.p50;
    say(`http_p99_half_ms    ${halfRes.latency.p99} ms   at ${fmt(half)} req/s (half of http_rps); p50 ${halfRes.latency.p50} ms, ${errorsOf(halfRes)} errors`);

    const lines = Math.max(20_000, Math.min(400_000, Math.round(150_000 * seconds)));
    await ndjson(served.url, token, mixed, workers, 20_000);
    const nd = await ndjson(served.url, token, mixed, workers, lines);
    out.ndjson_values_per_s = Math.round(nd.perS);
    out.ndjson_errors = nd.errors;
    say(`ndjson_values_per_s ${fmt(nd.perS)} values/s   ${workers} NDJSON stream(s) of ${fmt(lines)} mixed values (1% listed), ${nd.errors} errors`);

    if (delta) {
      // Lookups at half load while the delta is verified, applied (worker thread, one transaction) and the
      // new filters built and swapped in by every process; stopped once all of that is done.
      const inst = autocannon(lookupLoad(served.url, token, misses, { duration: 3600, overallRate: half }));
      const done = new Promise<Result>((resolve) => inst.once('done', resolve));
      await new Promise((r) => setTimeout(r, 500));
      const tA = performance.now();
      const res = await importPackage(cfg, served.db, delta.tar, { actor: 'bench' });
      const applyMs = performance.now() - tA;
      const file = path.join(dataDir, 'filters', `filters-${res.generation}.bin`);
      const deadline = Date.now() + 120_000;
      while (!fs.existsSync(file) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      const swapMs = performance.now() - tA;
      await new Promise((r) => setTimeout(r, 2500)); // workers poll every second, then load the file
      inst.stop();
      const during = await done;
      out.delta_size = delta.count;
      out.delta_apply_ms = Math.round(applyMs);
      out.delta_swap_ms = Math.round(swapMs);
      out.delta_p99_ms = during.latency.p99;
      out.delta_errors = errorsOf(during);
      say(`delta_p99_ms        ${during.latency.p99} ms   lookups at ${fmt(half)} req/s during a ${fmt(delta.count)}-indicator delta: applied in ${fmt(applyMs)} ms, new filters persisted after ${fmt(swapMs)} ms; ${out.delta_errors} errors, max ${during.latency.max} ms`);
    }
    return out;
  } finally {
    await served.close();
  }
};
