// Platform push end to end with real parts: `outpost serve` as a child process pushing to a real rsyslogd
// (test/rsyslog-fixture.ts, TCP octet counting, CEF bodies) and to a node:http webhook receiver that checks
// the HMAC as docs/integrations.md tells receivers to. Packages are real signed packages of real data,
// imported by `outpost import` in separate processes while serve runs (and while it is stopped); sync
// events reach serve only through the audit log (sync/events.ts). Receivers go down, the appliance is
// restarted with events queued, the receivers come back: everything arrives, once, in order.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifySignature } from '../lookup/webhook.ts';
import { generateKeyPair } from '../sync/keys.ts';
import { buildPackage } from '../sync/provider-build.ts';
import { BIN, DATA, ROOT, cli, freePort, getJson, metricOf, postJson, readLines, serve, tmpDir, type Served } from './helpers.ts';
import { parseCef, startRsyslog, until, type Received, type Rsyslog } from './rsyslog-fixture.ts';

const SECRET = 'platform-push-test-secret-0123456789';

interface Receiver {
  events: any[];
  close(): Promise<void>;
}

/** Webhook receiver on a fixed port: verifies the signature, keeps the events of accepted batches. */
function startReceiver(port: number, events: any[]): Promise<Receiver> {
  const srv = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      if (!verifySignature(SECRET, String(req.headers['x-outpost-timestamp']), body, String(req.headers['x-outpost-signature']))) {
        res.writeHead(401).end();
        return;
      }
      events.push(...(JSON.parse(body) as { events: any[] }).events);
      res.writeHead(204).end();
    });
  });
  return new Promise((resolve) =>
    srv.listen(port, '127.0.0.1', () =>
      resolve({
        events,
        close: () =>
          new Promise<void>((r) => {
            srv.close(() => r());
            srv.closeAllConnections();
          }),
      }),
    ),
  );
}

/** `outpost import` in its own process, without blocking this one (the receivers live here). */
function importAsync(dataDir: string, pkg: string): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [BIN, 'import', pkg], { cwd: ROOT, env: { ...process.env, OUTPOST_DATA_DIR: dataDir, OUTPOST_LOG_LEVEL: 'warn' }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    p.stderr!.on('data', (d) => (stderr += d));
    p.on('exit', (code) => resolve({ code: code ?? -1, stderr }));
  });
}

/** A copy of a package with one byte of its signature (manifest.sig content) flipped. */
function tamperSignature(src: string, dest: string): void {
  const bytes = Buffer.from(fs.readFileSync(src));
  for (let off = 0; off + 512 <= bytes.length; ) {
    const name = bytes.subarray(off, off + 100).toString('latin1').replace(/\0.*$/s, '');
    const size = parseInt(bytes.subarray(off + 124, off + 136).toString('latin1'), 8);
    if (name === 'manifest.sig') {
      bytes[off + 512 + Math.floor(size / 2)] ^= 0x01;
      fs.writeFileSync(dest, bytes);
      return;
    }
    off += 512 + Math.ceil(size / 512) * 512;
  }
  throw new Error('no manifest.sig in the package');
}

const sdParam = (m: Received, k: string) => new RegExp(`${k}="([^"]*)"`).exec(m.sd)?.[1];

describe('platform push from a running appliance (rsyslog + webhook)', () => {
  const work = tmpDir('outpost-platform-push-');
  const dataDir = path.join(work, 'var');
  let key: ReturnType<typeof generateKeyPair>;
  let rsyslog: Rsyslog;
  let rx: Receiver;
  const hooked: any[] = [];
  let hookPort = 0;
  let server: Served;
  let token = '';
  let env: NodeJS.ProcessEnv;
  const build = async (version: number, files: string[]) =>
    (await buildPackage({ feed: 'ipsum', keyPath: key.privatePath, outDir: path.join(work, `out${version}`), files: files.map((f) => path.join(DATA, f)), version, category: 'scanner' })).path;
  const metric = async (name: string) => {
    const text = await (await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${token}` } })).text();
    return metricOf(text, name);
  };
  const untilMetric = async (name: string, ok: (n: number) => boolean) => {
    for (const end = Date.now() + 30_000; !ok(await metric(name)); await new Promise((r) => setTimeout(r, 100))) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${name}`);
    }
  };
  const syncMsgs = () => rsyslog.received().filter((m) => m.msgid === 'sync');

  beforeAll(async () => {
    key = generateKeyPair(path.join(work, 'keys'));
    expect(cli(['trust', 'add', key.publicPath], { dataDir }).code).toBe(0);
    const v1 = cli(['import', await build(1, ['ipsum/levels/3.txt'])], { dataDir });
    expect(v1.code, v1.stderr).toBe(0);
    const t = cli(['token', 'create', '--name', 'edge-proxy'], { dataDir });
    expect(t.code, t.stderr).toBe(0);
    token = t.lastLine;
    const secretFile = path.join(work, 'webhook.secret');
    fs.writeFileSync(secretFile, SECRET, { mode: 0o600 });
    fs.mkdirSync(path.join(work, 'rsyslog'));
    rsyslog = await startRsyslog(path.join(work, 'rsyslog'), { tcp: await freePort() });
    hookPort = await freePort();
    rx = await startReceiver(hookPort, hooked);
    env = {
      OUTPOST_SIEM_HOST: '127.0.0.1', OUTPOST_SIEM_PORT: String(rsyslog.tcpPort), OUTPOST_SIEM_TRANSPORT: 'tcp', OUTPOST_SIEM_FORMAT: 'cef',
      OUTPOST_WEBHOOK_URL: `http://127.0.0.1:${hookPort}/hook`, OUTPOST_WEBHOOK_SECRET_FILE: secretFile,
    };
    server = await serve(dataDir, ['--no-demo'], env);
  });
  afterAll(async () => {
    await server?.stop();
    await rx?.close();
    await rsyslog?.stop();
    fs.rmSync(work, { recursive: true, force: true });
  });

  it('`outpost import` in another process: the applied package and the tampered one (E_SIG) reach rsyslog and the webhook', async () => {
    const good = await build(2, ['ipsum/levels/3.txt', 'threatfox/ips.txt']);
    const tampered = path.join(work, 'tampered.tar');
    tamperSignature(await build(3, ['threatfox/ips.txt']), tampered);
    const ok = await importAsync(dataDir, good);
    expect(ok.code, ok.stderr).toBe(0);
    const bad = await importAsync(dataDir, tampered);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^E_SIG:/m);

    await until(() => hooked.filter((e) => String(e.event).startsWith('package.')).length >= 2, 'sync events at the webhook');
    await until(() => syncMsgs().length >= 2, 'sync events at rsyslog');
    const [applied, rejected] = hooked.filter((e) => String(e.event).startsWith('package.'));
    expect(applied).toMatchObject({ event: 'package.applied', feed: 'ipsum', version: 2, type: 'full', actor: 'cli', source: good });
    expect(applied.added).toBeGreaterThan(0);
    expect(rejected).toMatchObject({ event: 'package.rejected', code: 'E_SIG', actor: 'cli', source: tampered, feed: null });
    expect(rejected.message).toMatch(/signature/i);

    const [sa, sr] = syncMsgs();
    const ca = parseCef(sa.msg);
    expect(ca.header.slice(4)).toEqual(['outpost-sync-applied', 'package applied', '3']);
    expect(ca.ext).toMatchObject({ act: 'applied', outcome: 'success', suser: 'cli', cs1: 'ipsum', cn1: '2', cs3: 'full', externalId: String(applied.audit_id) });
    expect(sa.pri).toBe(16 * 8 + 5);
    const cr = parseCef(sr.msg);
    expect(cr.header.slice(4)).toEqual(['outpost-sync-rejected', 'package rejected: E_SIG', '9']);
    expect(cr.ext).toMatchObject({ act: 'rejected', outcome: 'failure', cs4Label: 'code', cs4: 'E_SIG', cs5: tampered, externalId: String(rejected.audit_id) });
    expect(sr.pri).toBe(16 * 8 + 2); // critical: a signature failure
    expect(sdParam(sr, 'code')).toBe('E_SIG');
    expect(sdParam(sr, 'event')).toBe('package.rejected');
  });

  it('receivers down: hits and sync events wait in push_queue across an appliance restart and arrive in order, once, when the receivers return', async () => {
    await rsyslog.stop();
    await rx.close();
    const seenSyslog = rsyslog.received().length;
    const seenHook = hooked.length;

    // Hits: a batch lookup of real listed values (and one unlisted) by the token "edge-proxy".
    const values = [...readLines(path.join(DATA, 'threatfox/ips.txt')).filter((l) => /^\d/.test(l)).slice(0, 15).map((l) => l.split(/[\s:]/)[0]), '192.0.2.200'];
    // serve swaps to the previous test's import (v2, which added the ThreatFox values) within a second or
    // so of its commit, later on a loaded machine: wait until lookups answer from the stored generation
    // (asking with an unlisted value, which is no hit and so pushes nothing).
    for (const end = Date.now() + 30_000; ; await new Promise((r) => setTimeout(r, 100))) {
      const stored = (await getJson(`${server.url}/healthz`)).body.generation;
      if ((await getJson(`${server.url}/api/v1/lookup?value=192.0.2.200`, token)).body.generation === stored) break;
      if (Date.now() > end) throw new Error('serve did not swap to the imported generation');
    }
    const { status, body } = await postJson(`${server.url}/api/v1/lookup`, { values }, token);
    expect(status).toBe(200);
    const hits = (body.results as any[]).filter((r) => r.matches.length && (r.verdict === 'malicious' || r.verdict === 'suspicious'));
    expect(hits.length).toBeGreaterThan(5);
    // A sync event while serve runs, and one while it is stopped.
    expect((await importAsync(dataDir, await build(4, ['ipsum/levels/3.txt']))).code).toBe(0);
    await untilMetric('outpost_siem_push_queued', (n) => n >= hits.length + 1);
    expect(await metric('outpost_siem_push_queued')).toBe(hits.length + 1);
    expect(await metric('outpost_siem_push_dropped_total')).toBe(0);
    expect(await metric('outpost_webhook_push_queued')).toBeGreaterThanOrEqual(1);

    await server.stop();
    expect((await importAsync(dataDir, await build(5, ['threatfox/ips.txt']))).code).toBe(0);
    const db = new Database(path.join(dataDir, 'outpost.db'), { readonly: true });
    const rows = db.prepare('SELECT target, count(*) AS n FROM push_queue GROUP BY target ORDER BY target').all() as { target: string; n: number }[];
    db.close();
    expect(rows.find((r) => r.target === 'syslog')?.n).toBe(hits.length + 1); // persisted; v5 is still only in the audit log
    expect(rows.find((r) => r.target === 'webhook')?.n).toBeGreaterThanOrEqual(1);

    server = await serve(dataDir, ['--no-demo'], env);
    rx = await startReceiver(hookPort, hooked);
    await rsyslog.start();
    await until(() => rsyslog.received().length >= seenSyslog + hits.length + 2, 'queued messages at rsyslog after the restart', 60_000);
    await until(() => hooked.length >= seenHook + hits.length + 2, 'queued events at the webhook after the restart', 60_000);

    const got = rsyslog.received().slice(seenSyslog);
    expect(got.map((m) => m.msgid)).toEqual([...hits.map(() => 'hit'), 'sync', 'sync']);
    expect(got.slice(0, hits.length).map((m) => parseCef(m.msg).ext.cs1)).toEqual(hits.map((h) => h.normalized));
    expect(got.slice(0, hits.length).every((m) => parseCef(m.msg).ext.suser === 'edge-proxy')).toBe(true);
    expect(got.slice(hits.length).map((m) => parseCef(m.msg).ext.cn1)).toEqual(['4', '5']);
    const evs = hooked.slice(seenHook);
    expect(evs.map((e) => e.event)).toEqual([...hits.map(() => 'lookup.hit'), 'package.applied', 'package.applied']);
    expect(evs.slice(0, hits.length).map((e) => e.value)).toEqual(hits.map((h) => h.value));
    expect(evs.slice(hits.length).map((e) => e.version)).toEqual([4, 5]);

    // Once: every sync event (by audit id) exactly once at each receiver, after a few more follower rounds.
    await untilMetric('outpost_siem_push_queued', (n) => n === 0);
    const ids = syncMsgs().map((m) => sdParam(m, 'audit_id'));
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids).toHaveLength(4);
    const hookIds = hooked.filter((e) => String(e.event).startsWith('package.')).map((e) => e.audit_id);
    expect(hookIds).toEqual(ids.map(Number));
    expect(await metric('outpost_webhook_push_queued')).toBe(0);
  });
});
