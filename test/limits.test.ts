// Limits on a real server: JSON body and batch caps, NDJSON line/values/duration caps, slow clients
// (headers, body, idle keep-alive) cut off by the Node server timeouts, per-token rate limit with 429.
// Every limit is set through its OUTPOST_* variable, so the test also proves it is configurable.
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configEnvNames, loadConfig } from '../appliance/config.ts';
import { ERRORS } from '../appliance/errors.ts';
import type { TokenRow } from '../appliance/tokens.ts';
import { jsonTooDeep, rateLimit } from '../lookup/limits.ts';
import { ROOT, serve, tmpDir, type Served } from './helpers.ts';
import { bearer, createToken, listValues, prepareRealData, request } from './ops-fixture.ts';

const LISTED = listValues('ipsum/levels/3.txt');

function ndjsonLines(text: string): any[] {
  return text.split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

/** Sends `prefix`, then one byte of `drip` every `everyMs` until the server closes the socket. */
function dripUntilClosed(port: number, prefix: string, drip: string, everyMs: number): Promise<{ sent: number; received: string }> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    let sent = 0;
    let received = '';
    let timer: NodeJS.Timeout | undefined;
    sock.on('connect', () => {
      sock.write(prefix);
      timer = setInterval(() => {
        if (sent >= drip.length) {
          clearInterval(timer);
          return reject(new Error('the server never closed the slow connection'));
        }
        sock.write(drip[sent++]);
      }, everyMs);
    });
    sock.on('data', (d) => (received += d));
    sock.on('error', () => {}); // a reset by the server is the expected outcome too
    sock.on('close', () => {
      clearInterval(timer);
      resolve({ sent, received });
    });
  });
}

describe('request limits on a real server', () => {
  const work = tmpDir('outpost-limits-');
  let app: Served;
  let port: number;
  let token: string;

  beforeAll(async () => {
    const real = prepareRealData(work, ['ipsum/levels/3.txt']);
    token = createToken(real.dataDir, 'limits');
    app = await serve(real.dataDir, ['--no-demo'], {
      OUTPOST_MAX_BODY_BYTES: '2000',
      OUTPOST_MAX_BATCH: '5',
      OUTPOST_NDJSON_MAX_LINE: '200',
      OUTPOST_NDJSON_MAX_VALUES: '10',
      OUTPOST_NDJSON_MAX_STREAM_S: '1',
      OUTPOST_HEADERS_TIMEOUT_MS: '1000',
      OUTPOST_REQUEST_TIMEOUT_MS: '2000',
      OUTPOST_KEEPALIVE_TIMEOUT_MS: '500',
    });
    port = Number(new URL(app.url).port);
  });

  afterAll(async () => {
    await app?.stop();
    fs.rmSync(work, { recursive: true, force: true });
  });

  it('caps JSON bodies (with and without Content-Length) at OUTPOST_MAX_BODY_BYTES: 413 E_TOO_LARGE', async () => {
    const big = JSON.stringify({ values: Array.from({ length: 4 }, () => 'x'.repeat(700)) });
    const r = await request(`${app.url}/api/v1/lookup`, { method: 'POST', headers: bearer(token, { 'content-type': 'application/json' }), body: big });
    expect(r.status).toBe(413);
    expect(JSON.parse(r.text).error.code).toBe('E_TOO_LARGE');

    // Chunked: no Content-Length to trust, the cap counts bytes as they arrive.
    const chunked = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = http.request(`${app.url}/api/v1/lookup`, { method: 'POST', headers: bearer(token, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' }) }, (res) => {
        let text = '';
        res.on('data', (d) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode!, text }));
      });
      req.on('error', reject);
      for (let i = 0; i < 6; i++) req.write(big.slice(i * 500, (i + 1) * 500));
      req.end(big.slice(3000));
    });
    expect(chunked.status).toBe(413);
    expect(JSON.parse(chunked.text).error.code).toBe('E_TOO_LARGE');

    const small = await request(`${app.url}/api/v1/lookup`, { method: 'POST', headers: bearer(token, { 'content-type': 'application/json' }), body: JSON.stringify({ values: [LISTED[0]] }) });
    expect(small.status).toBe(200);
    expect(JSON.parse(small.text).results[0].verdict).toBe('malicious');
  });

  it('caps batch size at OUTPOST_MAX_BATCH: 413 E_TOO_LARGE, nothing answered', async () => {
    const over = await request(`${app.url}/api/v1/lookup`, { method: 'POST', headers: bearer(token, { 'content-type': 'application/json' }), body: JSON.stringify({ values: LISTED.slice(0, 6) }) });
    expect(over.status).toBe(413);
    expect(JSON.parse(over.text)).toMatchObject({ error: { code: 'E_TOO_LARGE' } });
    const at = await request(`${app.url}/api/v1/lookup`, { method: 'POST', headers: bearer(token, { 'content-type': 'application/json' }), body: JSON.stringify({ values: LISTED.slice(0, 5) }) });
    expect(at.status).toBe(200);
    expect(JSON.parse(at.text).results).toHaveLength(5);
  });

  it('refuses deep JSON before parsing; parser-level refusals (header overflow, bad request line) carry catalog codes', async () => {
    const deep = `{"values":${'['.repeat(40)}${']'.repeat(40)}}`;
    const r = await request(`${app.url}/api/v1/lookup`, { method: 'POST', headers: bearer(token, { 'content-type': 'application/json' }), body: deep });
    expect(r.status).toBe(400);
    expect(JSON.parse(r.text).error).toMatchObject({ code: 'E_INPUT', message: expect.stringMatching(/nested deeper than 32/) });
    // Brackets inside strings are data, not nesting.
    const inString = await request(`${app.url}/api/v1/lookup`, { method: 'POST', headers: bearer(token, { 'content-type': 'application/json' }), body: JSON.stringify({ values: ['['.repeat(100)] }) });
    expect(inString.status).toBe(200);
    expect(jsonTooDeep('[[["\\"[[[["]]]', 3)).toBe(false);
    expect(jsonTooDeep('[[[[]]]]', 3)).toBe(true);

    const big = await request(`${app.url}/healthz`, { headers: { 'x-big': 'a'.repeat(20_000) } });
    expect(big.status).toBe(431);
    expect(JSON.parse(big.text).error.code).toBe('E_TOO_LARGE');
    const garbage = await new Promise<string>((resolve) => {
      const sock = net.connect(port, '127.0.0.1', () => sock.write('GET /\u0001 HTTP/1.1\r\n\r\n'));
      let got = '';
      sock.on('data', (d) => (got += d));
      sock.on('error', () => {});
      sock.on('close', () => resolve(got));
    });
    expect(garbage).toMatch(/^HTTP\/1\.1 400/);
    expect(JSON.parse(garbage.slice(garbage.indexOf('\r\n\r\n') + 4)).error.code).toBe('E_INPUT');
  });

  it('NDJSON: answers lines before an over-long line, then one E_TOO_LARGE line', async () => {
    const body = `${LISTED[0]}\n${JSON.stringify({ value: LISTED[1] })}\n${'a'.repeat(300)}\n${LISTED[2]}\n`;
    const r = await request(`${app.url}/api/v1/lookup`, { method: 'POST', headers: bearer(token, { 'content-type': 'application/x-ndjson' }), body });
    expect(r.status).toBe(200);
    const lines = ndjsonLines(r.text);
    expect(lines.slice(0, 2).map((l) => l.verdict)).toEqual(['malicious', 'malicious']);
    expect(lines.at(-1).error.code).toBe('E_TOO_LARGE');
    expect(lines).toHaveLength(3);

    // A line that never ends is cut at the cap too, not buffered without bound.
    const endless = await request(`${app.url}/api/v1/lookup`, { method: 'POST', headers: bearer(token, { 'content-type': 'application/x-ndjson' }), body: 'b'.repeat(100_000) });
    expect(ndjsonLines(endless.text).at(-1).error.code).toBe('E_TOO_LARGE');
  });

  it('NDJSON: at most OUTPOST_NDJSON_MAX_VALUES values per stream, the rest refused with E_TOO_LARGE', async () => {
    const body = LISTED.slice(0, 15).join('\n') + '\n';
    const r = await request(`${app.url}/api/v1/lookup`, { method: 'POST', headers: bearer(token, { 'content-type': 'application/x-ndjson' }), body });
    const lines = ndjsonLines(r.text);
    expect(lines).toHaveLength(11);
    expect(lines.slice(0, 10).every((l) => l.verdict === 'malicious')).toBe(true);
    expect(lines[10].error.code).toBe('E_TOO_LARGE');
  });

  it('NDJSON: a stream left open past OUTPOST_NDJSON_MAX_STREAM_S ends with an E_TIMEOUT line', async () => {
    const res = await new Promise<string>((resolve, reject) => {
      const req = http.request(`${app.url}/api/v1/lookup`, { method: 'POST', headers: bearer(token, { 'content-type': 'application/x-ndjson', 'transfer-encoding': 'chunked' }) }, (r) => {
        let text = '';
        r.on('data', (d) => (text += d));
        r.on('end', () => {
          req.destroy();
          resolve(text);
        });
      });
      req.on('error', reject);
      req.write(`${LISTED[3]}\n`); // and never end the body
    });
    const lines = ndjsonLines(res);
    expect(lines[0].verdict).toBe('malicious');
    expect(lines.at(-1).error.code).toBe('E_TIMEOUT');
  });

  it('slowloris: a client sending headers byte by byte is disconnected (OUTPOST_HEADERS_TIMEOUT_MS)', async () => {
    const drip = 'a'.repeat(100_000);
    const r = await dripUntilClosed(port, 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ', drip, 50);
    expect(r.sent).toBeLessThan(drip.length);
    if (r.received) expect(r.received).toMatch(/^HTTP\/1\.1 408/);
    const h = await request(`${app.url}/healthz`);
    expect(h.status).toBe(200);
  });

  it('a body sent byte by byte is cut off (OUTPOST_REQUEST_TIMEOUT_MS)', async () => {
    // Under the body cap (2000), so only the request timeout can end it: 1500 bytes at 20/s would take 75 s.
    const drip = 'v'.repeat(1500);
    const head = `POST /api/v1/lookup HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: ${drip.length}\r\n\r\n`;
    const r = await dripUntilClosed(port, head, drip, 50);
    expect(r.sent).toBeLessThan(drip.length);
    if (r.received) expect(r.received).toMatch(/^HTTP\/1\.1 408/);
  });

  it('an idle keep-alive connection is closed by the server (OUTPOST_KEEPALIVE_TIMEOUT_MS)', async () => {
    const closedBy = await new Promise<string>((resolve) => {
      const sock = net.connect(port, '127.0.0.1', () => sock.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n'));
      let got = '';
      sock.on('data', (d) => (got += d));
      sock.on('error', () => {});
      sock.on('end', () => resolve(got)); // the server's FIN: we never end the socket ourselves
    });
    expect(closedBy).toMatch(/^HTTP\/1\.1 200/);
    expect(closedBy).toMatch(/keep-alive/i);
  });
});

describe('per-token rate limit', () => {
  const work = tmpDir('outpost-rate-');
  const dataDir = path.join(work, 'var');
  let app: Served;
  let a: string;
  let b: string;

  beforeAll(async () => {
    a = createToken(dataDir, 'client-a');
    b = createToken(dataDir, 'client-b');
    // 0.01/s: after the burst, the next request is 100 s away — no race with the clock.
    app = await serve(dataDir, ['--no-demo'], { OUTPOST_RATE_LIMIT_RPS: '0.01', OUTPOST_RATE_LIMIT_BURST: '3' });
  });

  afterAll(async () => {
    await app?.stop();
    fs.rmSync(work, { recursive: true, force: true });
  });

  it('after the burst a token gets 429 E_RATE with Retry-After; other tokens are not affected', async () => {
    const url = `${app.url}/api/v1/lookup?value=198.51.100.7`;
    for (let i = 0; i < 3; i++) expect((await request(url, { headers: bearer(a) })).status).toBe(200);
    const limited = await request(url, { headers: bearer(a) });
    expect(limited.status).toBe(429);
    expect(JSON.parse(limited.text).error.code).toBe('E_RATE');
    const retry = Number(limited.headers['retry-after']);
    expect(Number.isInteger(retry) && retry >= 1 && retry <= 100).toBe(true);
    // The same bucket for batches and NDJSON: one request is one request.
    const batch = await request(`${app.url}/api/v1/lookup`, { method: 'POST', headers: bearer(a, { 'content-type': 'application/json' }), body: '{"values":["1.1.1.1"]}' });
    expect(batch.status).toBe(429);

    expect((await request(url, { headers: bearer(b) })).status).toBe(200);
    // Authentication comes first: a bad token is 401, never counted against anyone.
    expect((await request(url, { headers: bearer('op_nope') })).status).toBe(401);
  });
});

describe('rateLimit middleware (in process, injected clock)', () => {
  function appWith(rps: number, burst: number, clock: { t: number }) {
    const app = new Hono<{ Variables: { token: TokenRow } }>();
    app.use('*', async (c, next) => {
      c.set('token', { id: Number(c.req.header('x-id')), name: 'x', scope: 'lookup', created_at: '', last_used_at: null, expires_at: null, revoked_at: null });
      await next();
    });
    app.use('*', rateLimit({ rps, burst, now: () => clock.t }));
    app.get('/', (c) => c.text('ok'));
    return (id: number) => app.request('/', { headers: { 'x-id': String(id) } });
  }

  it('refills at the configured rate up to the burst, per token id', async () => {
    const clock = { t: 1_000_000 };
    const hit = appWith(2, 4, clock);
    const statuses = async (id: number, n: number) => {
      const out: number[] = [];
      for (let i = 0; i < n; i++) out.push((await hit(id)).status);
      return out;
    };
    expect(await statuses(1, 5)).toEqual([200, 200, 200, 200, 429]);
    const limited = await hit(1);
    expect(limited.headers.get('retry-after')).toBe('1');
    expect((await limited.json()).error.code).toBe('E_RATE');
    clock.t += 1000; // 2 tokens back
    expect(await statuses(1, 3)).toEqual([200, 200, 429]);
    clock.t += 60_000; // never more than the burst
    expect(await statuses(1, 5)).toEqual([200, 200, 200, 200, 429]);
    expect(await statuses(2, 4)).toEqual([200, 200, 200, 200]);
  });

  it('rps 0 disables the limit', async () => {
    const hit = appWith(0, 1, { t: 0 });
    for (let i = 0; i < 50; i++) expect((await hit(1)).status).toBe(200);
  });
});

describe('limit configuration', () => {
  const LIMIT_KEYS = [
    'maxBatch', 'maxBodyBytes', 'maxPackageBytes', 'maxUncompressedBytes', 'ndjsonMaxLine', 'ndjsonMaxValues', 'ndjsonMaxStreamS',
    'headersTimeoutMs', 'requestTimeoutMs', 'keepAliveTimeoutMs', 'rateLimitRps', 'rateLimitBurst', 'startCheck',
  ] as const;

  it('every limit has an OUTPOST_* variable that is documented in docs/operations.md', () => {
    const doc = fs.readFileSync(path.join(ROOT, 'docs/operations.md'), 'utf8');
    for (const k of LIMIT_KEYS) expect(doc, configEnvNames[k]).toContain(configEnvNames[k]);
  });

  it('refuses inconsistent limits with E_CONFIG', () => {
    expect(() => loadConfig({}, { OUTPOST_HEADERS_TIMEOUT_MS: '5000', OUTPOST_REQUEST_TIMEOUT_MS: '1000' })).toThrow(/E_CONFIG|must not exceed/);
    expect(() => loadConfig({}, { OUTPOST_START_CHECK: 'sometimes' })).toThrow(/quick, full or off/);
    expect(() => loadConfig({}, { OUTPOST_RATE_LIMIT_RPS: '-1' })).toThrow(/non-negative/);
    expect(ERRORS.E_RATE.status).toBe(429);
  });
});
