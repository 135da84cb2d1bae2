// Signed webhook push against a real node:http receiver on 127.0.0.1 that checks the HMAC and timestamp
// the way docs/integrations.md tells receivers to. Hits come from lookups of real listed values through
// the real engine; the retry queue is the real SQLite push_queue; sync events come from a real signed
// package import (and a real refusal), followed from the audit log by sync/events.ts.
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../appliance/config.ts';
import { getMeta, openDb, type DB } from '../appliance/db.ts';
import { LookupEngine } from '../lookup/engine.ts';
import { readSecretFile, verifySignature, WebhookPush, type WebhookConfig } from '../lookup/webhook.ts';
import { AUDIT_CURSOR_KEY, SyncEventFollower } from '../sync/events.ts';
import { importPackage } from '../sync/import.ts';
import { generateKeyPair } from '../sync/keys.ts';
import { buildPackage } from '../sync/provider-build.ts';
import { DATA, cli, readLines, tmpDir } from './helpers.ts';

const SECRET = 'a-test-secret-of-enough-length-0123';

interface Receiver {
  url: string;
  batches: { events: any[] }[];
  refused: number;
  close(): Promise<void>;
}

/** A receiver as documented: recompute the HMAC over "<timestamp>.<raw body>", reject stale timestamps. */
function startReceiver(port = 0): Promise<Receiver> {
  const batches: { events: any[] }[] = [];
  let refused = 0;
  const srv = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const ts = String(req.headers['x-outpost-timestamp'] ?? '');
      const sig = String(req.headers['x-outpost-signature'] ?? '');
      if (!verifySignature(SECRET, ts, body, sig, 300)) {
        refused++;
        res.writeHead(401).end();
        return;
      }
      batches.push(JSON.parse(body));
      res.writeHead(204).end();
    });
  });
  return new Promise((resolve) =>
    srv.listen(port, '127.0.0.1', () =>
      resolve({
        url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}/hook`,
        batches,
        get refused() {
          return refused;
        },
        close: () => new Promise<void>((r) => srv.close(() => r())),
      }),
    ),
  );
}

const until = async (cond: () => boolean, what: string, ms = 20_000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

describe('webhook push', () => {
  const work = tmpDir('outpost-webhook-');
  const dataDir = path.join(work, 'var');
  let db: DB;
  let engine: LookupEngine;
  let listed: string[];
  let keyPair: ReturnType<typeof generateKeyPair>;
  const cfgFor = (url: string, over: Partial<WebhookConfig> = {}): WebhookConfig => ({
    url, secret: Buffer.from(SECRET), minVerdict: 'suspicious', queueMax: 100, batchMax: 50, backoffBaseMs: 20, backoffMaxMs: 200, timeoutMs: 5_000, target: 'webhook', ...over,
  });

  beforeAll(async () => {
    keyPair = generateKeyPair(path.join(work, 'keys'));
    expect(cli(['trust', 'add', keyPair.publicPath], { dataDir }).code).toBe(0);
    const pkg = await buildPackage({ feed: 'ipsum', keyPath: keyPair.privatePath, outDir: path.join(work, 'out1'), files: [path.join(DATA, 'ipsum/levels/3.txt')], version: 1, category: 'scanner' });
    expect(cli(['import', pkg.path], { dataDir }).code).toBe(0);
    db = openDb(dataDir);
    engine = new LookupEngine(db, { fpRate: 0.001, worker: false, filterDir: null });
    await engine.reload({ force: true });
    // Real listed addresses (comment lines and the count column of the ipsum file skipped).
    listed = readLines(path.join(DATA, 'ipsum/levels/3.txt')).filter((l) => /^\d/.test(l)).slice(0, 40).map((l) => l.split(/\s+/)[0]);
  });
  afterAll(() => db?.close());
  // Each case starts from an empty queue, whatever an earlier case left.
  beforeEach(() => void db.prepare('DELETE FROM push_queue').run());

  it('the secret file must be 0600', () => {
    const f = path.join(work, 'secret');
    fs.writeFileSync(f, SECRET + '\n', { mode: 0o644 });
    fs.chmodSync(f, 0o644);
    expect(() => readSecretFile(f)).toThrow(/0600/);
    fs.chmodSync(f, 0o600);
    expect(readSecretFile(f).toString()).toBe(SECRET);
  });

  it('delivers signed hits that the receiver verifies; a wrong secret is refused', async () => {
    const rx = await startReceiver();
    const push = new WebhookPush(db, cfgFor(rx.url));
    const results = engine.lookupMany(listed);
    const hits = results.filter((r) => r.matches.length && (r.verdict === 'malicious' || r.verdict === 'suspicious'));
    expect(hits.length).toBeGreaterThan(0);
    for (const r of results) push.offer(r, 'client-a');
    push.offer(engine.lookupMany(["192.0.2.77"])[0], 'client-a'); // no match: not forwarded
    await until(() => rx.batches.flatMap((b) => b.events).length >= hits.length, 'hits at the receiver');
    const events = rx.batches.flatMap((b) => b.events);
    expect(events.length).toBe(hits.length);
    expect(new Set(events.map((e) => e.normalized ?? e.value))).toEqual(new Set(hits.map((h) => h.normalized ?? h.value)));
    expect(events.every((e) => e.event === 'lookup.hit' && e.client === 'client-a')).toBe(true);
    await push.settled(); // the last batch leaves the queue once its 2xx has been read
    expect(push.stats()).toMatchObject({ queued: 0, dropped: 0 });
    await push.close();

    // Signed with another secret: the receiver answers 401, the batch stays queued for retry.
    const bad = new WebhookPush(db, cfgFor(rx.url, { secret: Buffer.from('another-secret-entirely-0000'), backoffBaseMs: 60_000, backoffMaxMs: 60_000 }));
    bad.offer(hits[0], 'client-b');
    await bad.settled();
    expect(rx.refused).toBe(1);
    expect(bad.stats()).toMatchObject({ queued: 1, failures: 1, sent: 0 });
    await bad.close();
    db.prepare('DELETE FROM push_queue').run();
    await rx.close();
  });

  it('a stale timestamp is rejected by the documented check', () => {
    const body = '{"events":[]}';
    const old = String(Math.floor(Date.now() / 1000) - 3600);
    const sig = `sha256=${require_sign(old, body)}`;
    expect(verifySignature(SECRET, old, body, sig, 300)).toBe(false);
    const now = String(Math.floor(Date.now() / 1000));
    expect(verifySignature(SECRET, now, body, `sha256=${require_sign(now, body)}`, 300)).toBe(true);
  });

  it('receiver down: batches persist in SQLite; a new pusher on the same DB delivers them', async () => {
    const rx0 = await startReceiver();
    const url = rx0.url;
    const port = Number(new URL(url).port);
    await rx0.close(); // nothing listens there now
    const hits = engine.lookupMany(listed).filter((r) => r.matches.length && r.verdict !== 'benign' && r.verdict !== 'unknown');
    const first = new WebhookPush(db, cfgFor(url, { batchMax: 5 }));
    for (const r of hits) first.offer(r, 'client-down');
    await first.settled();
    await until(() => first.stats().failures >= 2, 'retries with backoff');
    await first.close();
    const rows = db.prepare("SELECT count(*) AS n, max(attempts) AS a FROM push_queue WHERE target = 'webhook'").get() as { n: number; a: number };
    expect(rows.n).toBe(Math.ceil(hits.length / 5));
    expect(rows.a).toBeGreaterThanOrEqual(1); // the oldest batch was retried (newer ones wait behind it)

    // "Restart": another DB connection and a new pusher, receiver back on the same port.
    const rx = await startReceiver(port);
    const db2 = openDb(dataDir);
    const second = new WebhookPush(db2, cfgFor(url, { batchMax: 5 }));
    await until(() => second.stats().queued === 0, 'queue drained after restart');
    const events = rx.batches.flatMap((b) => b.events);
    expect(events.length).toBe(hits.length);
    expect(events.map((e) => e.value)).toEqual(hits.map((h) => h.value)); // oldest first, order kept
    expect(second.stats().sent).toBe(rows.n);
    await second.close();
    db2.close();
    await rx.close();
  });

  it('the queue cap drops the oldest batches and counts them', async () => {
    const rx0 = await startReceiver();
    const url = rx0.url;
    await rx0.close();
    const push = new WebhookPush(db, cfgFor(url, { queueMax: 3, batchMax: 1, backoffBaseMs: 60_000, backoffMaxMs: 60_000 }));
    const hits = engine.lookupMany(listed).filter((r) => r.matches.length && r.verdict !== 'benign' && r.verdict !== 'unknown');
    expect(hits.length).toBeGreaterThan(4);
    for (const r of hits.slice(0, 8)) push.offer(r, 'client-cap');
    push.flush();
    const n = Math.min(8, hits.length);
    expect(push.stats()).toMatchObject({ queued: 3, dropped: n - 3 });
    const kept = (db.prepare("SELECT body FROM push_queue WHERE target = 'webhook' ORDER BY id").all() as { body: string }[]).map((r) => JSON.parse(r.body).events[0].value);
    expect(kept).toEqual(hits.slice(n - 3, n).map((h) => h.value)); // the newest three survive
    expect(push.renderMetrics()).toMatch(new RegExp(`outpost_webhook_push_dropped_total ${n - 3}`));
    await push.close();
    db.prepare('DELETE FROM push_queue').run();
  });

  it('sync events: a real package import and a real refusal, read from the audit log, reach the receiver once', async () => {
    const rx = await startReceiver();
    const push = new WebhookPush(db, cfgFor(rx.url));
    // Starts at the newest audit row: the import in beforeAll is history and is not replayed.
    const follower = new SyncEventFollower(db, (evs) => push.insertSync(evs), () => push.queue.trim());
    expect(follower.poll()).toBe(0);
    const cfg = loadConfig({ dataDir }, {});
    const v2 = await buildPackage({ feed: 'ipsum', keyPath: keyPair.privatePath, outDir: path.join(work, 'out2'), files: [path.join(DATA, 'ipsum/levels/3.txt'), path.join(DATA, 'threatfox/ips.txt')], version: 2, category: 'scanner' });
    const r = await importPackage(cfg, db, v2.path, { actor: 'test' });
    expect(r.version).toBe(2);
    await expect(importPackage(cfg, db, v2.path, { actor: 'test' })).rejects.toMatchObject({ code: 'E_ROLLBACK' });
    expect(follower.poll()).toBe(2);
    expect(follower.poll()).toBe(0); // the cursor moved with the queued events: nothing twice
    await until(() => rx.batches.flatMap((b) => b.events).filter((e) => String(e.event).startsWith('package.')).length >= 2, 'sync events');
    await push.settled();
    const evs = rx.batches.flatMap((b) => b.events).filter((e) => String(e.event).startsWith('package.'));
    expect(evs).toHaveLength(2);
    expect(evs[0]).toMatchObject({ event: 'package.applied', feed: 'ipsum', version: 2, type: 'full', actor: 'test', generation: r.generation, added: r.added, removed: r.removed });
    expect(evs[1]).toMatchObject({ event: 'package.rejected', feed: 'ipsum', version: 2, type: 'full', actor: 'test', code: 'E_ROLLBACK' });
    expect(evs[1].audit_id).toBeGreaterThan(evs[0].audit_id);
    expect(Number(getMeta(db, AUDIT_CURSOR_KEY))).toBeGreaterThanOrEqual(evs[1].audit_id);
    follower.stop();
    await push.close();
    await rx.close();
  });
});


function require_sign(ts: string, body: string): string {
  return crypto.createHmac('sha256', SECRET).update(`${ts}.${body}`).digest('hex');
}
