// Files and secrets: data dir 0700, database (and its WAL) 0600, refusals for world-writable data dirs and
// key files, and no token, password or session cookie in any log output of a real server at trace level.
import fs from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../appliance/log.ts';
import { cli, serve, tmpDir, type Served } from './helpers.ts';
import { bearer, cliAsync, listValues, prepareRealData, request } from './ops-fixture.ts';

const mode = (p: string) => fs.statSync(p).mode & 0o777;

describe('file modes and refusals', () => {
  const work = tmpDir('outpost-files-');
  afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

  it('creates the data dir 0700 and the database 0600 (WAL and shm too while serving); tightens a loosened db', async () => {
    const dataDir = path.join(work, 'var');
    const t = cli(['token', 'create', '--name', 'm'], { dataDir });
    expect(t.code, t.stderr).toBe(0);
    expect(mode(dataDir)).toBe(0o700);
    expect(mode(path.join(dataDir, 'outpost.db'))).toBe(0o600);
    for (const d of ['staging', 'packages', 'inbox', 'exports', 'logs']) expect(mode(path.join(dataDir, d)), d).toBe(0o700);

    const s = await serve(dataDir, ['--no-demo']);
    try {
      for (const f of ['outpost.db', 'outpost.db-wal', 'outpost.db-shm', 'serve.lock']) {
        if (fs.existsSync(path.join(dataDir, f))) expect(mode(path.join(dataDir, f)), f).toBe(0o600);
      }
      expect(fs.existsSync(path.join(dataDir, 'outpost.db-wal'))).toBe(true);
    } finally {
      await s.stop();
    }
    fs.chmodSync(path.join(dataDir, 'outpost.db'), 0o644);
    expect(cli(['status'], { dataDir }).code).toBe(0);
    expect(mode(path.join(dataDir, 'outpost.db'))).toBe(0o600);
  });

  it('refuses a world-writable data dir at start (E_CONFIG) and a world-writable key file in trust add (E_KEY)', async () => {
    const dataDir = path.join(work, 'open');
    fs.mkdirSync(dataDir);
    fs.chmodSync(dataDir, 0o777);
    const err = await serve(dataDir, ['--no-demo']).then(
      (s) => s.stop().then(() => 'started'),
      (e: Error) => e.message,
    );
    expect(err).toMatch(/E_CONFIG: data directory .* is world-writable/);
    expect(fs.existsSync(path.join(dataDir, 'outpost.db'))).toBe(false);

    const keys = path.join(work, 'keys');
    expect(cli(['provider', 'keygen', '--out', keys]).code).toBe(0);
    expect(mode(path.join(keys, 'provider.key'))).toBe(0o600);
    fs.chmodSync(path.join(keys, 'provider.pub'), 0o666);
    const r = cli(['trust', 'add', path.join(keys, 'provider.pub')], { dataDir: path.join(work, 'var2') });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^E_KEY: .*world-writable/m);
  });
});

describe('no secret reaches the logs', () => {
  const work = tmpDir('outpost-secrets-');
  let dataDir: string;
  let keys: string;
  let server: Served;
  const secrets: string[] = [];
  const cliStderr: string[] = [];
  const PASSWORD = 'correct horse battery staple 7f3a9c';
  const WRONG = 'Tr0ub4dor&3-wrong-password-5be1';

  beforeAll(async () => {
    ({ dataDir, keys } = prepareRealData(work, ['maltrail/malware/emotet.txt']));
    const trace = { OUTPOST_LOG_LEVEL: 'trace' };
    for (const scope of ['lookup', 'export', 'admin']) {
      const t = await cliAsync(['token', 'create', '--name', `s-${scope}`, '--scope', scope], { dataDir, env: trace });
      expect(t.code, t.stderr).toBe(0);
      secrets.push(t.lastLine);
      cliStderr.push(t.stderr);
    }
    const u = await cliAsync(['user', 'add', 'admin', '--role', 'admin'], { dataDir, env: trace, input: `${PASSWORD}\n` });
    expect(u.code, u.stderr).toBe(0);
    cliStderr.push(u.stderr);
    secrets.push(PASSWORD, WRONG);
    // The provider private key: its PEM body must not show up either.
    secrets.push(fs.readFileSync(path.join(keys, 'provider.key'), 'utf8').split('\n')[1]);
    server = await serve(dataDir, ['--no-demo'], { OUTPOST_LOG_LEVEL: 'trace' });
  });

  afterAll(async () => {
    await server?.stop();
    fs.rmSync(work, { recursive: true, force: true });
  });

  it('tokens, passwords, cookies and keys never appear in server or CLI stderr at trace level', async () => {
    const [lookupT, exportT, adminT] = secrets;
    const ip = listValues('maltrail/malware/emotet.txt').find((v) => /^\d+\.\d+\.\d+\.\d+:\d+$/.test(v))!.replace(/:\d+$/, '');
    // API traffic: good and bad tokens, scope refusals, malformed bodies, an aborted NDJSON stream.
    expect(JSON.parse((await request(`${server.url}/api/v1/lookup?value=${ip}`, { headers: bearer(lookupT) })).text).verdict).toBe('malicious');
    expect((await request(`${server.url}/api/v1/export/csv`, { headers: bearer(lookupT) })).status).toBe(403);
    expect((await request(`${server.url}/api/v1/export/csv`, { headers: bearer(exportT) })).status).toBe(200);
    expect((await request(`${server.url}/api/v1/lookup?value=1.2.3.4`, { headers: bearer(`${adminT}x`) })).status).toBe(401);
    expect((await request(`${server.url}/api/v1/lookup?value=1.2.3.4`, { headers: { authorization: `Basic ${Buffer.from(`admin:${PASSWORD}`).toString('base64')}` } })).status).toBe(401);
    await request(`${server.url}/api/v1/lookup`, { method: 'POST', headers: bearer(adminT, { 'content-type': 'application/json' }), body: `{"values":["${adminT}"` });
    await request(`${server.url}/api/v1/lookup`, { method: 'POST', headers: bearer(adminT, { 'content-type': 'application/x-ndjson' }), body: `${'z'.repeat(70_000)}` });

    // Console: a wrong and a right password through the real sign-in form.
    const login = async (password: string) => {
      const form = await request(`${server.url}/login`);
      const cookies = ([] as string[]).concat(form.headers['set-cookie'] ?? []).map((c) => c.split(';')[0]).join('; ');
      const csrf = /name="_csrf" value="([^"]+)"/.exec(form.text)?.[1] ?? '';
      const body = new URLSearchParams({ _csrf: csrf, next: '/', username: 'admin', password }).toString();
      return request(`${server.url}/login`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: cookies, origin: server.url }, body });
    };
    expect((await login(WRONG)).status).toBe(401);
    const ok = await login(PASSWORD);
    expect(ok.status).toBe(303);
    const session = ([] as string[]).concat(ok.headers['set-cookie'] ?? []).map((c) => c.split(';')[0].split('=')[1]).filter((v) => v && v.length >= 16);
    expect(session.length).toBeGreaterThan(0);
    secrets.push(...session);
    const dash = await request(`${server.url}/`, { headers: { cookie: ([] as string[]).concat(ok.headers['set-cookie'] ?? []).map((c) => c.split(';')[0]).join('; ') } });
    expect(dash.status).toBe(200);

    // CLI commands that handle secrets, also at trace level.
    const more = [
      await cliAsync(['trust', 'add', path.join(keys, 'provider.pub')], { dataDir, env: { OUTPOST_LOG_LEVEL: 'trace' } }),
      await cliAsync(['token', 'list'], { dataDir, env: { OUTPOST_LOG_LEVEL: 'trace' } }),
      await cliAsync(['user', 'add', 'admin'], { dataDir, env: { OUTPOST_LOG_LEVEL: 'trace' }, input: `${PASSWORD}\n` }), // refused: exists
    ];
    cliStderr.push(...more.map((r) => r.stderr + r.stdout));

    await server.stop();
    const serverErr = server.stderr();
    // The server wrote real log lines (so the check below is not vacuous), all JSON except the banner.
    const jsonLines = serverErr.split('\n').filter((l) => l.startsWith('{'));
    expect(jsonLines.length).toBeGreaterThan(2);
    for (const l of jsonLines) expect(() => JSON.parse(l)).not.toThrow();
    const all = [serverErr, ...cliStderr].join('\n');
    for (const s of secrets) {
      expect(s.length).toBeGreaterThan(8);
      expect(all.includes(s), `secret ${s.slice(0, 6)}… found in log output`).toBe(false);
    }
  });

  it('pino redaction: the configured paths are censored wherever a caller puts them', () => {
    let out = '';
    const sink = new Writable({ write(chunk, _e, cb) { out += chunk; cb(); } });
    const log = createLogger('trace', sink as unknown as Parameters<typeof createLogger>[1]);
    log.info({ token: 'op_SECRET1', password: 'SECRET2', req: { headers: { authorization: 'Bearer op_SECRET3', cookie: 'sid=SECRET4' } }, user: { password: 'SECRET5', token: 'SECRET6' }, privateKey: 'SECRET7' }, 'login');
    log.warn({ headers: { authorization: 'Bearer SECRET8' }, cookie: 'SECRET9', secret: 'SECRETA' }, 'x');
    expect(out).toContain('[redacted]');
    expect(out).not.toMatch(/SECRET/);
  });
});
