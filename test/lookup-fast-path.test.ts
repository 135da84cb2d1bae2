// The GET /api/v1/lookup fast path (lookup/api.ts lookupFastPath, used by the HTTP workers of
// appliance/cluster.ts) must answer exactly like the Hono app: the same status line, header fields (in any
// order; only Date may differ) and body bytes for successes and for every error it leaves to the app — missing, malformed, unknown,
// expired tokens, duplicate Authorization headers, wrong scope, rate limit, empty and undecodable values,
// other query parameters — and the same metrics and hit-log counts. Two real servers on loopback over one
// real store: one with the fast path in front of the app (as the workers run it), one with the app alone.
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { createHttpServer } from '../appliance/http-server.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../appliance/config.ts';
import { openDb, type DB } from '../appliance/db.ts';
import { createLogger } from '../appliance/log.ts';
import { createToken, revokeToken } from '../appliance/tokens.ts';
import { createApi, lookupFastPath, type LookupFastPath } from '../lookup/api.ts';
import { LookupEngine } from '../lookup/engine.ts';
import { API_SCOPES } from '../lookup/limits.ts';
import { Metrics } from '../lookup/metrics.ts';
import { SightingsWriter } from '../lookup/sightings.ts';
import { tmpDir } from './helpers.ts';
import { listValues, prepareRealData } from './ops-fixture.ts';

const LISTED = listValues('ipsum/levels/3.txt');

interface Side {
  port: number;
  metrics: Metrics;
  sightings: SightingsWriter;
  fastAnswered: number;
  close(): Promise<void>;
}

/**
 * One raw request on its own connection; the whole response as text with the Date header blanked and the
 * header lines in sorted order (the order of different header fields carries no meaning, RFC 9110 §5.3;
 * the fast path writes Content-Length before Node's Date/Connection/Keep-Alive, the app after them).
 */
function raw(port: number, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1', () => sock.end(request));
    let out = '';
    sock.on('data', (d) => (out += d));
    sock.on('error', reject);
    sock.on('close', () => {
      const end = out.indexOf('\r\n\r\n');
      if (end < 0) return resolve(out);
      const [status, ...fields] = out.slice(0, end).split('\r\n');
      const head = [status, ...fields.map((f) => (f.startsWith('Date: ') ? 'Date: -' : f)).sort()].join('\r\n');
      resolve(head + out.slice(end));
    });
  });
}

function get(path: string, headers: string[]): string {
  return `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n${headers.map((h) => h + '\r\n').join('')}Connection: close\r\n\r\n`;
}

describe('GET /api/v1/lookup fast path', () => {
  const work = tmpDir('outpost-fastpath-');
  let db: DB;
  let engine: LookupEngine;
  let fast: Side;
  let slow: Side;
  const scopesBefore = API_SCOPES['GET /api/v1/lookup'];

  /** The app served with (withFast) or without the fast path in front of it, as cluster.ts composes them. */
  async function side(withFast: boolean, rateLimitRps: number): Promise<Side> {
    const cfg = loadConfig({ rateLimitRps, rateLimitBurst: 3 }, {});
    const metrics = new Metrics();
    const sightings = new SightingsWriter(db, { flushMs: 3_600_000 });
    const app = createApi({ cfg, db, engine, log: createLogger('silent'), metrics, sightings });
    const fp = lookupFastPath(app)!;
    expect(typeof fp).toBe('function');
    const s: Side = { port: 0, metrics, sightings, fastAnswered: 0, close: async () => {} };
    // The server every serving process runs (appliance/http-server.ts), with the fast path counted.
    const counted: LookupFastPath = (req, res) => {
      const answered = fp(req, res);
      if (answered) s.fastAnswered++;
      return answered;
    };
    const server = createHttpServer(cfg, app.fetch, withFast ? counted : undefined);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    s.port = (server.address() as AddressInfo).port;
    s.close = async () => {
      await new Promise<void>((r) => server.close(() => r()));
      await sightings.close();
    };
    return s;
  }

  /** Sends the same request to both servers; the responses must be byte-identical. Returns it. */
  async function same(request: string, servedFast: boolean): Promise<string> {
    const before = fast.fastAnswered;
    const a = await raw(fast.port, request);
    const b = await raw(slow.port, request);
    expect(a).toBe(b);
    expect(fast.fastAnswered - before, `fast path ${servedFast ? 'should' : 'should not'} answer: ${request.split('\r\n')[0]}`).toBe(servedFast ? 1 : 0);
    return a;
  }

  beforeAll(async () => {
    const real = prepareRealData(work, ['ipsum/levels/3.txt']);
    db = openDb(real.dataDir);
    // A fixed clock: data_age_s in both answers must not straddle a second.
    const now = Date.now() / 1000;
    engine = new LookupEngine(db, { fpRate: 0.001, worker: false, filterDir: null, now: () => now });
    await engine.reload({ force: true });
    fast = await side(true, 0.001);
    slow = await side(false, 0.001);
  }, 120_000);

  afterAll(async () => {
    (API_SCOPES as Record<string, string>)['GET /api/v1/lookup'] = scopesBefore;
    await fast?.close();
    await slow?.close();
    db?.close();
  });

  it('answers lookups with the same bytes, metrics and hit-log counts as the app', async () => {
    const { token } = createToken(db, 'fp-ok', 'lookup');
    const auth = [`Authorization: Bearer ${token}`];
    const hit = await same(get(`/api/v1/lookup?value=${encodeURIComponent(LISTED[0])}`, auth), true);
    const auth2 = [`Authorization: Bearer ${createToken(db, 'fp-ok2', 'lookup').token}`]; // burst 3 per token
    expect(hit).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(hit).toContain('\r\nContent-Type: application/json\r\n');
    expect(hit).toContain('"matches":[{');
    await same(get('/api/v1/lookup?value=8.8.8.8', auth), true);
    // Percent-escapes and '+' decode as Hono's query() does; an invalid value is a 200 with type "invalid".
    expect(await same(get('/api/v1/lookup?value=http%3A%2F%2Fexample.com%2Fa%3Fb%3Dc', auth), true)).toContain('"type":"url"');
    expect(await same(get('/api/v1/lookup?value=not+a+value', auth2), true)).toContain('"type":"invalid"');
    // A value echoed with multi-byte UTF-8: Content-Length counts bytes, not characters, on both paths.
    const idn = await same(get('/api/v1/lookup?value=b%C3%BCcher.example', auth2), true);
    expect(idn).toContain('"value":"bücher.example"');
    expect(idn).toContain(`\r\nContent-Length: ${Buffer.byteLength(idn.slice(idn.indexOf('\r\n\r\n') + 4))}\r\n`);
    // Other token scopes pass the lookup scope; a lowercase scheme and extra spaces are accepted by both.
    const admin = createToken(db, 'fp-admin', 'admin').token;
    await same(get('/api/v1/lookup?value=1.2.3.4', [`Authorization: bearer   ${admin}`]), true);
    expect(fast.metrics.requests).toBe(slow.metrics.requests);
    expect(fast.metrics.lookups).toBe(slow.metrics.lookups);
    expect(fast.metrics.verdicts).toEqual(slow.metrics.verdicts);
    expect(fast.metrics.requests).toBe(6);
    expect(fast.sightings.stats().recorded).toBe(slow.sightings.stats().recorded);
    expect(fast.sightings.stats().recorded).toBe(1);
  });

  it('leaves every error to the app, which answers it exactly as before', async () => {
    // A fresh token per request with a valid one: these tests stay under the rate limit's burst of 3.
    let n = 0;
    const fresh = () => `Authorization: Bearer ${createToken(db, `fp-err-${++n}`, 'lookup').token}`;
    const v = '/api/v1/lookup?value=8.8.8.8';
    expect(await same(get(v, []), false)).toMatch(/^HTTP\/1\.1 401 .*"code":"E_AUTH","message":"missing Authorization/s);
    expect(await same(get(v, ['Authorization: Bearer op_not-a-real-token']), false)).toContain('unknown, revoked or expired token');
    expect(await same(get(v, ['Authorization: Basic dXNlcjpwYXNz']), false)).toContain('malformed Authorization header');
    await same(get(v, ['Authorization: Bearer']), false);
    await same(get(v, ['Authorization: Bearer a b']), false);
    const twice = fresh();
    await same(get(v, [twice, twice]), false); // two headers: joined by the app and refused
    // Values: empty, missing, undecodable escapes, further parameters, a trailing slash.
    expect(await same(get('/api/v1/lookup?value=', [fresh()]), false)).toContain('query parameter \\"value\\" is required');
    await same(get('/api/v1/lookup', [fresh()]), false);
    await same(get('/api/v1/lookup?value=%E0%A4%A', [fresh()]), false);
    expect(await same(get('/api/v1/lookup?value=8.8.8.8&fields=verdict', [fresh()]), false)).toContain('{"verdict":"unknown"}');
    await same(get('/api/v1/lookup?value=8.8.8.8&fields=nope', [fresh()]), false);
    await same(get('/api/v1/lookup/?value=8.8.8.8', [fresh()]), false);
    await same(`HEAD ${v} HTTP/1.1\r\nHost: 127.0.0.1\r\n${fresh()}\r\nConnection: close\r\n\r\n`, false);
  });

  it('refuses expired and revoked tokens like the app', async () => {
    const soon = createToken(db, 'fp-expiring', 'lookup', { expiresAt: new Date(Date.now() + 1500).toISOString() }).token;
    const v = '/api/v1/lookup?value=9.9.9.9';
    await same(get(v, [`Authorization: Bearer ${soon}`]), true);
    await new Promise((r) => setTimeout(r, 1600));
    expect(await same(get(v, [`Authorization: Bearer ${soon}`]), false)).toMatch(/^HTTP\/1\.1 401 /);
    // A revocation is seen once the verifier re-reads the token (its cache lives 5 s), on both paths alike.
    const gone = createToken(db, 'fp-revoked', 'lookup');
    await same(get(v, [`Authorization: Bearer ${gone.token}`]), true);
    revokeToken(db, gone.row.id, 'test');
    await new Promise((r) => setTimeout(r, 5100));
    expect(await same(get(v, [`Authorization: Bearer ${gone.token}`]), false)).toContain('unknown, revoked or expired token');
  }, 20_000);

  it('shares the rate limit bucket with the app: the request over the limit gets the app\'s 429', async () => {
    const { token } = createToken(db, 'fp-rate', 'lookup');
    const auth = [`Authorization: Bearer ${token}`];
    for (let i = 0; i < 3; i++) await same(get('/api/v1/lookup?value=8.8.4.4', auth), true); // burst 3
    const over = await same(get('/api/v1/lookup?value=8.8.4.4', auth), false);
    expect(over).toMatch(/^HTTP\/1\.1 429 /);
    expect(over).toMatch(/\r\nRetry-After: \d+\r\n/i);
    expect(over).toContain('"code":"E_RATE"');
    // The other routes of the token count against the same bucket.
    await same(`POST /api/v1/lookup HTTP/1.1\r\nHost: 127.0.0.1\r\n${auth[0]}\r\nContent-Type: application/json\r\nContent-Length: 16\r\nConnection: close\r\n\r\n{"values":["x"]}`, false);
  });

  it('takes the scope from the one scope table', async () => {
    // With the table asking for "export" on GET lookups, a lookup token is refused by both, an export token served.
    (API_SCOPES as Record<string, string>)['GET /api/v1/lookup'] = 'export';
    const look = createToken(db, 'fp-scope-lookup', 'lookup').token;
    const exp = createToken(db, 'fp-scope-export', 'export').token;
    const v = '/api/v1/lookup?value=8.8.8.8';
    expect(await same(get(v, [`Authorization: Bearer ${look}`]), false)).toMatch(/^HTTP\/1\.1 403 .*"code":"E_FORBIDDEN"/s);
    await same(get(v, [`Authorization: Bearer ${exp}`]), true);
    (API_SCOPES as Record<string, string>)['GET /api/v1/lookup'] = scopesBefore;
  });
});
