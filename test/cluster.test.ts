// `outpost serve` with OUTPOST_HTTP_WORKERS=2 (appliance/cluster.ts): the HTTP workers answer single and
// batch lookups on the public port (the GET fast path included), forward every other route to the primary,
// and follow a new generation imported by another process: each worker loads the persisted filters in its
// loader thread and swaps them in, with no failed request meanwhile and the new values found afterwards —
// the full apply's file, after a delta the file the apply extended from the previous set (nobody builds),
// or, without that set, the file of the primary's one build (no worker builds).
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, DATA, metricOf, serve, tmpDir, type Served } from './helpers.ts';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { verifySignature } from '../lookup/webhook.ts';
import { cliAsync, createToken, listValues, prepareRealData, request } from './ops-fixture.ts';

const V1 = listValues('ipsum/levels/3.txt');
const V2_ONLY = listValues('threatfox/ips.txt').filter((v) => !new Set(V1).has(v));
const noKeepAlive = new http.Agent({ keepAlive: false });
const SECRET = 'cluster-test-webhook-secret-0123456789';

describe('HTTP workers (OUTPOST_HTTP_WORKERS=2)', () => {
  const work = tmpDir('outpost-cluster-');
  let server: Served;
  let token: string;
  let admin: string;
  let url: string;
  let hook: http.Server;
  const received: string[] = [];
  let real: ReturnType<typeof prepareRealData>;
  let v2Package = '';
  /** The generation follower's log lines (appliance/filter-follow.ts) about generations after `gen`. */
  const followLines = (gen: number) =>
    server
      .stderr()
      .split('\n')
      .filter((l) => /serving new generation|waiting for the persisted filters|did not come|filter reload failed/.test(l))
      .filter((l) => Number(/"generation":(\d+)/.exec(l)?.[1] ?? 0) > gen);

  beforeAll(async () => {
    real = prepareRealData(work, ['ipsum/levels/3.txt']);
    token = createToken(real.dataDir, 'cluster');
    admin = createToken(real.dataDir, 'cluster-admin', 'admin');
    // A signed-webhook receiver: hits the workers answer are queued by them and sent by the primary.
    hook = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        if (verifySignature(SECRET, String(req.headers['x-outpost-timestamp']), body, String(req.headers['x-outpost-signature']), 300)) received.push(body);
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => hook.listen(0, '127.0.0.1', r));
    const secretFile = path.join(work, 'webhook.secret');
    fs.writeFileSync(secretFile, SECRET, { mode: 0o600 });
    server = await serve(real.dataDir, ['--no-demo'], {
      OUTPOST_HTTP_WORKERS: '2',
      OUTPOST_RATE_LIMIT_RPS: '0',
      OUTPOST_WEBHOOK_URL: `http://127.0.0.1:${(hook.address() as AddressInfo).port}/hook`,
      OUTPOST_WEBHOOK_SECRET_FILE: secretFile,
    });
    // The primary logs its internal loopback URL first; the public one (the workers') is in the banner. The
    // banner is written at once and the log line through pino's buffer, so either may come first: wait for both.
    const up = () => /Outpost is serving on /.test(server.stderr()) && /HTTP workers serving/.test(server.stderr());
    for (let i = 0; i < 600 && !up(); i++) await new Promise((r) => setTimeout(r, 100));
    url = /Outpost is serving on (http:\/\/\S+)/.exec(server.stderr())![1];
  }, 120_000);

  afterAll(async () => {
    await server?.stop();
    await new Promise((r) => hook?.close(r));
    fs.rmSync(work, { recursive: true, force: true });
  });

  // One connection per request: node:cluster hands out connections (not requests) to the workers in turn,
  // so consecutive requests reach both workers.
  const get = async (value: string, auth = token) => {
    const res = await request(`${url}/api/v1/lookup?value=${encodeURIComponent(value)}`, { headers: { authorization: `Bearer ${auth}`, connection: 'close' }, agent: noKeepAlive });
    return { status: res.status, body: JSON.parse(res.text) as { generation: number; verdict: string; matches: { indicator: string }[] } };
  };

  it('answers lookups in the workers and forwards the other routes to the primary', async () => {
    expect(server.stderr()).toMatch(/HTTP workers serving/);
    const hit = await get(V1[0]);
    expect(hit.status).toBe(200);
    expect(hit.body.matches.map((m) => m.indicator)).toContain(V1[0]);
    const batch = await fetch(`${url}/api/v1/lookup`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ values: V1.slice(0, 5) }),
    });
    expect(batch.status).toBe(200);
    expect(((await batch.json()) as { results: { matches: unknown[] }[] }).results.every((r) => r.matches.length > 0)).toBe(true);
    // Forwarded: an admin route (the primary's hit log), and a refusal with the primary's catalog code.
    const hits = await fetch(`${url}/api/v1/hits`, { headers: { authorization: `Bearer ${admin}` } });
    expect(hits.status).toBe(200);
    const denied = await fetch(`${url}/api/v1/hits`, { headers: { authorization: `Bearer ${token}` } });
    expect(denied.status).toBe(403);
    expect(((await denied.json()) as { error: { code: string } }).error.code).toBe('E_FORBIDDEN');
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
  });

  it('/metrics adds up every process: each scrape, whichever worker takes it, counts all lookups', async () => {
    const scrape = async (auth = token) => {
      const res = await request(`${url}/metrics`, { headers: { authorization: `Bearer ${auth}`, connection: 'close' }, agent: noKeepAlive });
      return { status: res.status, lookups: metricOf(res.text, 'outpost_lookups_total'), workers: metricOf(res.text, 'outpost_http_workers'), probes: metricOf(res.text, 'outpost_engine_filter_probes') };
    };
    expect((await request(`${url}/metrics`, { headers: { connection: 'close' }, agent: noKeepAlive })).status).toBe(401);
    const before = await scrape();
    expect(before).toMatchObject({ status: 200, workers: 2 });
    // One connection per request: the 10 lookups land on both workers.
    for (let i = 0; i < 10; i++) expect((await get(V1[i])).status).toBe(200);
    // Four scrapes, on alternating workers (forwarded to the primary), all see the same totals.
    const after = [await scrape(), await scrape(), await scrape(admin), await scrape(admin)];
    for (const a of after) {
      expect(a).toMatchObject({ status: 200, workers: 2 });
      expect(a.lookups - before.lookups).toBe(10);
      expect(a.probes).toBeGreaterThanOrEqual(before.probes + 10);
    }
  });

  it('the hit log routes (forwarded to the primary) first have the workers write their queued hits', async () => {
    // Sighted just now by both workers, read back at once: their writers flush only every second on their own.
    const [seen, fp] = [V1[50], V1[51]]; // not looked up by the tests before
    for (let i = 0; i < 4; i++) expect((await get(seen)).status).toBe(200);
    for (let i = 0; i < 2; i++) expect((await get(fp)).status).toBe(200);
    const hits = await fetch(`${url}/api/v1/hits?top=100000`, { headers: { authorization: `Bearer ${admin}` } });
    expect(hits.status).toBe(200);
    const rows = ((await hits.json()) as { hits: { value: string; hits: number }[] }).hits;
    expect(rows.find((h) => h.value === seen)?.hits).toBe(4);
    const marked = await fetch(`${url}/api/v1/hits/false-positive`, {
      method: 'POST',
      headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
      body: JSON.stringify({ value: fp, reason: 'cluster test' }),
    });
    expect(marked.status, await marked.clone().text()).toBe(201);
    // The override reaches both workers within a second: fp turns benign on each.
    for (let i = 0, benign = 0; benign < 4; i++) {
      if (i > 100) throw new Error(`${fp} never turned benign on both workers`);
      const r = await get(fp);
      benign = r.body.verdict === 'benign' ? benign + 1 : 0;
      if (benign === 0) await new Promise((res) => setTimeout(res, 100));
    }
  });

  it('queues the hits the workers answer for the platform push, which the primary sends', async () => {
    const value = V1[2];
    for (let i = 0; i < 4; i++) expect((await get(value)).status).toBe(200); // both workers (one connection each)
    for (let i = 0; i < 200 && !received.some((b) => b.includes(`"${value}"`)); i++) await new Promise((r) => setTimeout(r, 100));
    expect(received.some((b) => b.includes(`"${value}"`)), `webhook bodies: ${received.join('\n').slice(0, 500)}`).toBe(true);
  }, 60_000);

  it('swaps every worker to a new generation imported by another process, with no failed lookup', async () => {
    expect(V2_ONLY.length).toBeGreaterThan(10);
    const before = await get(V1[1]);
    const startGen = before.body.generation;
    const b = cli(['provider', 'build', '--feed', 'threats', '--key', real.key, '--out', path.join(work, 'out2'), '--category', 'malware', '--version', '2', path.join(DATA, 'ipsum/levels/3.txt'), path.join(DATA, 'threatfox/ips.txt')]);
    expect(b.code, b.stderr).toBe(0);
    v2Package = b.lastLine;
    const imported = cliAsync(['import', b.lastLine], { dataDir: real.dataDir });
    let done: { code: number; stderr: string } | undefined;
    void imported.then((r) => (done = r));
    // Requests are spread over the two workers; 20 answers in a row from the new generation (each finding
    // the new value) mean both swapped.
    let inARow = 0;
    for (let i = 0; inARow < 20; i++) {
      if (i > 5000) throw new Error('the workers never all served the new generation');
      const value = V2_ONLY[i % V2_ONLY.length];
      const r = await get(value);
      expect(r.status).toBe(200);
      const known = await get(V1[i % V1.length]);
      expect(known.status).toBe(200);
      expect(known.body.matches.length, `listed in both versions: ${V1[i % V1.length]}`).toBeGreaterThan(0);
      if (done && r.body.generation > startGen) {
        expect(r.body.matches.map((m) => m.indicator), `new value ${value} after the swap`).toContain(value);
        inARow++;
      } else {
        inARow = 0;
        await new Promise((res) => setTimeout(res, 50));
      }
    }
    expect(done!.code, done!.stderr).toBe(0);
    // Both workers swapped through their loader threads (not the inline fallback); their log lines reach
    // the test through the primary's stderr, so allow them a moment.
    const swapLines = () => followLines(startGen).filter((l) => l.includes('"worker":') && l.includes('"filters":"file"'));
    for (let i = 0; i < 50 && swapLines().length < 2; i++) await new Promise((r) => setTimeout(r, 100));
    const swaps = swapLines();
    expect(swaps.length, followLines(0).join('\n')).toBe(2);
    expect(server.stderr()).not.toMatch(/loader thread failed/);
  }, 180_000);

  /**
   * Asks for `values` in turn until 20 answers in a row (requests spread over both workers) come from a
   * generation after `startGen`, handing each such answer's matched indicators to `check`.
   */
  const untilNewGeneration = async (startGen: number, values: string[], check: (value: string, found: string[]) => void) => {
    let inARow = 0;
    for (let i = 0; inARow < 20; i++) {
      if (i > 5000) throw new Error('the workers never all served the delta generation');
      const value = values[i % values.length];
      const r = await get(value);
      expect(r.status).toBe(200);
      if (r.body.generation > startGen) {
        check(value, r.body.matches.map((m) => m.indicator));
        inARow++;
      } else {
        inARow = 0;
        await new Promise((res) => setTimeout(res, 50));
      }
    }
  };

  let v3Package = '';
  it('after a delta without the previous set (no file from the apply) the primary builds once and both workers swap to its file', async () => {
    expect(v2Package).toBeTruthy();
    const before = await get(V2_ONLY[0]);
    expect(before.body.matches.length).toBeGreaterThan(0);
    const startGen = before.body.generation;
    // v3 drops the threatfox values again: the delta removes them.
    const b = cli(['provider', 'build', '--feed', 'threats', '--key', real.key, '--out', path.join(work, 'out3'), '--category', 'malware', '--version', '3', '--base', v2Package, path.join(DATA, 'ipsum/levels/3.txt')]);
    expect(b.code, b.stderr).toBe(0);
    expect(b.lastLine).toMatch(/delta/);
    v3Package = /full package: (\S+)/.exec(b.stderr)?.[1] ?? '';
    expect(fs.existsSync(v3Package), v3Package).toBe(true);
    // The serving processes hold the set in memory; the apply finds no file to extend.
    const filterDir = path.join(real.dataDir, 'filters');
    for (const f of fs.readdirSync(filterDir)) fs.rmSync(path.join(filterDir, f));
    const imported = await cliAsync(['import', b.lastLine], { dataDir: real.dataDir });
    expect(imported.code, imported.stderr).toBe(0);
    // Both workers answer from the new generation: 20 answers in a row without the removed values.
    await untilNewGeneration(startGen, V2_ONLY, (value, found) => expect(found, `removed value ${value} after the swap`).not.toContain(value));
    // The mechanism: the primary built the filters (nothing was announced, so it did not wait), each worker
    // loaded the primary's file, and no worker built its own.
    const swapLines = () => followLines(startGen).filter((l) => l.includes('"worker":') && l.includes('"filters":"file"'));
    for (let i = 0; i < 50 && swapLines().length < 2; i++) await new Promise((r) => setTimeout(r, 100));
    const lines = followLines(startGen);
    expect(swapLines().length, lines.join('\n')).toBe(2);
    expect(lines.filter((l) => !l.includes('"worker":') && l.includes('"filters":"built"')).length, lines.join('\n')).toBe(1);
    expect(lines.filter((l) => !l.includes('"worker":') && l.includes('waiting for the persisted filters')), lines.join('\n')).toEqual([]);
    expect(lines.filter((l) => l.includes('"worker":') && (l.includes('"filters":"built"') || l.includes('did not come'))), lines.join('\n')).toEqual([]);
  }, 180_000);

  it('after a delta with the previous set the apply extends it: the primary and both workers load its file, nobody builds', async () => {
    expect(v3Package).toBeTruthy();
    const before = await get(V2_ONLY[0]);
    expect(before.body.matches).toEqual([]);
    const startGen = before.body.generation;
    // v4 brings 200 of the threatfox values back: the delta adds them (a few % of the set's size; a larger
    // share would take the filters past their false-positive bound, and the primary would build instead).
    const back = V2_ONLY.slice(0, 200);
    const backFile = path.join(work, 'back.txt');
    fs.writeFileSync(backFile, `${back.join('\n')}\n`);
    const b = cli(['provider', 'build', '--feed', 'threats', '--key', real.key, '--out', path.join(work, 'out4'), '--category', 'malware', '--version', '4', '--base', v3Package, path.join(DATA, 'ipsum/levels/3.txt'), backFile]);
    expect(b.code, b.stderr).toBe(0);
    expect(b.lastLine).toMatch(/delta/);
    const imported = await cliAsync(['import', b.lastLine], { dataDir: real.dataDir });
    expect(imported.code, imported.stderr).toBe(0);
    const gen = startGen + 1;
    expect(fs.existsSync(path.join(real.dataDir, 'filters', `filters-${gen}.bin`))).toBe(true);
    await untilNewGeneration(startGen, back, (value, found) => expect(found, `added value ${value} after the swap`).toContain(value));
    const fileLines = () => followLines(startGen).filter((l) => l.includes('"filters":"file"'));
    for (let i = 0; i < 50 && fileLines().length < 3; i++) await new Promise((r) => setTimeout(r, 100));
    const lines = followLines(startGen);
    expect(fileLines().filter((l) => l.includes('"worker":')).length, lines.join('\n')).toBe(2);
    expect(fileLines().filter((l) => !l.includes('"worker":')).length, lines.join('\n')).toBe(1);
    expect(lines.filter((l) => l.includes('"filters":"built"') || l.includes('did not come')), lines.join('\n')).toEqual([]);
  }, 180_000);
});
