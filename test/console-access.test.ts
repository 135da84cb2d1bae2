// Console security over real HTTP: every route × {anonymous, viewer, admin} (the matrix walks the same
// route table the console registers), CSRF, headers and cookie flags, login lockout, open redirects,
// logout, and no secrets in the appliance's log.
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../appliance/config.ts';
import { openDb } from '../appliance/db.ts';
import { createLogger } from '../appliance/log.ts';
import { LookupEngine } from '../lookup/engine.ts';
import { createConsole } from '../ui/console.tsx';
import type { RouteDef } from '../ui/context.ts';
import { ADMIN, VIEWER, get, login, post, startAppliance, type Appliance, type Signed } from './console-fixture.ts';
import { DATA, cli, tmpDir } from './helpers.ts';

/** The registered route table, from a throwaway store (handlers are not called here). */
function routeTable(): RouteDef[] {
  const dir = tmpDir('outpost-routes-');
  const db = openDb(dir);
  const engine = new LookupEngine(db, { fpRate: 0.01, worker: false });
  const routes = createConsole({ cfg: loadConfig({ dataDir: dir }), db, engine, log: createLogger('silent') }).routes;
  db.close();
  fs.rmSync(dir, { recursive: true, force: true });
  return routes;
}

describe('console access control (real appliance)', () => {
  let app: Appliance;
  let url: string;
  let admin: Signed;
  let viewer: Signed;
  const routes = routeTable();

  beforeAll(async () => {
    app = await startAppliance(['ipsum/levels/3.txt', 'signature-base/c2-iocs.txt']);
    url = app.server.url;
    admin = await login(url, ADMIN);
    viewer = await login(url, VIEWER);
  });
  afterAll(async () => {
    await app?.close();
  });

  it('the route table covers every page and each route has an access level', () => {
    const paths = routes.map((r) => `${r.method} ${r.path}`);
    for (const p of ['GET /', 'GET /login', 'GET /packages', 'POST /packages/upload', 'POST /packages/confirm', 'GET /lookup', 'POST /lookup', 'GET /tokens', 'POST /tokens', 'GET /keys', 'POST /keys', 'GET /audit', 'GET /audit.csv', 'GET /users', 'POST /users', 'GET /upstreams', 'POST /upstreams', 'POST /upstreams/:name/sync', 'GET /upstreams/jobs/:id', 'GET /hits', 'POST /hits/false-positive', 'GET /overrides', 'POST /overrides', 'POST /overrides/:id/remove', 'GET /rollback', 'POST /rollback']) {
      expect(paths).toContain(p);
    }
    expect(new Set(paths).size).toBe(paths.length);
    expect(routes.filter((r) => r.access === 'public').map((r) => `${r.method} ${r.path}`).sort()).toEqual(['GET /assets/console.css', 'GET /login', 'POST /login']);
  });

  it('matrix: every route × anonymous / viewer / admin', async () => {
    const concrete = (p: string) => p.replace(':id', p.startsWith('/packages') ? '1' : p.startsWith('/keys') ? '0000000000000000' : '999999');
    const rows: string[] = [];
    for (const r of routes.filter((x) => x.access !== 'public')) {
      const p = concrete(r.path);
      for (const who of ['anonymous', 'viewer', 'admin'] as const) {
        // Logging out ends the session it is sent with, so it gets sessions of its own.
        const s = who === 'anonymous' ? null : r.path === '/logout' ? await login(url, who === 'admin' ? ADMIN : VIEWER) : who === 'admin' ? admin : viewer;
        const res = r.method === 'GET' ? await get(url, p, s) : await post(url, p, s);
        const body = await res.text();
        const loc = res.headers.get('location') ?? '';
        const allowed = who === 'admin' || (who === 'viewer' && r.access === 'viewer');
        rows.push(`${r.method} ${p} ${who} → ${res.status} ${loc}`);
        if (who === 'anonymous') {
          expect(res.status, `${r.method} ${p} anonymous`).toBe(303);
          expect(loc).toMatch(/^\/login(\?next=|$)/);
        } else if (allowed) {
          expect(res.status, `${r.method} ${p} ${who}: ${body.slice(0, 300)}`).not.toBe(403);
          expect(loc.startsWith('/login') && r.path !== '/logout', `${r.method} ${p} ${who} sent to login`).toBe(false);
          // A page for one record that does not exist (id 999999) answers 404; every other page 200.
          if (r.method === 'GET') expect(res.status, `${r.method} ${p} ${who}`).toBe(p.includes('999999') ? 404 : 200);
        } else {
          expect(res.status, `${r.method} ${p} ${who}`).toBe(403);
          expect(body).toContain('E_FORBIDDEN');
        }
        // Every console answer carries the security headers, whoever asks.
        expect(res.headers.get('content-security-policy')).toContain("frame-ancestors 'none'");
        expect(res.headers.get('cache-control')).toBe('no-store');
      }
    }
    expect(rows.length).toBe(routes.filter((x) => x.access !== 'public').length * 3);
  });

  it('anonymous page requests go to /login and come back after signing in; next cannot leave the site', async () => {
    const res = await get(url, '/audit?q=trust', null);
    expect(res.status).toBe(303);
    expect(res.headers.get('location')).toBe('/login?next=%2Faudit%3Fq%3Dtrust');
    for (const evil of ['//evil.example/x', 'https://evil.example/', '/\\evil.example']) {
      const page = await fetch(`${url}/login?next=${encodeURIComponent(evil)}`);
      const pre = page.headers.getSetCookie()[0].split(';')[0];
      expect(await page.text()).toContain('name="next" value="/"');
      const r = await fetch(`${url}/login`, {
        method: 'POST',
        redirect: 'manual',
        headers: { cookie: pre, origin: url, 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ _csrf: pre.split('=')[1], username: VIEWER.name, password: VIEWER.password, next: evil }),
      });
      expect(r.status).toBe(303);
      expect(r.headers.get('location')).toBe('/');
    }
  });

  it('security headers: CSP without inline script, no framing, no referrer', async () => {
    const res = await get(url, '/', admin);
    const csp = res.headers.get('content-security-policy')!;
    expect(csp).toContain("script-src 'none'");
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("style-src 'self'");
    expect(csp).not.toContain('unsafe-inline');
    expect(res.headers.get('x-frame-options')).toBe('DENY');
    expect(res.headers.get('referrer-policy')).toBe('no-referrer');
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    const html = await res.text();
    expect(html).not.toMatch(/<script|style=|https?:\/\/(?!127\.0\.0\.1|www\.w3\.org)/);
  });

  it('cookies are HttpOnly and SameSite=Strict, and Secure with the __Host- prefix behind https', async () => {
    const plain = await fetch(`${url}/login`);
    const c1 = plain.headers.getSetCookie()[0];
    expect(c1).toMatch(/^outpost_login=/);
    expect(c1).toContain('HttpOnly');
    expect(c1).toContain('SameSite=Strict');
    expect(c1).not.toContain('Secure');

    const https = await fetch(`${url}/login`, { headers: { 'x-forwarded-proto': 'https' } });
    const pre = https.headers.getSetCookie()[0];
    expect(pre).toMatch(/^__Host-outpost_login=.*; Path=\/; HttpOnly; Secure; SameSite=Strict/);
    const pair = pre.split(';')[0];
    const res = await fetch(`${url}/login`, {
      method: 'POST',
      redirect: 'manual',
      headers: { cookie: pair, origin: url, 'x-forwarded-proto': 'https', 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ _csrf: pair.split('=')[1], username: VIEWER.name, password: VIEWER.password }),
    });
    expect(res.status).toBe(303);
    const session = res.headers.getSetCookie().find((c) => c.startsWith('__Host-outpost_session='))!;
    expect(session).toContain('HttpOnly');
    expect(session).toContain('Secure');
    expect(session).toContain('SameSite=Strict');

    // Behind a TLS proxy the browser's Origin is https://<host>: forms from there are accepted, and only with that header.
    const cookie = session.split(';')[0];
    const proxied = { 'x-forwarded-proto': 'https' };
    const dash = await get(url, '/', { cookie, csrf: '' }, proxied);
    expect(dash.status).toBe(200);
    const csrf = /name="_csrf" value="([^"]+)"/.exec(await dash.text())![1];
    const origin = `https://${new URL(url).host}`;
    const ok = await post(url, '/lookup', { cookie, csrf }, { values: '9.9.9.9' }, { ...proxied, origin });
    expect(ok.status).toBe(200);
    const notProxied = await post(url, '/lookup', { cookie: cookie.replace('__Host-', ''), csrf }, { values: '9.9.9.9' }, { origin });
    expect(notProxied.status).toBe(403);
  });

  it('CSRF: a form without the session token, or from another origin, is refused and changes nothing', async () => {
    const before = cli(['token', 'list', '--json'], { dataDir: app.dataDir }).stdout;
    const noToken = await fetch(`${url}/tokens`, {
      method: 'POST',
      redirect: 'manual',
      headers: { cookie: admin.cookie, origin: url, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ name: 'csrf-victim', scope: 'admin' }),
    });
    expect(noToken.status).toBe(403);
    expect(await noToken.text()).toContain('E_CSRF');
    const wrongToken = await post(url, '/tokens', { ...admin, csrf: 'x'.repeat(admin.csrf.length) }, { name: 'csrf-victim', scope: 'admin' });
    expect(wrongToken.status).toBe(403);
    const otherToken = await post(url, '/tokens', { ...admin, csrf: viewer.csrf }, { name: 'csrf-victim', scope: 'admin' });
    expect(otherToken.status).toBe(403);
    const crossOrigin = await post(url, '/tokens', admin, { name: 'csrf-victim', scope: 'admin' }, { origin: 'http://evil.example' });
    expect(crossOrigin.status).toBe(403);
    expect(await crossOrigin.text()).toContain('E_CSRF');
    const crossSite = await post(url, '/tokens', admin, { name: 'csrf-victim', scope: 'admin' }, { origin: 'null', 'sec-fetch-site': 'cross-site' });
    expect(crossSite.status).toBe(403);
    expect(cli(['token', 'list', '--json'], { dataDir: app.dataDir }).stdout).toBe(before);
    // The login form is protected too (double-submit token).
    const loginNoToken = await post(url, '/login', null, { username: ADMIN.name, password: ADMIN.password });
    expect(loginNoToken.status).toBe(403);
    expect(loginNoToken.headers.getSetCookie().some((c) => c.startsWith('outpost_session='))).toBe(false);
  });

  // ---- issue 7 ----
  it('new forms (overrides, false positive, upstreams, rollback) refuse a missing or foreign CSRF token and change nothing', async () => {
    const ip = '203.0.113.77';
    const forms: [string, Record<string, string>][] = [
      ['/overrides', { action: 'allow', value: ip, reason: 'csrf victim' }],
      ['/hits/false-positive', { value: ip, reason: 'csrf victim' }],
      ['/upstreams', { name: 'csrf-victim', url: 'http://127.0.0.1:9/' }],
      ['/rollback', { feed: 'threats' }],
    ];
    const before = cli(['override', 'list', '--all', '--json'], { dataDir: app.dataDir }).stdout;
    const upBefore = cli(['upstream', 'list', '--json'], { dataDir: app.dataDir }).stdout;
    for (const [p, fields] of forms) {
      const noToken = await fetch(`${url}${p}`, { method: 'POST', redirect: 'manual', headers: { cookie: admin.cookie, origin: url, 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(fields) });
      expect(noToken.status, p).toBe(403);
      expect(await noToken.text()).toContain('E_CSRF');
      expect((await post(url, p, { ...admin, csrf: viewer.csrf }, fields)).status, p).toBe(403);
      expect((await post(url, p, admin, fields, { origin: 'http://evil.example' })).status, p).toBe(403);
      expect((await post(url, p, viewer, fields)).status, p).toBe(403);
    }
    expect(cli(['override', 'list', '--all', '--json'], { dataDir: app.dataDir }).stdout).toBe(before);
    expect(cli(['upstream', 'list', '--json'], { dataDir: app.dataDir }).stdout).toBe(upBefore);
    // With the token the same override form works, and its values come back as text.
    const ok = await post(url, '/overrides', admin, { action: 'block', value: ip, reason: '"><script>alert(1)</script>' });
    expect(ok.status).toBe(200);
    const html = await ok.text();
    expect(html).toContain('&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;');
    expect(html).not.toContain('<script>alert(1)');
    expect(cli(['override', 'list', '--json'], { dataDir: app.dataDir }).stdout).toContain(ip);
  });
  // ---- end issue 7 ----

  it('locks a user name after repeated failures, with Retry-After, and records each attempt in the audit log', async () => {
    const lock = { name: 'lockme', password: 'lockme passphrase 99' };
    expect(cli(['user', 'add', lock.name], { dataDir: app.dataDir, input: `${lock.password}\n` }).code).toBe(0);
    const attempt = async (password: string) => {
      const page = await fetch(`${url}/login`);
      const pre = page.headers.getSetCookie()[0].split(';')[0];
      return fetch(`${url}/login`, {
        method: 'POST',
        redirect: 'manual',
        headers: { cookie: pre, origin: url, 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ _csrf: pre.split('=')[1], username: lock.name, password }),
      });
    };
    for (let i = 0; i < 5; i++) {
      const r = await attempt(`wrong guess number ${i}`);
      expect(r.status).toBe(401);
      expect(await r.text()).toContain('wrong user name or password');
    }
    const locked = await attempt(lock.password);
    expect(locked.status).toBe(429);
    expect(Number(locked.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(await locked.text()).toContain('E_RATE');
    expect(locked.headers.getSetCookie().some((c) => c.startsWith('outpost_session='))).toBe(false);
    // An admin resets the password: the lock is lifted for the new one.
    expect(cli(['user', 'passwd', lock.name], { dataDir: app.dataDir, input: 'a brand new passphrase\n' }).code).toBe(0);
    expect((await attempt('a brand new passphrase')).status).toBe(303);
    const audit = await (await get(url, `/audit.csv?q=${lock.name}`, admin)).text();
    expect(audit.match(/user\.login,E_AUTH/g)?.length).toBe(5);
    expect(audit).toContain('user.login,E_RATE');
  });

  it('sign-out ends the session on the server, not just in the browser', async () => {
    const s = await login(url, VIEWER);
    expect((await get(url, '/', s)).status).toBe(200);
    const out = await post(url, '/logout', s);
    expect(out.status).toBe(303);
    const again = await get(url, '/', s);
    expect(again.status).toBe(303);
    expect(again.headers.get('location')).toBe('/login');
  });

  it('viewers see no admin controls; the audit CSV neutralises spreadsheet formulas', async () => {
    const pkgs = await (await get(url, '/packages', viewer)).text();
    expect(pkgs).not.toContain('/packages/upload');
    expect(pkgs).not.toContain('href="/users"');
    const keys = await (await get(url, '/keys', viewer)).text();
    expect(keys).not.toContain('/revoke');
    // A user name is the only free text an anonymous visitor can put into the audit log.
    const page = await fetch(`${url}/login`);
    const pre = page.headers.getSetCookie()[0].split(';')[0];
    await fetch(`${url}/login`, {
      method: 'POST',
      headers: { cookie: pre, origin: url, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ _csrf: pre.split('=')[1], username: '=HYPERLINK("http://evil.example")', password: 'x' }),
    });
    const csv = await (await get(url, '/audit.csv?q=HYPERLINK', admin)).text();
    expect(csv.split('\r\n')[0]).toBe('id,ts,actor,action,code,subject,detail');
    expect(csv).toContain(`"'=HYPERLINK(""http://evil.example"")"`);
    expect(csv).not.toMatch(/,=HYPERLINK/);
  });

  it('console lookups go to the hit log as console:<user>; the dashboard charts lookups and hits per day', async () => {
    const ip = fs.readFileSync(path.join(DATA, 'ipsum/levels/3.txt'), 'utf8').split('\n').map((l) => l.trim()).find((l) => l && !l.startsWith('#'))!;
    const res = await post(url, '/lookup', admin, { values: `${ip}\nnot-listed-console.example` });
    expect(res.status).toBe(200);
    expect(await res.text()).toContain('malicious');
    const r = cli(['hits', '--json', '--top', '1000'], { dataDir: app.dataDir });
    expect(r.code, r.stderr).toBe(0);
    const rows = r.stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
    expect(rows.find((h) => h.value === ip)).toMatchObject({ clients: expect.arrayContaining([`console:${ADMIN.name}`]) });
    expect(rows.some((h) => h.value === 'not-listed-console.example')).toBe(false);
    const ro = new Database(path.join(app.dataDir, 'outpost.db'), { readonly: true });
    const counted = ro.prepare('SELECT coalesce(sum(lookups), 0) AS lookups, coalesce(sum(matches), 0) AS matches FROM lookup_counts').get() as { lookups: number; matches: number };
    ro.close();
    expect(counted.lookups).toBeGreaterThanOrEqual(2);
    expect(counted.matches).toBeGreaterThanOrEqual(1);

    const dash = await (await get(url, '/', viewer)).text();
    const chart = /<svg[^>]*aria-label="Lookups and hits over time[^"]*"[\s\S]*?<\/svg>/.exec(dash);
    expect(chart, 'lookups chart on the dashboard').toBeTruthy();
    expect(chart![0]).toContain('data-series="lookups"');
    expect(chart![0]).toContain('data-series="hits"');
    const today = new Date().toISOString().slice(5, 10);
    // Today's lookups bar is non-empty (its tooltip carries the count).
    expect(chart![0]).toMatch(new RegExp(`<title>${today} lookups: [1-9]`));
  });

  it('no passwords, session cookies or CSRF tokens in the appliance log', () => {
    const log = app.server.stderr();
    expect(log.length).toBeGreaterThan(0);
    for (const secret of [ADMIN.password, VIEWER.password, admin.cookie.split('=')[1], viewer.cookie.split('=')[1], admin.csrf]) {
      expect(log).not.toContain(secret);
    }
    const db = fs.readFileSync(path.join(app.dataDir, 'outpost.db'));
    expect(db.includes(Buffer.from(ADMIN.password))).toBe(false);
  });
});
