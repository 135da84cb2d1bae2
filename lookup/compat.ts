// Cloud-API-compatible lookups: the VirusTotal API v3 object routes (ip_addresses, domains, urls,
// files) answered locally from our verdicts, so a product that already speaks VirusTotal can be pointed
// at the appliance. Served under /compat/vt (set the product's VirusTotal base URL to
// http://<appliance>/compat/vt, or rewrite /api/v3/ to /compat/vt/api/v3/ in a reverse proxy).
// Mapping (docs/integrations.md): each matching feed is one "engine" in last_analysis_results; the
// categories follow our verdict (malicious / suspicious for block feeds, harmless for allow feeds,
// undetected for block listings an allowlist overrides), reputation is ±confidence, tags are the
// matches' categories and tags. Our own verdict rides along in attributes.outpost (black/grey/white).
// Auth: the API's tokens in the `x-apikey` header (VirusTotal's), scope lookup; VirusTotal error shapes.
import type { Context, Hono } from 'hono';
import { scopeAllows, TokenVerifier } from '../appliance/tokens.ts';
import type { LookupResult, Match } from '../appliance/types.ts';
import type { AppEnv } from './api.ts';
import type { LookupEngine } from './engine.ts';
import { rateLimit } from './limits.ts';
import type { Metrics } from './metrics.ts';

export const COMPAT_BASE = '/compat/vt/api/v3';

export type VtCategory = 'malicious' | 'suspicious' | 'harmless' | 'undetected';

export interface CompatOptions {
  /** Per-token rate limit as for /api (config rateLimitRps / rateLimitBurst). */
  rateLimit?: { rps: number; burst: number };
  /** Counts lookups and verdicts in /metrics like the native API. */
  metrics?: Metrics;
  /** Called with every result (e.g. the SIEM push / sightings hook). */
  onResult?: (r: LookupResult, client: string) => void;
  /** Unix seconds; injectable for tests. */
  now?: () => number;
}

function vtError(c: Context, status: number, code: string, message: string): Response {
  return c.json({ error: { code, message } }, status as 400);
}

/** black = malicious, grey = suspicious or unknown, white = benign (the cloud-lookup vendors' ratings). */
export function rating(verdict: LookupResult['verdict']): 'black' | 'grey' | 'white' {
  return verdict === 'malicious' ? 'black' : verdict === 'benign' ? 'white' : 'grey';
}

function engineCategory(verdict: LookupResult['verdict'], m: Match): VtCategory {
  if (m.feed_kind === 'allow') return 'harmless';
  if (verdict === 'malicious') return 'malicious';
  if (verdict === 'suspicious') return 'suspicious';
  return 'undetected'; // a block listing an allowlist or override outweighs
}

const VT_TYPE = { ip: 'ip_address', domain: 'domain', url: 'url', file: 'file' } as const;

/** Builds the VirusTotal v3 object for one of our lookup results. */
export function vtObject(kind: keyof typeof VT_TYPE, id: string, r: LookupResult, now: number, selfUrl: string): Record<string, unknown> {
  const stats: Record<string, number> = { harmless: 0, malicious: 0, suspicious: 0, undetected: 0, timeout: 0 };
  const results: Record<string, unknown> = {};
  const tags = new Set<string>();
  const threatTypes = new Set<string>();
  for (const m of r.matches) {
    const category = engineCategory(r.verdict, m);
    const engine = `Outpost:${m.feed}`;
    if (results[engine]) continue; // one verdict per engine, as on VirusTotal
    stats[category]++;
    results[engine] = {
      category,
      result: category === 'harmless' ? 'clean' : category === 'undetected' ? 'unrated' : (m.category ?? category),
      method: m.feed_kind === 'allow' ? 'whitelist' : 'blacklist',
      engine_name: engine,
    };
    if (m.feed_kind !== 'allow') {
      if (m.category) {
        tags.add(m.category);
        threatTypes.add(m.category);
      }
      for (const t of m.tags ?? []) tags.add(t);
    }
  }
  const reputation =
    r.verdict === 'malicious' ? -r.confidence : r.verdict === 'suspicious' ? -Math.round(r.confidence / 2) : r.verdict === 'benign' ? r.confidence : 0;
  const analysed = r.data_age_s == null ? now : now - r.data_age_s;
  const attributes: Record<string, unknown> = {
    last_analysis_stats: stats,
    last_analysis_results: results,
    last_analysis_date: analysed,
    last_modification_date: analysed,
    reputation,
    tags: [...tags].sort(),
    total_votes: { harmless: 0, malicious: 0 },
    outpost: {
      verdict: r.verdict,
      rating: rating(r.verdict),
      confidence: r.confidence,
      threat_types: [...threatTypes].sort(),
      normalized: r.normalized,
      rule: r.rule,
      generation: r.generation,
    },
  };
  const cidr = r.matches.find((m) => m.kind === 'cidr');
  if (kind === 'ip' && cidr) attributes.network = cidr.indicator;
  if (kind === 'domain' || kind === 'url') {
    const cats: Record<string, string> = {};
    for (const m of r.matches) if (m.category && m.feed_kind !== 'allow') cats[`Outpost:${m.feed}`] = m.category;
    attributes.categories = cats;
  }
  if (kind === 'url') {
    attributes.url = r.value;
    attributes.last_final_url = r.normalized ?? r.value;
    attributes.threat_names = [...threatTypes].sort();
  }
  if (kind === 'file') {
    if (r.type === 'md5' || r.type === 'sha1' || r.type === 'sha256') attributes[r.type] = r.normalized;
    const labels = [...threatTypes].sort();
    if (labels.length) {
      attributes.popular_threat_classification = {
        suggested_threat_label: labels[0],
        popular_threat_category: labels.map((value) => ({ value, count: r.matches.filter((m) => m.category === value).length })),
      };
    }
  }
  return { data: { id, type: VT_TYPE[kind], links: { self: selfUrl }, attributes } };
}

/** URL identifiers on VirusTotal: base64url of the URL without padding (the sha256 form cannot be reversed). */
export function vtUrlId(url: string): string {
  return Buffer.from(url, 'utf8').toString('base64url');
}

function decodeUrlId(id: string): string | null {
  if (/^[0-9a-f]{64}$/i.test(id)) return null;
  if (!/^[A-Za-z0-9_-]+={0,2}$/.test(id)) return null;
  const s = Buffer.from(id, 'base64url').toString('utf8');
  return s && !s.includes('\uFFFD') ? s : null;
}

export function mountCompat(db: import('../appliance/db.ts').DB, engine: LookupEngine, opts: CompatOptions = {}) {
  const tokens = new TokenVerifier(db);
  const now = opts.now ?? (() => Math.floor(Date.now() / 1000));
  return (app: Hono<AppEnv>) => {
    app.use(`${COMPAT_BASE}/*`, async (c, next) => {
      const key = c.req.header('x-apikey');
      if (!key) return vtError(c, 401, 'AuthenticationRequiredError', 'X-Apikey header is missing');
      const row = tokens.verify(key);
      if (!row) return vtError(c, 401, 'WrongCredentialsError', 'Wrong API key');
      if (!scopeAllows(row.scope, 'lookup')) return vtError(c, 403, 'ForbiddenError', `this key has scope "${row.scope}"`);
      c.set('token', row);
      return next();
    });
    if (opts.rateLimit) {
      const limiter = rateLimit(opts.rateLimit);
      app.use(`${COMPAT_BASE}/*`, async (c, next) => {
        const res = await limiter(c, next);
        if (res instanceof Response && res.status === 429) return vtError(c, 429, 'QuotaExceededError', 'rate limit for this key exceeded');
        return res;
      });
    }

    const answer = (c: Context<AppEnv>, kind: keyof typeof VT_TYPE, value: string, id: string, accept: (r: LookupResult) => boolean, notFoundWhenUnknown: boolean) => {
      const t0 = process.hrtime.bigint();
      const r = engine.lookup(value);
      opts.metrics?.observe([r], t0);
      if (r.type === 'invalid' || !accept(r)) {
        return vtError(c, 400, 'InvalidArgumentError', `"${value}" is not a valid ${VT_TYPE[kind].replace('_', ' ')}${r.error ? `: ${r.error}` : ''}`);
      }
      if (r.matches.length) opts.onResult?.(r, c.get('token').name);
      if (notFoundWhenUnknown && r.verdict === 'unknown') return vtError(c, 404, 'NotFoundError', `${VT_TYPE[kind]} "${id}" not found`);
      return c.json(vtObject(kind, id, r, now(), new URL(c.req.url).href));
    };

    app.get(`${COMPAT_BASE}/ip_addresses/:ip`, (c) => {
      const ip = c.req.param('ip');
      return answer(c, 'ip', ip, ip, (r) => r.type === 'ipv4' || r.type === 'ipv6', false);
    });
    app.get(`${COMPAT_BASE}/domains/:domain`, (c) => {
      const d = c.req.param('domain');
      return answer(c, 'domain', d, d, (r) => r.type === 'domain', false);
    });
    app.get(`${COMPAT_BASE}/files/:hash`, (c) => {
      const h = c.req.param('hash');
      return answer(c, 'file', h, h.toLowerCase(), (r) => r.type === 'md5' || r.type === 'sha1' || r.type === 'sha256', true);
    });
    app.get(`${COMPAT_BASE}/urls/:id`, (c) => {
      const id = c.req.param('id');
      const url = decodeUrlId(id);
      if (url === null) return vtError(c, 404, 'NotFoundError', `URL "${id}" not found here: use the base64url URL identifier (the sha256 form cannot be looked up locally)`);
      return answer(c, 'url', url, id, (r) => r.type === 'url', true);
    });
  };
}
