// Token scopes: every /api route of the real app (all mounts, walked through Hono's app.routes) has an
// entry in the one scope table, lower scopes get 403 E_FORBIDDEN, and revoked/expired tokens get 401.
import fs from 'node:fs';
import { Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../appliance/config.ts';
import { openDb } from '../appliance/db.ts';
import { createLogger } from '../appliance/log.ts';
import { startAppliance, type RunningAppliance } from '../appliance/serve.ts';
import { createToken, SCOPES, scopeAllows, type Scope, type TokenRow } from '../appliance/tokens.ts';
import { API_SCOPES, isApiMiddleware, scopeGuard } from '../lookup/limits.ts';
import { cli, tmpDir } from './helpers.ts';
import { bearer, listValues, prepareRealData, request } from './ops-fixture.ts';

// Maltrail lists Emotet C2s as ip:port; the feed holds the address.
const LISTED = [...new Set(listValues('maltrail/malware/emotet.txt').filter((v) => /^\d+\.\d+\.\d+\.\d+:\d+$/.test(v)).map((v) => v.replace(/:\d+$/, '')))];

/** A concrete request for a route pattern: params filled with plausible values. */
function requestFor(method: string, pattern: string): { method: string; path: string; body?: string; headers: Record<string, string> } {
  const p = pattern.replace(':format', 'csv').replace(/:[A-Za-z_]+/g, 'x');
  if (method === 'POST') return { method, path: p, body: JSON.stringify({ values: [LISTED[0]] }), headers: { 'content-type': 'application/json' } };
  return { method, path: p.includes('/lookup') ? `${p}?value=${encodeURIComponent(LISTED[0])}` : p, headers: {} };
}

describe('token scopes on the real app', () => {
  const work = tmpDir('outpost-scopes-');
  let dataDir: string;
  let running: RunningAppliance;
  const tokens = {} as Record<Scope, string>;

  beforeAll(async () => {
    dataDir = prepareRealData(work, ['maltrail/malware/emotet.txt']).dataDir;
    const db = openDb(dataDir);
    for (const s of SCOPES) tokens[s] = createToken(db, `scope-${s}`, s).token;
    db.close();
    running = await startAppliance(loadConfig({ dataDir, port: 0, noDemo: true }, {}), createLogger('silent'));
  });

  afterAll(async () => {
    await running?.close();
    fs.rmSync(work, { recursive: true, force: true });
  });

  it('every registered /api route has a scope entry, and every entry is a registered route', () => {
    const endpoints = running.app.routes.filter((r) => r.path.startsWith('/api') && !isApiMiddleware(r));
    const keys = [...new Set(endpoints.map((r) => `${r.method} ${r.path}`))];
    expect(keys.length).toBeGreaterThanOrEqual(3);
    for (const k of keys) expect(API_SCOPES[k], `no scope entry for ${k}`).toBeDefined();
    for (const k of Object.keys(API_SCOPES)) expect(keys, `stale scope entry ${k}`).toContain(k);
    // Nothing else may answer under /api without going through the scope table: /api-wide entries are middleware only.
    const wide = running.app.routes.filter((r) => r.path.startsWith('/api') && isApiMiddleware(r));
    expect(wide.every((r) => r.path === '/api/*')).toBe(true);
  });

  it('each route: lower scopes get 403 E_FORBIDDEN, the required scope and above are let through', async () => {
    expect(LISTED.length).toBeGreaterThan(100);
    let checked = 0;
    for (const [key, need] of Object.entries(API_SCOPES)) {
      const [method, pattern] = key.split(' ');
      const req = requestFor(method, pattern);
      for (const have of SCOPES) {
        const r = await request(`${running.url}${req.path}`, { method, headers: bearer(tokens[have], req.headers), body: req.body });
        if (scopeAllows(have, need)) {
          expect([401, 403], `${have} → ${key}: ${r.text.slice(0, 200)}`).not.toContain(r.status);
          expect(r.status, `${have} → ${key}`).toBeLessThan(500);
        } else {
          expect(r.status, `${have} → ${key}`).toBe(403);
          expect(JSON.parse(r.text).error.code).toBe('E_FORBIDDEN');
        }
        checked++;
      }
    }
    expect(checked).toBe(Object.keys(API_SCOPES).length * SCOPES.length);
  });

  it('an unknown /api route is 404 with a token and 401 without one', async () => {
    const r = await request(`${running.url}/api/v1/nothing-here`, { headers: bearer(tokens.admin) });
    expect(r.status).toBe(404);
    expect(JSON.parse(r.text).error.code).toBe('E_NOT_FOUND');
    expect((await request(`${running.url}/api/v1/nothing-here`)).status).toBe(401);
  });

  it('token create --expires: a past expiry is refused at once (401), a future one works; list shows both', async () => {
    const past = cli(['token', 'create', '--name', 'old', '--expires', '2001-01-01T00:00:00Z'], { dataDir });
    expect(past.code, past.stderr).toBe(0);
    const future = cli(['token', 'create', '--name', 'new', '--expires', '2999-01-01T00:00:00Z'], { dataDir });
    expect(future.code, future.stderr).toBe(0);
    const url = `${running.url}/api/v1/lookup?value=${LISTED[1]}`;
    const expired = await request(url, { headers: bearer(past.lastLine) });
    expect(expired.status).toBe(401);
    expect(JSON.parse(expired.text).error.code).toBe('E_AUTH');
    const ok = await request(url, { headers: bearer(future.lastLine) });
    expect(ok.status).toBe(200);
    expect(JSON.parse(ok.text).verdict).toBe('malicious');

    const list = cli(['token', 'list', '--json'], { dataDir });
    const rows = list.stdout.trim().split('\n').map((l) => JSON.parse(l) as TokenRow);
    expect(rows.find((r) => r.name === 'old')!.expires_at).toBe('2001-01-01T00:00:00.000Z');
    expect(rows.find((r) => r.name === 'new')!.expires_at).toBe('2999-01-01T00:00:00.000Z');
    expect(JSON.stringify(rows)).not.toContain(past.lastLine); // only hashes are stored
    const text = cli(['token', 'list'], { dataDir }).stdout;
    expect(text).toMatch(/old .*EXPIRED/);

    const bad = cli(['token', 'create', '--name', 'x', '--expires', 'next tuesday'], { dataDir });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^E_USAGE/m);
  });

  it('token revoke <id>: the running server answers 401 for it (within the 5 s cache), others keep working', async () => {
    const made = cli(['token', 'create', '--name', 'to-revoke'], { dataDir });
    const url = `${running.url}/api/v1/lookup?value=${LISTED[2]}`;
    expect((await request(url, { headers: bearer(made.lastLine) })).status).toBe(200);
    const id = (cli(['token', 'list', '--json'], { dataDir }).stdout.trim().split('\n').map((l) => JSON.parse(l)) as TokenRow[]).find((r) => r.name === 'to-revoke')!.id;
    const rv = cli(['token', 'revoke', String(id)], { dataDir });
    expect(rv.code, rv.stderr).toBe(0);
    let status = 200;
    for (let i = 0; i < 100 && status !== 401; i++) {
      status = (await request(url, { headers: bearer(made.lastLine) })).status;
      if (status !== 401) await new Promise((r) => setTimeout(r, 200));
    }
    expect(status).toBe(401);
    expect((await request(url, { headers: bearer(tokens.lookup) })).status).toBe(200);
    const again = cli(['token', 'revoke', String(id)], { dataDir });
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/^E_NOT_FOUND/m);
  });
});

describe('scopeGuard fails closed', () => {
  it('a route missing from the table is refused for every scope, even admin', async () => {
    const app = new Hono<{ Variables: { token: TokenRow } }>();
    app.use('/api/*', async (c, next) => {
      c.set('token', { id: 1, name: 'a', scope: 'admin', created_at: '', last_used_at: null, expires_at: null, revoked_at: null });
      await next();
    });
    app.use('/api/*', scopeGuard({ 'GET /api/v1/known': 'admin' }));
    app.get('/api/v1/known', (c) => c.text('ok'));
    app.get('/api/v1/forgotten', (c) => c.text('leak'));
    app.post('/api/v1/known', (c) => c.text('leak'));
    expect((await app.request('/api/v1/known')).status).toBe(200);
    const r = await app.request('/api/v1/forgotten');
    expect(r.status).toBe(403);
    expect((await r.json()).error.code).toBe('E_FORBIDDEN');
    expect((await app.request('/api/v1/known', { method: 'POST' })).status).toBe(403);
    expect((await app.request('/api/v1/none')).status).toBe(404);
  });
});
