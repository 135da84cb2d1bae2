// TAXII 2.1 server (read-only, OASIS TAXII 2.1): discovery at /taxii2/, one API root, a collection per
// block feed, its STIX 2.1 indicators (the objects of the STIX export, same ids and content) with
// added_after / limit / next / match[type|id|version|spec_version], object manifests and versions.
//
// Decisions:
//  - date_added of every object in a collection is the time the feed's current content was applied
//    (feeds.applied_at): a full or delta apply replaces the collection, so a client polling with
//    added_after gets the whole feed again after each apply and nothing in between. Rows carry no
//    per-row insertion time, and first_seen is the provider's sighting time, not ours.
//  - Since all objects of a collection share one date_added, pages are cut by an opaque `next` cursor
//    (the last (type, value) returned), not by added_after; `more: true` always comes with `next`.
//  - The identity the indicators' created_by_ref points at is the first object of every collection.
//  - Auth: the API's tokens with scope `export`, as Bearer, as HTTP Basic (the spec's mandatory scheme:
//    the token is the password, or the user name with an empty password) or as `Token <t>`
//    (taxii2-client's TokenAuth). Errors use the TAXII error message shape.
import type { Context, Hono, MiddlewareHandler } from 'hono';
import type { DB } from '../appliance/db.ts';
import { scopeAllows, TokenVerifier, type TokenRow } from '../appliance/tokens.ts';
import type { AppEnv } from './api.ts';
import { blockFeeds, feedRows, type FeedCursor, type FeedInfo } from './exports/feed-rows.ts';
import { newStats, sourceContext, type SourceOptions } from './exports/source.ts';
import { IDENTITY, IDENTITY_ID, stixIndicator, uuidv5 } from './exports/stix.ts';
import { rateLimit } from './limits.ts';

export const TAXII_MEDIA_TYPE = 'application/taxii+json;version=2.1';
export const STIX_MEDIA_TYPE = 'application/stix+json;version=2.1';
export const TAXII_BASE = '/taxii2';
export const API_ROOT = 'outpost';
/** Page size when the client gives no limit, and the most objects one response carries. */
export const DEFAULT_PAGE = 1000;

export interface TaxiiOptions extends SourceOptions {
  /** Unix seconds; injectable for tests. */
  now?: () => number;
  /** Largest page; a larger `limit` is lowered to it. */
  maxPage?: number;
  /** Per-token rate limit as for /api (config rateLimitRps / rateLimitBurst). */
  rateLimit?: { rps: number; burst: number };
}

/** Stable collection id of a feed: UUIDv5 of its name, so clients keep their subscriptions across restarts. */
export function collectionId(feed: string): string {
  return uuidv5(`taxii-collection:${feed}`);
}

type TaxiiEnv = AppEnv;

function taxiiJson(c: Context, body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': TAXII_MEDIA_TYPE, ...headers } });
}

/** TAXII 2.1 error message (section 3.6.1): title, description, http_status as a string, error_code. */
function taxiiError(c: Context, status: number, title: string, description: string, code: string, headers: Record<string, string> = {}): Response {
  return taxiiJson(c, { title, description, error_code: code, http_status: String(status) }, status, headers);
}

/** Accept check: the TAXII 2.1 media type (version 2.1 or no version = latest), or a wildcard; else 406. */
export function acceptsTaxii(accept: string | undefined): boolean {
  if (!accept || !accept.trim()) return true;
  for (const range of accept.split(',')) {
    const [type, ...params] = range.split(';').map((s) => s.trim().toLowerCase());
    if (type === '*/*' || type === 'application/*') return true;
    if (type !== 'application/taxii+json') continue;
    const version = params.find((p) => p.startsWith('version='))?.slice(8).replace(/"/g, '');
    const q = params.find((p) => p.startsWith('q='));
    if (q && Number(q.slice(2)) === 0) continue;
    if (version === undefined || version === '2.1') return true;
  }
  return false;
}

function credential(header: string | undefined): string | null {
  if (!header) return null;
  const sp = header.indexOf(' ');
  if (sp < 0) return null;
  const scheme = header.slice(0, sp).toLowerCase();
  const rest = header.slice(sp + 1).trim();
  if (scheme === 'bearer' || scheme === 'token') return rest || null;
  if (scheme === 'basic') {
    let decoded: string;
    try {
      decoded = Buffer.from(rest, 'base64').toString('utf8');
    } catch {
      return null;
    }
    const colon = decoded.indexOf(':');
    if (colon < 0) return null;
    const user = decoded.slice(0, colon);
    const pass = decoded.slice(colon + 1);
    return pass || user || null;
  }
  return null;
}

function auth(tokens: TokenVerifier): MiddlewareHandler<TaxiiEnv> {
  const challenge = { 'www-authenticate': 'Basic realm="outpost-taxii", Bearer realm="outpost-taxii"' };
  return async (c, next) => {
    const secret = credential(c.req.header('authorization'));
    if (!secret) return taxiiError(c, 401, 'Unauthorized', 'send an API token: Authorization: Bearer <token>, or HTTP Basic with the token as password', 'E_AUTH', challenge);
    const row: TokenRow | null = tokens.verify(secret);
    if (!row) return taxiiError(c, 401, 'Unauthorized', 'unknown, revoked or expired token', 'E_AUTH', challenge);
    if (!scopeAllows(row.scope, 'export')) return taxiiError(c, 403, 'Forbidden', `this token has scope "${row.scope}"; TAXII needs "export"`, 'E_FORBIDDEN');
    c.set('token', row);
    if (!acceptsTaxii(c.req.header('accept'))) {
      return taxiiError(c, 406, 'Not Acceptable', `this server answers ${TAXII_MEDIA_TYPE} only`, 'E_INPUT');
    }
    return next();
  };
}

// ---- query parameters ----

class BadRequest extends Error {}

function parseTimestamp(s: string, what: string): number {
  // RFC 3339 in UTC as STIX/TAXII write it; fractional seconds of any precision.
  const m = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.(\d+))?Z$/.exec(s);
  const t = m ? Date.parse(`${m[1]}Z`) : NaN;
  if (!m || Number.isNaN(t)) throw new BadRequest(`${what} must be an RFC 3339 UTC timestamp such as 2026-01-01T00:00:00.000Z, got "${s}"`);
  const frac = m[3] ? Number(`0.${m[3]}`) * 1000 : 0;
  return t + frac;
}

interface Filters {
  addedAfter: number | null;
  limit: number;
  next: FeedCursor | 'start' | null;
  types: Set<string> | null;
  ids: Set<string> | null;
  versions: { any: boolean; first: boolean; last: boolean; at: Set<number> };
  specVersions: Set<string> | null;
}

function list(v: string | undefined): string[] | null {
  if (v === undefined) return null;
  return v.split(',').map((s) => s.trim()).filter(Boolean);
}

export function encodeNext(k: FeedCursor | 'identity'): string {
  return Buffer.from(JSON.stringify(k === 'identity' ? ['identity'] : [k.type, k.value]), 'utf8').toString('base64url');
}

function decodeNext(s: string): FeedCursor | 'start' {
  try {
    const a = JSON.parse(Buffer.from(s, 'base64url').toString('utf8')) as unknown;
    if (Array.isArray(a) && a.length === 1 && a[0] === 'identity') return 'start';
    if (Array.isArray(a) && a.length === 2 && typeof a[0] === 'string' && typeof a[1] === 'string') return { type: a[0], value: a[1] };
  } catch {
    /* fall through */
  }
  throw new BadRequest('next is not a value this server handed out');
}

function parseFilters(c: Context, maxPage: number): Filters {
  const q = (k: string) => c.req.query(k);
  const added = q('added_after');
  const limitRaw = q('limit');
  let limit = Math.min(DEFAULT_PAGE, maxPage);
  if (limitRaw !== undefined) {
    if (!/^\d+$/.test(limitRaw) || Number(limitRaw) < 1) throw new BadRequest(`limit must be a positive integer, got "${limitRaw}"`);
    limit = Math.min(Number(limitRaw), maxPage);
  }
  const next = q('next');
  const versions = { any: false, first: false, last: false, at: new Set<number>() };
  const vlist = list(q('match[version]'));
  if (!vlist || !vlist.length) versions.last = true; // spec default: the latest version
  else
    for (const v of vlist) {
      if (v === 'all') versions.any = true;
      else if (v === 'first') versions.first = true;
      else if (v === 'last') versions.last = true;
      else versions.at.add(parseTimestamp(v, 'match[version]'));
    }
  const types = list(q('match[type]'));
  const ids = list(q('match[id]'));
  const spec = list(q('match[spec_version]'));
  return {
    addedAfter: added === undefined ? null : parseTimestamp(added, 'added_after'),
    limit,
    next: next === undefined || next === '' ? null : decodeNext(next),
    types: types ? new Set(types) : null,
    ids: ids ? new Set(ids) : null,
    versions,
    specVersions: spec ? new Set(spec) : null,
  };
}

// ---- the collection as an ordered sequence of objects ----

interface Item {
  obj: Record<string, unknown>;
  /** Cursor after this object. */
  cursor: FeedCursor | 'identity';
}

const isoMs = (ms: number) => new Date(ms).toISOString();

/** The collection's objects in order: the identity, then the indicators in (type, value) order. */
function* collectionObjects(db: DB, feed: string, now: number, after: FeedCursor | 'start' | null, policy: SourceOptions): Generator<Item> {
  if (after === null) yield { obj: IDENTITY, cursor: 'identity' };
  const ctx = sourceContext(db, now, newStats(), policy);
  for (const r of feedRows(ctx, feed, after === null || after === 'start' ? null : after)) {
    yield { obj: stixIndicator(r, now), cursor: r.key };
  }
}

function matches(obj: Record<string, unknown>, f: Filters): boolean {
  if (f.types && !f.types.has(obj.type as string)) return false;
  if (f.ids && !f.ids.has(obj.id as string)) return false;
  if (f.specVersions && !f.specVersions.has(obj.spec_version as string)) return false;
  // One version per object here, so first, last and all each select it; a timestamp must equal `modified`.
  const v = f.versions;
  if (!(v.any || v.first || v.last) && !v.at.has(Date.parse(obj.modified as string))) return false;
  return true;
}

interface Page {
  items: Record<string, unknown>[];
  more: boolean;
  next?: string;
}

function page(db: DB, feed: FeedInfo, f: Filters, now: number, policy: SourceOptions): Page {
  const added = Date.parse(feed.applied_at);
  if (f.addedAfter !== null && !(added > f.addedAfter)) return { items: [], more: false };
  const items: Record<string, unknown>[] = [];
  let last: Item | null = null;
  let more = false;
  const it = collectionObjects(db, feed.name, now, f.next, policy);
  try {
    for (const item of it) {
      if (!matches(item.obj, f)) continue;
      if (items.length === f.limit) {
        more = true;
        break;
      }
      items.push(item.obj);
      last = item;
      // A match[id] query is done once every id asked for was found.
      if (f.ids && items.length === f.ids.size) break;
    }
  } finally {
    it.return(undefined);
  }
  return more && last ? { items, more, next: encodeNext(last.cursor) } : { items, more: false };
}

function dateHeaders(feed: FeedInfo, n: number): Record<string, string> {
  if (!n) return {};
  const d = isoMs(Date.parse(feed.applied_at));
  return { 'X-TAXII-Date-Added-First': d, 'X-TAXII-Date-Added-Last': d };
}

// ---- routes ----

/** Mounts the TAXII routes on the API app (createApi's `mounts`). */
export function mountTaxii(db: DB, opts: TaxiiOptions = {}) {
  const now = opts.now ?? (() => Math.floor(Date.now() / 1000));
  const maxPage = opts.maxPage ?? DEFAULT_PAGE;
  const tokens = new TokenVerifier(db);
  const root = `${TAXII_BASE}/${API_ROOT}`;

  const feedsById = (): Map<string, FeedInfo> => {
    const ctx = sourceContext(db, now(), newStats(), opts);
    return new Map(blockFeeds(ctx).map((f) => [collectionId(f.name), f]));
  };
  const collectionResource = (f: FeedInfo) => ({
    id: collectionId(f.name),
    title: f.name,
    description: `Outpost block feed "${f.name}"${f.category ? ` (${f.category})` : ''}, version ${f.version}: STIX 2.1 indicators, allowlists applied`,
    can_read: true,
    can_write: false,
    media_types: [STIX_MEDIA_TYPE],
  });

  return (app: Hono<AppEnv>) => {
    const guard = auth(tokens);
    const limiter = opts.rateLimit ? rateLimit(opts.rateLimit) : null;
    // Spec URLs end in "/"; the same handler answers without it.
    const get = (path: string, handler: (c: Context<TaxiiEnv>) => Response) => {
      for (const p of [path, path.replace(/\/$/, '')]) {
        if (limiter) app.get(p, guard, limiter, handler);
        else app.get(p, guard, handler);
      }
    };
    const readOnly = (c: Context<TaxiiEnv>) => taxiiError(c, 405, 'Method Not Allowed', 'this TAXII server is read-only', 'E_FORBIDDEN', { allow: 'GET' });
    const run = (c: Context<TaxiiEnv>, fn: () => Response): Response => {
      try {
        return fn();
      } catch (e) {
        if (e instanceof BadRequest) return taxiiError(c, 400, 'Bad Request', e.message, 'E_INPUT');
        throw e;
      }
    };
    const withCollection = (c: Context<TaxiiEnv>, fn: (f: FeedInfo) => Response): Response => {
      const f = feedsById().get(c.req.param('id') ?? '');
      if (!f) return taxiiError(c, 404, 'Not Found', `no collection ${c.req.param('id')} in API root ${API_ROOT}`, 'E_NOT_FOUND');
      return run(c, () => fn(f));
    };

    get(`${TAXII_BASE}/`, (c) => {
      const origin = new URL(c.req.url).origin;
      return taxiiJson(c, {
        title: 'Outpost TAXII 2.1 server',
        description: 'Read-only: one collection per block feed of this appliance',
        default: `${origin}${root}/`,
        api_roots: [`${origin}${root}/`],
      });
    });

    get(`${root}/`, (c) =>
      taxiiJson(c, {
        title: 'Outpost feeds',
        description: 'Indicators of each block feed, as STIX 2.1',
        versions: [TAXII_MEDIA_TYPE],
        // Nothing is ever posted here; this is the largest body the API accepts anywhere.
        max_content_length: 4 * 1024 * 1024,
      }),
    );

    get(`${root}/collections/`, (c) => taxiiJson(c, { collections: [...feedsById().values()].map(collectionResource) }));

    get(`${root}/collections/:id/`, (c) => withCollection(c, (f) => taxiiJson(c, collectionResource(f))));

    get(`${root}/collections/:id/objects/`, (c) =>
      withCollection(c, (f) => {
        const p = page(db, f, parseFilters(c, maxPage), now(), opts);
        if (!p.items.length) return taxiiJson(c, {});
        return taxiiJson(c, { more: p.more, ...(p.next ? { next: p.next } : {}), objects: p.items }, 200, dateHeaders(f, p.items.length));
      }),
    );

    get(`${root}/collections/:id/manifest/`, (c) =>
      withCollection(c, (f) => {
        const p = page(db, f, parseFilters(c, maxPage), now(), opts);
        if (!p.items.length) return taxiiJson(c, {});
        const dateAdded = isoMs(Date.parse(f.applied_at));
        const objects = p.items.map((o) => ({ id: o.id, date_added: dateAdded, version: o.modified, media_type: STIX_MEDIA_TYPE }));
        return taxiiJson(c, { more: p.more, ...(p.next ? { next: p.next } : {}), objects }, 200, dateHeaders(f, objects.length));
      }),
    );

    const oneObject = (c: Context<TaxiiEnv>, f: FeedInfo) => {
      const id = c.req.param('objectId') ?? '';
      const filters = parseFilters(c, maxPage);
      filters.ids = new Set([id]);
      return { filters, p: page(db, f, filters, now(), opts), id };
    };

    get(`${root}/collections/:id/objects/:objectId/`, (c) =>
      withCollection(c, (f) => {
        const { p, id } = oneObject(c, f);
        if (!p.items.length) return taxiiError(c, 404, 'Not Found', `no object ${id} in this collection (or none matching the filters)`, 'E_NOT_FOUND');
        return taxiiJson(c, { more: false, objects: p.items }, 200, dateHeaders(f, p.items.length));
      }),
    );

    get(`${root}/collections/:id/objects/:objectId/versions/`, (c) =>
      withCollection(c, (f) => {
        const { p, id } = oneObject(c, f);
        if (!p.items.length) return taxiiError(c, 404, 'Not Found', `no object ${id} in this collection`, 'E_NOT_FOUND');
        return taxiiJson(c, { more: false, versions: p.items.map((o) => o.modified) }, 200, dateHeaders(f, p.items.length));
      }),
    );

    for (const p of [`${root}/collections/:id/objects/`, `${root}/collections/:id/objects/:objectId/`]) {
      app.post(p, guard, readOnly);
      app.delete(p, guard, readOnly);
    }
  };
}

export { IDENTITY_ID };
