// HTTP routes for tuning verdicts on site: local overrides (GET/POST/DELETE /api/v1/overrides), the hit
// log (GET /api/v1/hits) and false-positive marking (POST /api/v1/hits/false-positive). All admin scope
// (the table in lookup/limits.ts); every change is audited as `token:<name>` and reaches lookups at once.
import type { Context, Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import type { DB } from '../appliance/db.ts';
import { OutpostError } from '../appliance/errors.ts';
import type { TokenRow } from '../appliance/tokens.ts';
import type { LookupEngine } from './engine.ts';
import { addOverride, listOverrides, removeOverride } from './overrides.ts';
import { listHits, markFalsePositive, parseSince, type SightingsWriter } from './sightings.ts';

type Env = { Variables: { token: TokenRow } };

export interface VerdictRouteDeps {
  db: DB;
  engine: LookupEngine;
  sightings: SightingsWriter | null;
}

const small = bodyLimit({
  maxSize: 64 * 1024,
  onError: (c) => c.json({ error: { code: 'E_TOO_LARGE', message: 'request body over 64 KiB' } }, 413),
});

async function jsonBody(c: Context<Env>): Promise<Record<string, unknown>> {
  if (!(c.req.header('content-type') ?? '').startsWith('application/json')) throw new OutpostError('E_INPUT', 'Content-Type must be application/json');
  let body: unknown;
  try {
    body = await c.req.json();
  } catch {
    throw new OutpostError('E_INPUT', 'body is not valid JSON');
  }
  if (!body || typeof body !== 'object' || Array.isArray(body)) throw new OutpostError('E_INPUT', 'body must be a JSON object');
  return body as Record<string, unknown>;
}

const str = (v: unknown, name: string): string => {
  if (typeof v !== 'string') throw new OutpostError('E_INPUT', `"${name}" must be a string`);
  return v;
};

export function mountVerdictRoutes(app: Hono<Env>, deps: VerdictRouteDeps): void {
  const { db, engine, sightings } = deps;
  const actor = (c: Context<Env>) => `token:${c.get('token').name}`;

  app.get('/api/v1/overrides', (c) => c.json({ overrides: listOverrides(db, { all: c.req.query('all') === '1' || c.req.query('all') === 'true' }) }));

  app.post('/api/v1/overrides', small, async (c) => {
    const b = await jsonBody(c);
    const days = b.days == null ? null : Number(b.days);
    const row = addOverride(db, {
      action: str(b.action, 'action'),
      value: str(b.value, 'value'),
      reason: str(b.reason ?? '', 'reason'),
      createdBy: actor(c),
      expiresAt: b.expires_at == null ? null : str(b.expires_at, 'expires_at'),
      days,
    });
    engine.refreshOverrides();
    return c.json({ override: row }, 201);
  });

  app.delete('/api/v1/overrides/:id', (c) => {
    const id = Number(c.req.param('id'));
    const row = removeOverride(db, id, actor(c));
    engine.refreshOverrides();
    return c.json({ override: row });
  });

  app.get('/api/v1/hits', async (c) => {
    await sightings?.flushAll(); // what was just looked up shows at once (HTTP workers' queues too)
    const sinceRaw = c.req.query('since');
    const topRaw = c.req.query('top');
    const since = sinceRaw ? parseSince(sinceRaw) : undefined;
    const top = topRaw === undefined ? undefined : Number(topRaw);
    return c.json({ since: since === undefined ? null : new Date(since * 1000).toISOString(), hits: listHits(db, { since, top }) });
  });

  app.post('/api/v1/hits/false-positive', small, async (c) => {
    const b = await jsonBody(c);
    await sightings?.flushAll();
    const r = markFalsePositive(db, str(b.value, 'value'), str(b.reason ?? '', 'reason'), actor(c));
    engine.refreshOverrides();
    return c.json(r, 201);
  });
}
