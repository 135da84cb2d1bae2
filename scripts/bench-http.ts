// HTTP phase of `outpost bench` (scripts/bench.ts): serves the bench's store with the appliance's own
// serve path (appliance/cluster.ts, OUTPOST_HTTP_WORKERS processes, default one per core) and measures,
// with a load generator in a process of its own (scripts/loadgen.ts), GET /api/v1/lookup beside a bare
// node:http server answering a fixed JSON body with the same number of processes (closed loop, autocannon);
// p99 at half that load (paced, open loop, both servers); NDJSON batch throughput; and lookups at half load
// while a delta package is imported and its filters swapped in. The CPU the
// load generator and the server processes used is reported with each throughput run: on a small machine
// they share the cores, so the figures say how much of the machine each side had.
import cluster from 'node:cluster';
import { fork, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { httpWorkerCount, startServing } from '../appliance/cluster.ts';
import { createLogger } from '../appliance/log.ts';
import { createToken } from '../appliance/tokens.ts';
import { importPackage } from '../sync/import.ts';
import type { HttpBench } from './bench.ts';
import type { LoadResult, LoadSpec } from './loadgen.ts';

/** A run's result with the load generator's CPU time over the run's wall time (cores used). */
type Run = LoadResult;

// The load generator (scripts/loadgen.ts) runs in its own process (forked once, one run per message), so
// neither the primary's work in this process (imports, filter builds) nor the client's own work shares an
// event loop with the other: latencies are the server's plus the client's own, never the bench process's
// stalls. Throughput runs are closed-loop (autocannon); latency runs are paced (open-loop, evenly spaced
// requests, latency from each request's due instant).
class LoadGen {
  private constructor(private readonly child: ChildProcess) {}

  static async start(): Promise<LoadGen> {
    const child = fork(fileURLToPath(new URL('./loadgen.ts', import.meta.url)), [], { execArgv: ['--import', 'tsx', '--expose-gc'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    await new Promise<void>((resolve, reject) => {
      child.once('message', () => resolve());
      child.once('exit', (c) => reject(new Error(`load generator exited with ${c}`)));
    });
    return new LoadGen(child);
  }

  /** Starts one run; stop() ends it early. */
  begin(spec: LoadSpec): { done: Promise<Run>; stop(): void } {
    const done = new Promise<Run>((resolve, reject) => {
      const onExit = (c: number | null) => reject(new Error(`load generator exited with ${c}`));
      this.child.once('exit', onExit);
      this.child.once('message', (m: { result?: Run; error?: string }) => {
        this.child.off('exit', onExit);
        if (m.result) resolve(m.result);
        else reject(new Error(`load generator: ${m.error}`));
      });
    });
    this.child.send({ spec });
    return { done, stop: () => this.child.send({ stop: true }) };
  }

  run(spec: LoadSpec): Promise<Run> {
    return this.begin(spec).done;
  }

  close(): void {
    this.child.kill();
  }
}

/** GET lookups cycling through (at most 5,000 of) `values`. */
function lookupPaths(values: string[]): string[] {
  return values.slice(0, 5000).map((v) => `/api/v1/lookup?value=${encodeURIComponent(v)}`);
}

/** CPU seconds (user + system) a process has used so far, from /proc (Linux); null where unavailable. */
function cpuSeconds(pid: number): number | null {
  try {
    const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = f.slice(f.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
  } catch {
    return null;
  }
}

/** Resident memory of a process in MiB (VmRSS from /proc, Linux); null where unavailable. */
function rssMiB(pid: number): number | null {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Math.round(Number(m[1]) / 1024) : null;
  } catch {
    return null;
  }
}

/** Measures the cores a set of processes used during `fn` (null when /proc is not there). */
async function withCpu<T>(pids: () => number[], fn: () => Promise<T>): Promise<{ value: T; cores: number | null }> {
  const sum = () => {
    let t = 0;
    for (const pid of pids()) {
      const c = cpuSeconds(pid);
      if (c === null) return null;
      t += c;
    }
    return t;
  };
  const c0 = sum();
  const t0 = performance.now();
  const value = await fn();
  const c1 = sum();
  return { value, cores: c0 === null || c1 === null ? null : (c1 - c0) / ((performance.now() - t0) / 1000) };
}

// A bare node:http server with `workers` processes (node:cluster, like ours) answering a fixed JSON body.
const RAW_SERVER = `
const cluster = require('node:cluster');
const http = require('node:http');
const body = Buffer.from(process.env.RAW_BODY);
const n = Number(process.env.RAW_WORKERS);
if (cluster.isPrimary) {
  let up = 0;
  const pids = [];
  for (let i = 0; i < n; i++) { const w = cluster.fork(); pids.push(w.process.pid); w.on('listening', (a) => { if (++up === n) process.send({ port: a.port, pids }); }); }
  process.on('message', () => { for (const w of Object.values(cluster.workers)) w.kill(); process.exit(0); });
} else {
  http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length });
    res.end(body);
  }).listen(0, '127.0.0.1');
}
`;

async function startRaw(dir: string, workers: number, body: string): Promise<{ url: string; pids: number[]; stop(): void }> {
  const file = path.join(dir, 'raw-server.cjs');
  fs.writeFileSync(file, RAW_SERVER);
  const child = fork(file, [], { env: { ...process.env, RAW_BODY: body, RAW_WORKERS: String(workers) }, execArgv: [], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const { port, pids } = await new Promise<{ port: number; pids: number[] }>((resolve, reject) => {
    child.once('message', (m: { port: number; pids: number[] }) => resolve(m));
    child.once('exit', (c) => reject(new Error(`raw server exited with ${c}`)));
  });
  return { url: `http://127.0.0.1:${port}`, pids, stop: () => child.send('stop') };
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

const errorsOf = (r: Run) => r.errors;
const fmt = (n: number, d = 0) => n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });

export const benchHttp: HttpBench = async ({ cfg, dataDir, misses, mixed, seconds, delta, say }) => {
  const workers = process.env.OUTPOST_HTTP_WORKERS ? httpWorkerCount() : Math.max(1, os.availableParallelism());
  const log = createLogger('warn');
  const t0 = performance.now();
  const served = await startServing(cfg, log, workers);
  const serveStartMs = performance.now() - t0;
  const out: Record<string, number | null> = { http_workers: workers, serve_start_ms: Math.round(serveStartMs) };
  const gen = await LoadGen.start();
  let stopRaw: (() => void) | null = null;
  try {
    const { token } = createToken(served.db, 'bench', 'lookup');
    const paths = lookupPaths(misses);
    // The bare server answers a real result body, so both sides write the same bytes.
    const body = JSON.stringify(served.engine.lookup(misses[0]));
    // Each side is warmed up until its rate is steady (the JIT's background compiles take seconds on a busy
    // machine): 1 s runs until two in a row agree within 10 %, at most 6.
    const warmUp = async (url: string) => {
      let last = 0;
      for (let i = 0; i < 6; i++) {
        const r = await gen.run({ url, token, paths, duration: 1 });
        if (errorsOf(r) > 0) throw new Error(`HTTP warm-up saw ${errorsOf(r)} errors/non-2xx (status codes: ${r.statuses.join(', ') || 'none'})`);
        if (last > 0 && Math.abs(r.rps - last) < 0.1 * last) return;
        last = r.rps;
      }
    };
    await warmUp(served.url);

    const raw = await startRaw(path.dirname(dataDir), workers, body);
    stopRaw = raw.stop; // stopped at the end: the delta phase measures it too
    // Rounds alternate bare → ours so a change in the machine's other load hits both sides alike; each side's
    // figure is the median of its rounds.
    const rawRuns: { value: Run; cores: number | null }[] = [];
    const ourRuns: { value: Run; cores: number | null }[] = [];
    const ourPids = () => Object.values(cluster.workers ?? {}).map((w) => w!.process.pid!);
    // Same client work on both sides (rotating paths, the Authorization header): on a small machine the
    // load generator shares the cores, so a cheaper client setup would flatter the bare server.
    await warmUp(raw.url);
    await warmUp(served.url); // again: it sat idle while the bare server warmed up
    for (let round = 0; round < HTTP_ROUNDS; round++) {
      rawRuns.push(await withCpu(() => raw.pids, () => gen.run({ url: raw.url, token, paths, duration: seconds })));
      ourRuns.push(await withCpu(ourPids, () => gen.run({ url: served.url, token, paths, duration: seconds })));
    }
    // Latency at half of our full rate, ours and the bare server at the same rate, in rounds that
    // alternate like the throughput rounds: the bare figure is what the machine itself (scheduling, the
    // load generator, other jobs) adds to any server. One stall of a few ms (another VM on the host, a
    // long scheduling delay) moves the p99 of a single few-second run by 2× — the bare server's own p99
    // went from 1.36 to 2.73 ms between two such runs — so each side's figure is its median round.
    const half = Math.max(1, Math.round(combineRuns(ourRuns.map((r) => r.value)).rps / 2));
    const halfRuns: { ours: Run[]; bare: Run[] } = { ours: [], bare: [] };
    for (let round = 0; round < HTTP_ROUNDS; round++) {
      halfRuns.ours.push(await gen.run({ url: served.url, token, paths, duration: seconds, rate: half, warmup: 1 }));
      halfRuns.bare.push(await gen.run({ url: raw.url, token, paths, duration: seconds, rate: half, warmup: 1 }));
    }
    const rawRes = combineRuns(rawRuns.map((r) => r.value));
    const ours = combineRuns(ourRuns.map((r) => r.value));
    const meanCores = (runs: { cores: number | null }[]) => (runs.some((r) => r.cores === null) ? null : round2(runs.reduce((a, r) => a + r.cores!, 0) / runs.length));
    out.raw_http_rps = Math.round(rawRes.rps);
    out.http_rps = Math.round(ours.rps);
    out.http_vs_raw = Math.round((100 * ours.rps) / rawRes.rps) / 100;
    out.http_errors = ourRuns.reduce((a, r) => a + errorsOf(r.value), 0);
    // Cores used during the full-load runs by the load generator and by the processes answering (the HTTP
    // workers on both sides; the primaries only accept connections).
    out.http_client_cores = round2(ours.clientCores);
    out.http_server_cores = meanCores(ourRuns);
    out.raw_http_client_cores = round2(rawRes.clientCores);
    out.raw_http_server_cores = meanCores(rawRuns);
    // CPU time of the answering processes per request: the figure least disturbed by the machine's other
    // load (a busy machine lowers req/s for both sides, but a request still costs about the same CPU).
    const cpuPerReq = (runs: { value: Run; cores: number | null }[]) =>
      runs.some((r) => r.cores === null) ? null : Math.round((1e6 * runs.reduce((a, r) => a + r.cores!, 0)) / runs.reduce((a, r) => a + r.value.rps, 0));
    out.http_server_cpu_us = cpuPerReq(ourRuns);
    out.raw_http_server_cpu_us = cpuPerReq(rawRuns);
    // Resident memory of each process answering lookups (filters, SQLite page cache, heap), after the
    // full-load runs: the figure for "memory serving n indicators" (the bench's own data is not in them).
    const rss = ourPids().map(rssMiB);
    out.serve_worker_rss_mb = rss.some((r) => r === null) || !rss.length ? null : Math.max(...(rss as number[]));
    const cores = (c: number | null) => (c === null ? 'n/a' : fmt(c, 2));
    say(`http_rps            ${fmt(ours.rps)} req/s   GET /api/v1/lookup, 32 connections, ${workers} process(es); bare node:http ${fmt(rawRes.rps)} req/s → ${fmt(out.http_vs_raw * 100)}% (median of ${HTTP_ROUNDS} alternating rounds; p99 ${ours.p99} ms at full load)`);
    say(`serve_worker_rss_mb ${out.serve_worker_rss_mb ?? 'n/a'} MiB   resident memory of the largest HTTP worker after the full-load runs (${rss.map((r) => r ?? 'n/a').join(' / ')} MiB)`);
    say(`http_rounds         bare ${rawRuns.map((r) => fmt(r.value.rps)).join(' / ')} req/s, ours ${ourRuns.map((r) => fmt(r.value.rps)).join(' / ')} req/s`);
    say(`http_cpu            cores used (of ${os.availableParallelism()}): our HTTP workers ${cores(out.http_server_cores)} + load generator ${cores(out.http_client_cores)}; bare workers ${cores(out.raw_http_server_cores)} + load generator ${cores(out.raw_http_client_cores)}; server CPU per request ${out.http_server_cpu_us ?? 'n/a'} µs (bare ${out.raw_http_server_cpu_us ?? 'n/a'} µs)`);

    const halfRes = medianRound(halfRuns.ours);
    const bareHalf = medianRound(halfRuns.bare);
    out.http_p99_half_ms = halfRes.p99;
    out.http_p50_half_ms = halfRes.p50;
    out.http_p99_half_worst_ms = Math.max(...halfRuns.ours.map((r) => r.p99));
    out.raw_http_p99_half_ms = bareHalf.p99;
    out.raw_http_p50_half_ms = bareHalf.p50;
    out.http_half_errors = halfRuns.ours.reduce((a, r) => a + errorsOf(r), 0);
    const p99s = (runs: Run[]) => runs.map((r) => r.p99).join(' / ');
    say(`http_p99_half_ms    ${halfRes.p99} ms   at ${fmt(half)} req/s (half of http_rps, paced: evenly spaced requests, latency from each one's due instant; median of ${HTTP_ROUNDS} alternating rounds: ${p99s(halfRuns.ours)} ms); p50 ${halfRes.p50} ms, ${out.http_half_errors} errors; bare node:http at the same rate: p99 ${bareHalf.p99} ms (${p99s(halfRuns.bare)}), p50 ${bareHalf.p50} ms`);

    const lines = Math.max(20_000, Math.min(400_000, Math.round(150_000 * seconds)));
    await ndjson(served.url, token, mixed, workers, 20_000);
    const nd = await ndjson(served.url, token, mixed, workers, lines);
    out.ndjson_values_per_s = Math.round(nd.perS);
    out.ndjson_errors = nd.errors;
    say(`ndjson_values_per_s ${fmt(nd.perS)} values/s   ${workers} NDJSON stream(s) of ${fmt(lines)} mixed values (1% listed), ${nd.errors} errors`);

    if (delta) {
      // Lookups at half load while the delta is verified, applied (worker thread, one transaction) and the
      // new filters built and swapped in by every process; stopped once all of that is done.
      // One second at the rate before recording starts, then half a second recorded before the import.
      // The due requests alternate every 100 ms between ours and the bare server (each with its own
      // connections): the bare figure is what the apply's work on the machine does to any server.
      const inst = gen.begin({ url: served.url, token, paths, duration: 3600, rate: half, warmup: 1, alternate: { url: raw.url, everyMs: DELTA_SLOT_MS } });
      await new Promise((r) => setTimeout(r, 1500));
      const tA = performance.now();
      const res = await importPackage(cfg, served.db, delta.tar, { actor: 'bench' });
      const applyMs = performance.now() - tA;
      const file = path.join(dataDir, 'filters', `filters-${res.generation}.bin`);
      const deadline = Date.now() + 120_000;
      while (!fs.existsSync(file) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      const swapMs = performance.now() - tA;
      await new Promise((r) => setTimeout(r, 2500)); // workers poll every second, then load the file
      inst.stop();
      const during = await inst.done;
      out.delta_size = delta.count;
      out.delta_apply_ms = Math.round(applyMs);
      out.delta_swap_ms = Math.round(swapMs);
      out.delta_p99_ms = during.p99;
      out.delta_errors = errorsOf(during);
      out.raw_delta_p99_ms = during.alternate?.p99 ?? null;
      out.raw_delta_errors = during.alternate ? errorsOf(during.alternate) : null;
      say(`delta_p99_ms        ${during.p99} ms   lookups at ${fmt(half)} req/s during a ${fmt(delta.count)}-indicator delta: applied in ${fmt(applyMs)} ms, new filters persisted after ${fmt(swapMs)} ms; ${out.delta_errors} errors, max ${during.max} ms; bare node:http in the alternate ${DELTA_SLOT_MS} ms slots of the same window: p99 ${out.raw_delta_p99_ms ?? 'n/a'} ms, ${out.raw_delta_errors ?? 'n/a'} errors`);
    }
    return out;
  } finally {
    stopRaw?.();
    gen.close();
    await served.close();
  }
};

const round2 = (n: number) => Math.round(n * 100) / 100;

/** Slots of the delta phase's paced load, alternating between ours and the bare server (raw_delta_p99_ms). */
const DELTA_SLOT_MS = 100;

/** Rounds per side, alternating: full load (http_rps / raw_http_rps) and paced at half load (http_p99_half_ms). */
const HTTP_ROUNDS = 3;

/** The round with the median p99 (its p50 goes with it). */
function medianRound(runs: Run[]): Run {
  const sorted = [...runs].sort((a, b) => a.p99 - b.p99);
  return sorted[(sorted.length - 1) >> 1];
}

/** Several runs as one: the median round's requests/s, client cores averaged, latencies the worst round's. */
function combineRuns(runs: Run[]): Run {
  const mean = (f: (r: Run) => number) => runs.reduce((a, r) => a + f(r), 0) / runs.length;
  const median = (f: (r: Run) => number) => {
    const v = runs.map(f).sort((a, b) => a - b);
    return v.length % 2 ? v[(v.length - 1) / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
  };
  const worst = (f: (r: Run) => number) => Math.max(...runs.map(f));
  return {
    rps: median((r) => r.rps),
    p50: worst((r) => r.p50),
    p99: worst((r) => r.p99),
    max: worst((r) => r.max),
    answered: runs.reduce((a, r) => a + r.answered, 0),
    errors: runs.reduce((a, r) => a + r.errors, 0),
    statuses: [...new Set(runs.flatMap((r) => r.statuses))],
    clientCores: mean((r) => r.clientCores),
  };
}
