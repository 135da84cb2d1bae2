// The HTTP surface: /healthz, /metrics and the token-protected /api/v1 routes (single, batch, NDJSON stream).
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Hono, type Context } from 'hono';
import { bearerAuth } from 'hono/bearer-auth';
import { bodyLimit } from 'hono/body-limit';
import { HTTPException } from 'hono/http-exception';
import type { Config } from '../appliance/config.ts';
import type { DB } from '../appliance/db.ts';
import { currentGeneration } from '../appliance/db.ts';
import { ERRORS, OutpostError, type ErrorCode } from '../appliance/errors.ts';
import type { Logger } from '../appliance/log.ts';
import { dataAge } from '../appliance/status.ts';
import { feedFreshness } from '../appliance/freshness.ts';
import { scopeAllows, type TokenRow, TokenVerifier } from '../appliance/tokens.ts';
import type { LookupResult } from '../appliance/types.ts';
import { resultJson, type LookupEngine } from './engine.ts';
import { API_SCOPES, jsonTooDeep, RateLimiter, rateLimit, scopeGuard } from './limits.ts';
import { Metrics } from './metrics.ts';
import { mountActors } from './actors.ts';
import { parseFields, pickFields } from './fields.ts';
import { mountVerdictRoutes } from './verdict-routes.ts';
import type { SightingsWriter } from './sightings.ts';
import { plainJsonText } from '../sync/records.ts';

export type AppEnv = { Variables: { token: TokenRow } };

/** Deepest JSON accepted in a lookup body ({"values":[...]} needs two levels). */
const MAX_JSON_DEPTH = 32;

export interface ApiDeps {
  cfg: Config;
  db: DB;
  engine: LookupEngine;
  log: Logger;
  metrics?: Metrics;
  /** Further route groups (console, exports, TAXII, mirror …) mounted before the 404 handler. */
  mounts?: ((app: Hono<AppEnv>) => void)[];
  /** Hit log (lookup/sightings.ts): lookups that matched are counted per value and client token. */
  sightings?: SightingsWriter | null;
}

/** The one request form lookupFastPath answers (anything after it is the value). */
const FAST_PREFIX = '/api/v1/lookup?value=';
/** Host headers @hono/node-server builds the request URL from without parsing (its reValidHost). */
const PLAIN_HOST = /^[a-z0-9._-]+(?::(?:[1-5]\d{3,4}|[6-9]\d{3}))?$/;
/** bearerAuth's token syntax (RFC 6750 token68). */
const TOKEN68 = /^[A-Za-z0-9._~+/-]+=*$/;

export function errorBody(code: ErrorCode, message?: string) {
  return { error: { code, message: message ?? ERRORS[code].text } };
}

function errorResponse(c: Context, code: ErrorCode, message?: string, status?: number): Response {
  return c.json(errorBody(code, message), (status ?? ERRORS[code].status) as 400);
}

/**
 * A node:http handler in front of the Hono app for exactly `GET /api/v1/lookup?value=…` (see lookupFastPath):
 * answers and returns true, or returns false having written nothing, and the caller hands the request to
 * the app.
 */
export type LookupFastPath = (req: IncomingMessage, res: ServerResponse) => boolean;

const fastPaths = new WeakMap<Hono<AppEnv>, LookupFastPath>();

/** The fast path of an app made by createApi (undefined for any other app). */
export function lookupFastPath(app: Hono<AppEnv>): LookupFastPath | undefined {
  return fastPaths.get(app);
}

export function createApi(deps: ApiDeps): Hono<AppEnv> {
  const { cfg, db, engine, log } = deps;
  const sightings = deps.sightings ?? null;
  const metrics = deps.metrics ?? new Metrics();
  const tokens = new TokenVerifier(db);
  const limiter = new RateLimiter({ rps: cfg.rateLimitRps, burst: cfg.rateLimitBurst });
  const app = new Hono<AppEnv>();

  // Health is cached for a second so a monitoring storm never turns into SQLite load.
  let health = { at: 0, body: { status: 'empty', generation: 0, data_age_s: null as number | null } as { status: string; generation: number; data_age_s: number | null; stale_feeds?: string[] }, code: 503 };
  app.get('/healthz', (c) => {
    const now = Date.now();
    if (now - health.at > 1000) {
      const age = dataAge(db, now);
      // Stale when any feed is older than its own limit (feeds.settings.stale_after_s, else cfg.staleAfterS).
      const staleFeeds = age === null ? [] : feedFreshness(db, cfg.staleAfterS, now).filter((f) => f.stale).map((f) => f.name);
      const status = age === null ? 'empty' : staleFeeds.length ? 'stale' : 'ok';
      health = { at: now, body: { status, generation: currentGeneration(db), data_age_s: age, ...(staleFeeds.length ? { stale_feeds: staleFeeds } : {}) }, code: status === 'ok' ? 200 : 503 };
    }
    return c.json(health.body, health.code as 200);
  });

  const unauthorized = (message: string) => (c: Context) =>
    new Response(JSON.stringify(errorBody('E_AUTH', message)), { status: 401, headers: { 'content-type': 'application/json' } });
  const auth = bearerAuth<AppEnv>({
    verifyToken: (token, c) => {
      const row = tokens.verify(token);
      if (row) c.set('token', row);
      return row !== null;
    },
    noAuthenticationHeader: { message: unauthorized('missing Authorization: Bearer <token> header') },
    invalidAuthenticationHeader: { message: unauthorized('malformed Authorization header; expected "Bearer <token>"') },
    invalidToken: { message: unauthorized('unknown, revoked or expired token') },
  });
  app.use('/api/*', auth);

  // Metrics name the feeds and their sizes: any valid token (every scope) may read them, nobody without one.
  app.get('/metrics', auth, async (c) => {
    c.header('Content-Type', 'text/plain; version=0.0.4; charset=utf-8');
    return c.body(await metrics.renderAll(engine, db));
  });

  // After auth: per-token rate limit, then the one route → scope table (lookup/limits.ts).
  app.use('/api/*', rateLimit(limiter), scopeGuard());

  /** One GET lookup after auth, rate limit and scope: the result, counted in the metrics and the hit log. */
  const lookupOne = (value: string, fields: string[] | undefined, client: string) => {
    const t0 = process.hrtime.bigint();
    const result = engine.lookup(value);
    metrics.observeOne(result, t0);
    sightings?.record(result, client);
    return pickFields(result, fields);
  };

  app.get('/api/v1/lookup', (c) => {
    const value = c.req.query('value');
    if (value === undefined || value === '') return errorResponse(c, 'E_INPUT', 'query parameter "value" is required');
    const fields = parseFields(c.req.query('fields')); // ?fields= trims results (lookup/fields.ts)
    return c.json(lookupOne(value, fields, c.get('token').name));
  });

  // The same GET lookup without Hono's per-request work (Request object, routing, middleware chain,
  // Response object): for the plain `?value=` form with one well-formed bearer header of a valid token whose
  // scope the one scope table allows, and a request the rate limit lets through. Everything else (other
  // query parameters, a missing or bad token, wrong scope, 429, undecodable value) is left to the app, which
  // answers exactly as before; test/lookup-fast-path.test.ts compares both byte for byte.
  let lastHost = '';
  let lastHeader = '';
  let lastToken = '';
  fastPaths.set(app, (req, res) => {
    const url = req.url;
    if (req.method !== 'GET' || url === undefined || !url.startsWith(FAST_PREFIX) || url.length === FAST_PREFIX.length) return false;
    let value = url.slice(FAST_PREFIX.length);
    if (value.includes('&') || value.includes('#')) return false;
    // A Host header @hono/node-server takes as is (other forms it parses as a URL, or refuses with 400).
    const host = req.headers.host;
    if (host === undefined || (host !== lastHost && !PLAIN_HOST.test(host))) return false;
    lastHost = host;
    if (value.includes('%') || value.includes('+')) {
      try {
        value = decodeURIComponent(value.replace(/\+/g, ' ')); // as Hono's query(): '+' is a space
      } catch {
        return false; // Hono keeps undecodable escapes as they are
      }
    }
    // Exactly one Authorization header (duplicates are joined by the app's Headers and refused there).
    const raw = req.rawHeaders;
    let header: string | undefined;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i];
      if (name.length === 13 && name.toLowerCase() === 'authorization') {
        if (header !== undefined) return false;
        header = raw[i + 1];
      }
    }
    // bearerAuth's parsing: case-insensitive "Bearer", one space, then a token68. A client sends the same
    // header on every request: the last one that parsed is kept with its token (the same string each time,
    // so the token cache's Map lookup reuses its hash).
    if (header === undefined) return false;
    let token = lastToken;
    if (header !== lastHeader) {
      if (header.length < 8 || header.charCodeAt(6) !== 32 || header.slice(0, 6).toLowerCase() !== 'bearer') return false;
      token = header.slice(7).trimStart();
      if (!TOKEN68.test(token)) return false;
      lastHeader = header;
      lastToken = token;
    }
    const row = tokens.verify(token);
    const need = API_SCOPES['GET /api/v1/lookup'];
    if (row === null || need === undefined || !scopeAllows(row.scope, need)) return false;
    if (limiter.enabled && limiter.take(row.id) > 0) return false; // the app takes again and answers 429
    let body: string;
    try {
      body = resultJson(lookupOne(value, undefined, row.name) as LookupResult); // JSON.stringify's bytes; a miss from a template
    } catch (err) {
      log.error({ err, path: '/api/v1/lookup' }, 'unhandled error');
      body = JSON.stringify(errorBody('E_INTERNAL', 'internal error'));
      res.statusCode = 500;
    }
    // The app's c.json() head (Content-Type and Content-Length, with Node's Date/Connection/Keep-Alive), from
    // one writeHead list: setHeader() costs a fresh header object per response and a keyed store V8 handles
    // in its runtime (~1.3k of 34k profile samples of the HTTP workers at 22k requests/s on the 10M store,
    // docs/performance.md).
    res.writeHead(res.statusCode, ['Content-Type', 'application/json', 'Content-Length', String(Buffer.byteLength(body))]);
    res.end(body);
    return true;
  });

  app.post(
    '/api/v1/lookup',
    async (c, next) => {
      // JSON bodies are capped; NDJSON streams are bounded per line instead.
      if ((c.req.header('content-type') ?? '').startsWith('application/x-ndjson')) return next();
      return bodyLimit({
        maxSize: cfg.maxBodyBytes,
        onError: (cc) => errorResponse(cc, 'E_TOO_LARGE', `request body over ${cfg.maxBodyBytes} bytes; use application/x-ndjson streaming for large batches`),
      })(c, next);
    },
    async (c) => {
      const ctype = c.req.header('content-type') ?? '';
      if (ctype.startsWith('application/x-ndjson')) return streamNdjson(c, engine, metrics, log, cfg, sightings);
      if (!ctype.startsWith('application/json')) {
        return errorResponse(c, 'E_INPUT', 'Content-Type must be application/json ({"values":[...]}) or application/x-ndjson', 415);
      }
      let body: unknown;
      try {
        // {"values":[...]} is two levels deep; refuse pathological nesting before parsing it (lookup/limits.ts).
        const text = await c.req.text();
        if (jsonTooDeep(text, MAX_JSON_DEPTH)) return errorResponse(c, 'E_INPUT', `JSON nested deeper than ${MAX_JSON_DEPTH} levels`);
        body = JSON.parse(text);
      } catch {
        return errorResponse(c, 'E_INPUT', 'body is not valid JSON');
      }
      const values = (body as { values?: unknown })?.values;
      if (!body || typeof body !== 'object' || !Array.isArray(values)) return errorResponse(c, 'E_INPUT', 'body must be {"values":[...]}');
      if (values.length > cfg.maxBatch) return errorResponse(c, 'E_TOO_LARGE', `at most ${cfg.maxBatch} values per request; use application/x-ndjson for more`);
      if (!values.every((v) => typeof v === 'string')) return errorResponse(c, 'E_INPUT', 'every entry of "values" must be a string');
      const fields = parseFields(c.req.query('fields'));
      const t0 = process.hrtime.bigint();
      const results = engine.lookupMany(values as string[]);
      metrics.observe(results, t0);
      sightings?.recordMany(results, c.get('token').name);
      return c.json({ results: fields ? results.map((r) => pickFields(r, fields)) : results });
    },
  );

  // Overrides, hits and false-positive marking (admin scope in lookup/limits.ts API_SCOPES).
  mountVerdictRoutes(app, { db, engine, sightings });

  // Actors and families by any alias with their indicators here (lookup/actors.ts).
  mountActors(db)(app);

  for (const mount of deps.mounts ?? []) mount(app);

  app.notFound((c) => errorResponse(c, 'E_NOT_FOUND', `no route ${c.req.method} ${c.req.path}`));
  app.onError((err, c) => {
    if (err instanceof OutpostError) return errorResponse(c, err.code, err.message);
    if (err instanceof HTTPException) {
      if (err.res) return err.res;
      return errorResponse(c, err.status === 413 ? 'E_TOO_LARGE' : 'E_INPUT', err.message, err.status);
    }
    log.error({ err, path: c.req.path }, 'unhandled error');
    return errorResponse(c, 'E_INTERNAL', 'internal error');
  });
  return app;
}

/**
 * NDJSON in, NDJSON out, streamed: each input line is a JSON string, {"value": "..."} or a bare value.
 * Lines are answered in order, a chunk at a time, so memory stays flat for any batch size. Each input
 * chunk's complete lines are found by scanning for newlines, looked up in one lookupMany() call and written
 * as one output chunk; the response stream pulls the next input chunk only when the client has taken the
 * previous answers (backpressure).
 */
function streamNdjson(c: Context<AppEnv>, engine: LookupEngine, metrics: Metrics, log: Logger, cfg: Config, sightings: SightingsWriter | null = null): Response {
  const client = c.get('token').name;
  const fields = parseFields(c.req.query('fields'));
  const input = c.req.raw.body;
  if (!input) return errorResponse(c, 'E_INPUT', 'empty body');
  const decoder = new TextDecoder('utf-8', { fatal: false });
  // Limits (appliance/config.ts): line length, values per stream, and how long the stream may stay open.
  const MAX_NDJSON_LINE = cfg.ndjsonMaxLine;
  let valuesLeft = cfg.ndjsonMaxValues;
  let timedOut = false;
  let rest = '';
  const reader = input.getReader();
  // A client that stops sending would otherwise hold the stream until the socket times out.
  const deadline = setTimeout(() => {
    timedOut = true;
    reader.cancel().catch(() => {});
  }, cfg.ndjsonMaxStreamS * 1000);
  deadline.unref();
  const values: string[] = []; // one chunk's values, reused
  /** Reads input until some answers (or the end, or an error line) are enqueued. */
  const step = async (controller: ReadableStreamDefaultController<Uint8Array>): Promise<void> => {
    for (;;) {
      const { done, value } = await reader.read();
      if (timedOut) throw new OutpostError('E_TIMEOUT', `NDJSON stream open longer than ${cfg.ndjsonMaxStreamS} s; split the batch`);
      const text = rest + (done ? decoder.decode() : decoder.decode(value, { stream: true }));
      // Complete lines end before `cut`; at the end of the body the last line needs no newline.
      let cut: number;
      if (done) {
        cut = text.length;
        rest = '';
      } else {
        cut = text.lastIndexOf('\n');
        if (cut < 0) {
          if (text.length > MAX_NDJSON_LINE) throw new OutpostError('E_TOO_LARGE', `NDJSON line longer than ${MAX_NDJSON_LINE} characters`);
          rest = text;
          continue; // no complete line yet: read on (nothing to answer)
        }
        rest = text.slice(cut + 1);
      }
      if (values.length !== 0) values.length = 0;
      // Lines before an over-long one are still answered; the error line comes after them.
      let tooLong = false;
      for (let start = 0; start <= cut && text.length !== 0; ) {
        let nl = text.indexOf('\n', start);
        if (nl < 0 || nl > cut) nl = cut;
        const end = nl > start && text.charCodeAt(nl - 1) === 13 ? nl - 1 : nl; // CRLF
        const at = start;
        start = nl + 1;
        if (end === at) continue;
        const c0 = text.charCodeAt(at);
        // Blank lines are skipped (whitespace only: a printable first character rules that out at once).
        if (!(c0 > 32 && c0 < 127) && text.slice(at, end).trim() === '') continue;
        if (end - at > MAX_NDJSON_LINE) {
          tooLong = true;
          break;
        }
        values.push(parseNdjsonValue(text, at, end));
        if (nl === cut && done) break;
      }
      // Answer what fits under the per-stream cap, then report the cap.
      const over = values.length > valuesLeft;
      if (over) values.length = valuesLeft;
      valuesLeft -= values.length;
      let answered = false;
      if (values.length) {
        const t0 = process.hrtime.bigint();
        const results = engine.lookupMany(values);
        metrics.observe(results, t0);
        sightings?.recordMany(results, client);
        // One output chunk per input chunk; a miss is serialized from a template (resultJson).
        let s = '';
        if (fields) for (const r of results) s += JSON.stringify(pickFields(r, fields)) + '\n';
        else for (const r of results) s += resultJson(r) + '\n';
        controller.enqueue(Buffer.from(s, 'utf8'));
        answered = true;
      }
      if (tooLong) throw new OutpostError('E_TOO_LARGE', `NDJSON line longer than ${MAX_NDJSON_LINE} characters`);
      if (over) throw new OutpostError('E_TOO_LARGE', `more than ${cfg.ndjsonMaxValues} values in one NDJSON stream`);
      if (done) {
        clearTimeout(deadline);
        controller.close();
        return;
      }
      if (answered) return;
    }
  };
  const out = new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        await step(controller);
      } catch (e) {
        const err = e instanceof OutpostError ? e : new OutpostError('E_INPUT', 'could not read request body');
        log.warn({ code: err.code }, 'ndjson stream aborted');
        clearTimeout(deadline);
        controller.enqueue(Buffer.from(JSON.stringify(errorBody(err.code, err.message)) + '\n', 'utf8'));
        controller.close();
        reader.cancel().catch(() => {});
      }
    },
    cancel() {
      clearTimeout(deadline);
      reader.cancel().catch(() => {});
    },
  });
  return new Response(out, { status: 200, headers: { 'content-type': 'application/x-ndjson' } });
}

const VALUE_PREFIX = '{"value":"';

/**
 * The value of one NDJSON line text[start, end): a JSON string, {"value": "..."}, or else the bare text.
 * `"…"` and `{"value":"…"}` without escapes are read directly (JSON.parse would return the same); other
 * JSON goes through JSON.parse, and a line that does not parse is looked up as its bare text.
 */
function parseNdjsonValue(text: string, start: number, end: number): string {
  const first = text.charCodeAt(start);
  if (first === 34 /* " */ || first === 123 /* { */) {
    const last = text.charCodeAt(end - 1);
    if (first === 34 && last === 34 && end - start >= 2 && plainJsonText(text, start + 1, end - 1)) return text.slice(start + 1, end - 1);
    if (first === 123 && last === 125 && end - start >= 12 && text.startsWith(VALUE_PREFIX, start) && text.charCodeAt(end - 2) === 34 &&
        plainJsonText(text, start + VALUE_PREFIX.length, end - 2)) {
      return text.slice(start + VALUE_PREFIX.length, end - 2);
    }
    const line = text.slice(start, end);
    try {
      const v = JSON.parse(line) as unknown;
      if (typeof v === 'string') return v;
      if (v && typeof v === 'object' && typeof (v as { value?: unknown }).value === 'string') return (v as { value: string }).value;
    } catch {
      /* not JSON: looked up as the bare text, which reports it invalid with a reason */
    }
    return line;
  }
  return text.slice(start, end);
}

export type { LookupResult };
