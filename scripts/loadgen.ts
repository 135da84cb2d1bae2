// The bench's load generator (scripts/bench-http.ts), run in a process of its own so that neither the bench
// process's work (imports, filter builds, GC of its data set) nor the servers share its event loop. Two kinds
// of run, one per message from the parent:
//
// - `closed`: autocannon, 32 keep-alive connections each sending its next request as soon as the previous
//   answer arrives — the most requests/s a server gives (http_rps, raw_http_rps).
// - `paced`: an open-loop client for latency at a given rate (http_p99_half_ms, delta_p99_ms). Requests are
//   due at evenly spaced instants (rate/s) and sent on the first free connection of the pool. A request
//   that had to wait for a free connection counts its latency from the instant it was *due*, not from when
//   a connection was free, so a server stall also counts against the requests that waited behind it (no
//   "coordinated omission"); one sent at the first timer tick after its due instant counts from the send.
//   autocannon's own rate option cannot measure this: it lets each connection send its whole per-second
//   quota back to back at the start of every second and then pause, so "half load" is full load for half
//   of each second and its p99 is the full-load queueing latency. The client's own pauses count as the
//   server's latency, so it allocates next to nothing per answer (answers are parsed in place in one read
//   buffer) and collects what earlier runs left before its clock starts: with a Buffer, a string and a
//   regex match per answer, its scavenges (~1.5 ms, ~3 a second) and full collections (every 4–5 s) put
//   p99 at half load near 2.5 ms for our server and 1.7 ms for the bare one; without them, 0.9 and 0.8 ms
//   (docs/performance.md, session 15).
import fs from 'node:fs';
import net from 'node:net';
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';

export interface LoadSpec {
  url: string;
  token: string;
  /** Request paths, cycled through one per request. */
  paths: string[];
  /** Seconds. */
  duration: number;
  /** Requests per second: a paced (open-loop) run; without it a closed-loop autocannon run. */
  rate?: number;
  /** Keep-alive connections (default 32). */
  connections?: number;
  /**
   * Paced runs: seconds at the rate before `duration` starts whose answers are not recorded (the first
   * moments of a run, when connections and the server's code paths settle in, are not the figure).
   */
  warmup?: number;
  /**
   * Paced runs: a second server measured in the same run. The due instants alternate between the two in
   * slots of `everyMs` (the first slot is `url`'s), each with its own connections and figures
   * (`LoadResult.alternate`), so both see the same moments of whatever else the machine is doing (the
   * bench's delta phase: ours and the bare server while one delta is applied). Same paths and token.
   */
  alternate?: { url: string; everyMs: number };
}

export interface LoadResult {
  /** Answered requests per second over the run. */
  rps: number;
  /** Latencies in ms (paced runs: from the instant each request was due). */
  p50: number;
  p99: number;
  max: number;
  /** Requests answered. */
  answered: number;
  /** Failed requests: connection errors, timeouts, non-2xx answers. */
  errors: number;
  /** First non-2xx status codes seen (at most a few), for the error message. */
  statuses: number[];
  /** Cores the load generator itself used over the run (its CPU time ÷ wall time). */
  clientCores: number;
  /** Paced runs with `alternate`: the second server's figures (its slots only). */
  alternate?: LoadResult;
}

/** The read buffer of every connection of a paced run (net.connect's onread): answers are parsed in place. */
const READ_BUFFER = Buffer.allocUnsafe(64 * 1024);
const CONTENT_LENGTH = Buffer.from('content-length:');

/** Offset of the blank line ending an answer's head in buf[0, len), or -1 while it is incomplete. */
function headEndOf(buf: Buffer, len: number): number {
  for (let i = 0; i + 3 < len; i++) {
    if (buf[i] === 13 && buf[i + 1] === 10 && buf[i + 2] === 13 && buf[i + 3] === 10) return i;
  }
  return -1;
}

/** The Content-Length of the head in buf[0, headEnd) (header name in any case), or -1 without one. */
function contentLength(buf: Buffer, headEnd: number): number {
  for (let line = buf.indexOf(10) + 1; line > 0 && line < headEnd; ) {
    let k = 0;
    // Every byte of "content-length:" has the 0x20 bit set, so OR-ing it in lowercases letters only.
    while (k < CONTENT_LENGTH.length && (buf[line + k] | 0x20) === CONTENT_LENGTH[k]) k++;
    if (k === CONTENT_LENGTH.length) {
      let i = line + k;
      while (buf[i] === 32 || buf[i] === 9) i++;
      let v = -1;
      for (; buf[i] >= 48 && buf[i] <= 57; i++) v = (v < 0 ? 0 : v * 10) + (buf[i] - 48);
      return v;
    }
    const next = buf.indexOf(10, line);
    line = next < 0 ? -1 : next + 1;
  }
  return -1;
}
/** The due instant of a connection's warm-up request: its answer, however late, is never recorded. */
const WARM_UP = -1;
/** A request that gets no answer within this long counts as an error (its connection is replaced). */
const TIMEOUT_MS = 10_000;

/**
 * Latencies as a fixed histogram: 10 µs buckets up to 100 ms, then 1 ms buckets up to 60 s (≈ 280 KiB,
 * allocated once). Storing every latency instead (millions in an hour-long run) made the client allocate
 * tens of MiB at the start of a run, and the collections that followed stalled the client itself — counted
 * as the server's latency.
 */
class Histogram {
  private readonly fine = new Uint32Array(10_000); // [0, 100 ms) by 10 µs
  private readonly coarse = new Uint32Array(60_000); // [100 ms, 60 s) by 1 ms, the last bucket open-ended
  count = 0;
  max = 0;

  record(ms: number): void {
    this.count++;
    if (ms > this.max) this.max = ms;
    if (ms < 100) this.fine[Math.max(0, Math.floor(ms * 100))]++;
    else this.coarse[Math.min(59_999, Math.floor(ms) - 100)]++;
  }

  /** The p-th percentile (nearest rank), as the upper edge of its bucket (never above the maximum). */
  percentile(p: number): number {
    if (this.count === 0) return 0;
    const rank = Math.max(1, Math.ceil((p / 100) * this.count));
    let seen = 0;
    for (let i = 0; i < this.fine.length; i++) if ((seen += this.fine[i]) >= rank) return Math.min(this.max, (i + 1) / 100);
    for (let i = 0; i < this.coarse.length; i++) if ((seen += this.coarse[i]) >= rank) return Math.min(this.max, 100 + i + 1);
    return this.max;
  }
}

const round3 = (n: number) => Math.round(n * 1000) / 1000;

/**
 * One paced run: `spec.rate` requests/s for `spec.duration` s over `spec.connections` keep-alive connections
 * (HTTP/1.1, one request in flight per connection). Resolves once every sent request is answered or timed
 * out; `stop` ends the sending early. With `spec.alternate`, the due requests alternate between the two
 * servers by time slot, each server with its own connections (`spec.connections` each) and figures.
 */
export async function pacedRun(spec: LoadSpec & { rate: number }, stop?: { stopped: boolean }): Promise<LoadResult> {
  const intervalNs = 1e9 / spec.rate;
  let c0 = process.cpuUsage();
  let t0 = performance.now();
  // ns since the start, from a clock that allocates nothing (hrtime.bigint() makes a BigInt per call)
  const now = () => (performance.now() - t0) * 1e6;
  const warmNs = (spec.warmup ?? 0) * 1e9;
  const endNs = warmNs + spec.duration * 1e9;
  const slotNs = spec.alternate ? spec.alternate.everyMs * 1e6 : 0;

  /** One server's connections, queue and figures. */
  interface Target {
    host: string;
    port: number;
    requests: Buffer[];
    latencies: Histogram;
    answered: number;
    errors: number;
    statuses: number[];
    /** Due instants (ns) of requests not yet sent, in order: an array with a head index. */
    due: number[];
    dueHead: number;
    idle: Conn[];
  }
  interface Conn {
    socket: Socket;
    target: Target;
    busy: boolean;
    /** Due instant of the request in flight, and the instant its latency counts from. */
    dueNs: number;
    startNs: number;
    sentNs: number;
    /** The part of an answer received so far, when it arrives in pieces (a copy: the read buffer is shared). */
    carry: Buffer | null;
  }
  const targets: Target[] = [spec.url, ...(spec.alternate ? [spec.alternate.url] : [])].map((url) => {
    const u = new URL(url);
    return {
      host: u.hostname,
      port: Number(u.port || 80),
      requests: spec.paths.map((p) =>
        Buffer.from(`GET ${p} HTTP/1.1\r\nHost: ${u.host}\r\nAuthorization: Bearer ${spec.token}\r\nConnection: keep-alive\r\n\r\n`, 'latin1'),
      ),
      latencies: new Histogram(),
      answered: 0,
      errors: 0,
      statuses: [],
      due: [],
      dueHead: 0,
      idle: [],
    };
  });
  /** The server a request due at `dueNs` goes to. */
  const targetOf = (dueNs: number) => (slotNs ? targets[Math.floor(dueNs / slotNs) % 2] : targets[0]);
  const pending = () => targets.some((tg) => tg.dueHead < tg.due.length);

  let nextIndex = 0; // requests made due so far
  let sending = true;
  let lastPumpNs = -1;

  const all = new Set<Conn>();
  let finish: (() => void) | null = null;
  let done = false;
  /** Before the clock starts each connection answers one request (dueNs WARM_UP, never recorded). */
  let warmed: (() => void) | null = null;
  const settleWarmUp = () => {
    if (warmed && ![...all].some((c) => c.busy)) warmed();
  };

  const open = (target: Target): Conn => {
    const c: Conn = { socket: null as unknown as Socket, target, busy: false, dueNs: 0, startNs: 0, sentNs: 0, carry: null };
    // Every connection reads into the one READ_BUFFER and its answer is parsed in place: no Buffer, string or
    // regex match per answer, so the client's own collections (which stall every request in flight and
    // count as the server's latency) stay short and rare.
    c.socket = net.connect({
      host: target.host,
      port: target.port,
      noDelay: true,
      onread: {
        buffer: READ_BUFFER,
        callback: (n: number) => {
          onData(c, n);
          return true;
        },
      },
    });
    all.add(c);
    // A connection that fails (refused, reset) or closes with a request in flight is one error; a new one
    // takes its place while there is work.
    const lost = (failed: boolean) => {
      if (!all.has(c)) return;
      all.delete(c);
      const i = target.idle.indexOf(c);
      if (i >= 0) target.idle.splice(i, 1);
      if (c.busy || failed) target.errors++;
      c.busy = false;
      settleWarmUp();
      if (sending || pending()) setTimeout(() => {
        if (done) return;
        // (A connection replaced during the warm-up is used without one; only the first set warms up.)
        target.idle.push(open(target));
        pump();
      }, failed ? 100 : 0);
      else pump();
    };
    c.socket.on('error', () => lost(true));
    c.socket.on('close', () => lost(false));
    return c;
  };

  /** `n` new bytes of connection `c` in READ_BUFFER. */
  const onData = (c: Conn, n: number) => {
    const tg = c.target;
    let buf = READ_BUFFER;
    let len = n;
    if (c.carry) {
      buf = Buffer.concat([c.carry, READ_BUFFER.subarray(0, n)]);
      len = buf.length;
    }
    const headEnd = headEndOf(buf, len);
    const bodyLength = headEnd < 0 ? 0 : contentLength(buf, headEnd);
    if (bodyLength < 0) {
      // Every answer of the servers measured here has a length; anything else is an error, and the
      // connection is not reusable.
      c.carry = null;
      c.busy = false;
      tg.errors++;
      c.socket.destroy();
      return;
    }
    if (headEnd < 0 || len < headEnd + 4 + bodyLength) {
      c.carry = buf === READ_BUFFER ? Buffer.from(READ_BUFFER.subarray(0, n)) : buf;
      return;
    }
    const status = (buf[9] - 48) * 100 + (buf[10] - 48) * 10 + (buf[11] - 48); // "HTTP/1.1 200 "
    c.carry = null;
    c.busy = false;
    if (c.dueNs === WARM_UP) {
      tg.idle.push(c);
      settleWarmUp();
      return;
    }
    if (status >= 200 && status < 300) {
      const lat = (now() - c.startNs) / 1e6;
      if (c.dueNs >= warmNs) {
        tg.answered++;
        tg.latencies.record(lat);
      }
    } else {
      tg.errors++;
      if (tg.statuses.length < 5 && !tg.statuses.includes(status)) tg.statuses.push(status);
    }
    tg.idle.push(c);
    pump();
  };

  /** Makes due every request whose instant has come, and sends waiting requests on free connections. */
  const pump = () => {
    const t = now();
    if (sending) {
      if (stop?.stopped || t >= endNs) sending = false;
      else while (nextIndex * intervalNs <= t) {
        const dueNs = nextIndex++ * intervalNs;
        targetOf(dueNs).due.push(dueNs);
      }
    }
    for (const tg of targets) {
      while (tg.dueHead < tg.due.length && tg.idle.length) {
        const c = tg.idle.pop()!;
        c.busy = true;
        c.dueNs = tg.due[tg.dueHead++];
        c.sentNs = t;
        // Latency counts from the due instant when the request was already due at the previous pump and
        // waited for a free connection (the server was behind); a request that came due since then goes out
        // now, and the wait for this timer tick (≤ ~1 ms) is the client's own, not counted.
        c.startNs = c.dueNs <= lastPumpNs ? c.dueNs : t;
        c.socket.write(tg.requests[Math.floor(c.dueNs / intervalNs) % tg.requests.length]);
      }
      if (tg.dueHead > 65_536) {
        tg.due.splice(0, tg.dueHead);
        tg.dueHead = 0;
      }
    }
    lastPumpNs = t;
    if (!sending && !pending() && finish && ![...all].some((c) => c.busy)) finish();
  };

  // The clock starts once every connection is made and has answered one request: connecting (and, behind a
  // node:cluster primary, handing each connection to a worker) is not part of the server's answer time.
  for (const tg of targets) for (let i = 0; i < (spec.connections ?? 32); i++) open(tg);
  await new Promise<void>((resolve) => {
    warmed = resolve;
    for (const c of all) {
      c.busy = true;
      c.dueNs = WARM_UP;
      c.socket.write(c.target.requests[0]);
    }
    setTimeout(resolve, TIMEOUT_MS).unref(); // a connection that never answers: its loss is counted below
  });
  warmed = null;
  // What earlier runs in this process left (autocannon's histograms and request objects, the last run's
  // connections) is collected now, not by a full collection during this run (the fork has --expose-gc).
  (globalThis as { gc?: () => void }).gc?.();
  c0 = process.cpuUsage();
  t0 = performance.now();
  // Timers fire about every millisecond: requests due in between go out together at the next tick (or
  // earlier, when an answer arrives and pumps). Their latency still counts from their due instant.
  const ticker = setInterval(() => {
    pump();
    const t = now();
    for (const c of all) {
      if (c.busy && t - c.sentNs > TIMEOUT_MS * 1e6) {
        c.busy = false; // counted once here, not again when the socket closes
        c.target.errors++;
        c.socket.destroy();
      }
    }
    // Requests still unsent long after the end (no connection could be made) fail, so a run always ends.
    if (!sending && t > endNs + 2 * TIMEOUT_MS * 1e6 && pending()) {
      for (const tg of targets) {
        tg.errors += tg.due.length - tg.dueHead;
        tg.dueHead = tg.due.length;
      }
      pump();
    }
  }, 1);

  return new Promise<LoadResult>((resolve) => {
    finish = () => {
      finish = null;
      done = true;
      clearInterval(ticker);
      const wallNs = now();
      for (const c of all) c.socket.destroy();
      all.clear();

      const cpu = process.cpuUsage(c0);
      const clientCores = (cpu.user + cpu.system) / (wallNs / 1000);
      const resultOf = (tg: Target): LoadResult => ({
        rps: tg.answered / ((wallNs - warmNs) / 1e9),
        p50: round3(tg.latencies.percentile(50)),
        p99: round3(tg.latencies.percentile(99)),
        max: round3(tg.latencies.max),
        answered: tg.answered,
        errors: tg.errors,
        statuses: tg.statuses,
        clientCores,
      });
      const result = resultOf(targets[0]);
      if (targets.length > 1) result.alternate = resultOf(targets[1]);
      resolve(result);
    };
  });
}

/** One closed-loop run with autocannon (32 connections, no pipelining). */
function closedRun(spec: LoadSpec, stop: { stopped: boolean; inst?: { stop(): void } }): Promise<LoadResult> {
  const autocannon = createRequire(import.meta.url)('autocannon');
  let i = 0;
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    stop.inst = autocannon(
      {
        url: spec.url,
        connections: spec.connections ?? 32,
        pipelining: 1,
        duration: spec.duration,
        headers: { authorization: `Bearer ${spec.token}` },
        requests: [{ setupRequest: (req: object) => ({ ...req, path: spec.paths[i++ % spec.paths.length] }) }],
      },
      (err: Error | null, r: any) => {
        const c = process.cpuUsage(c0);
        const wallUs = Number(process.hrtime.bigint() - t0) / 1000;
        if (err) return reject(err);
        resolve({
          rps: r.requests.average,
          p50: r.latency.p50,
          p99: r.latency.p99,
          max: r.latency.max,
          answered: r['2xx'],
          errors: r.errors + r.timeouts + r.non2xx,
          statuses: Object.keys(r.statusCodeStats ?? {}).map(Number).filter((s) => s < 200 || s >= 300).slice(0, 5),
          clientCores: (c.user + c.system) / wallUs,
        });
      },
    );
  });
}

// ------------------------------------------------------------------------------- as a forked process

if (process.send && process.argv[1] && fs.realpathSync(process.argv[1]) === fs.realpathSync(new URL(import.meta.url).pathname)) {
  let stop: { stopped: boolean; inst?: { stop(): void } } = { stopped: false };
  process.on('message', (m: { spec?: LoadSpec; stop?: true }) => {
    if (m.stop) {
      stop.stopped = true;
      stop.inst?.stop();
      return;
    }
    const spec = m.spec!;
    stop = { stopped: false };
    (spec.rate ? pacedRun(spec as LoadSpec & { rate: number }, stop) : closedRun(spec, stop)).then(
      (result) => process.send!({ result }),
      (err: unknown) => process.send!({ error: String((err as Error)?.message ?? err) }),
    );
  });
  process.send({ ready: true });
}
