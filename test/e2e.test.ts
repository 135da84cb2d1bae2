// End to end on real data: provider keygen/build from ../shared/data → trust add → import → serve →
// lookups over HTTP with a token. Known-benign values must never come back malicious.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DATA, cli, every, getJson, metricOf, postJson, readLines, serve, tmpDir, type Served } from './helpers.ts';

const BLOCK_SOURCES = [
  'ipsum/levels/3.txt',
  'maltrail/malware/emotet.txt',
  'maltrail/malware/lummac2.txt',
  'firehol/firehol_level1.netset',
  'urlhaus/urls.csv',
  'signature-base/hash-iocs.txt',
  'eset/nukesped_lazarus/samples.sha256',
].map((f) => path.join(DATA, f));
const ALLOW_SOURCES = fs.readdirSync(path.join(DATA, 'known-benign/warninglists')).map((f) => path.join(DATA, 'known-benign/warninglists', f));

describe('signed package → import → HTTP lookup (real data)', () => {
  const work = tmpDir();
  const dataDir = path.join(work, 'var');
  const keys = path.join(work, 'keys');
  const out = path.join(work, 'out');
  let server: Served;
  let token: string;

  beforeAll(async () => {
    const kg = cli(['provider', 'keygen', '--out', keys]);
    expect(kg.code, kg.stderr).toBe(0);
    expect(fs.statSync(path.join(keys, 'provider.key')).mode & 0o777).toBe(0o600);

    const block = cli(['provider', 'build', '--feed', 'threats', '--key', path.join(keys, 'provider.key'), '--out', out, '--category', 'malware', ...BLOCK_SOURCES]);
    expect(block.code, block.stderr).toBe(0);
    expect(block.lastLine).toMatch(/threats-\d+-full\.tar$/);
    expect(block.stderr).toMatch(/malformed/);
    const allow = cli(['provider', 'build', '--feed', 'known-benign', '--kind', 'allow', '--key', path.join(keys, 'provider.key'), '--out', out, ...ALLOW_SOURCES]);
    expect(allow.code, allow.stderr).toBe(0);

    expect(cli(['trust', 'add', path.join(keys, 'provider.pub')], { dataDir }).code).toBe(0);
    for (const pkg of [block.lastLine, allow.lastLine]) {
      const r = cli(['import', pkg], { dataDir });
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.lastLine)).toMatchObject({ ok: true });
    }
    const t = cli(['token', 'create', '--name', 'e2e'], { dataDir });
    expect(t.code, t.stderr).toBe(0);
    token = t.lastLine;
    expect(token).toMatch(/^op_/);
    server = await serve(dataDir, ['--no-demo']);
  });

  afterAll(async () => {
    await server?.stop();
    fs.rmSync(work, { recursive: true, force: true });
  });

  it('healthz answers without a token; the API refuses requests without a valid one', async () => {
    const h = await getJson(`${server.url}/healthz`);
    expect(h.status).toBe(200);
    expect(h.body.status).toBe('ok');
    expect(h.body.generation).toBe(2);
    const none = await getJson(`${server.url}/api/v1/lookup?value=1.2.3.4`);
    expect(none.status).toBe(401);
    expect(none.body.error.code).toBe('E_AUTH');
    const wrong = await getJson(`${server.url}/api/v1/lookup?value=1.2.3.4`, 'op_wrong');
    expect(wrong.status).toBe(401);
  });

  it('finds sampled listed IPs, domains, URLs and hashes', async () => {
    const ips = every(readLines(path.join(DATA, 'ipsum/levels/3.txt')).filter(Boolean), 97).slice(0, 100);
    const domains = every(
      readLines(path.join(DATA, 'maltrail/malware/lummac2.txt')).filter((l) => l && !l.startsWith('#') && !l.includes('/') && !/^\d+\.\d+\.\d+\.\d+/.test(l)),
      151,
    ).slice(0, 60);
    const urls = every(readLines(path.join(DATA, 'urlhaus/urls.csv')).slice(1).filter(Boolean), 211)
      .map((l) => /^(?:"[^"]*"|[^,]*),(.*),[^,]*$/.exec(l)![1])
      .slice(0, 50);
    const hashes = every(readLines(path.join(DATA, 'eset/nukesped_lazarus/samples.sha256')).filter(Boolean), 17).slice(0, 30);
    const values = [...ips, ...domains, ...urls, ...hashes];
    const { status, body } = await postJson(`${server.url}/api/v1/lookup`, { values }, token);
    expect(status).toBe(200);
    expect(body.results).toHaveLength(values.length);
    body.results.forEach((r: any, i: number) => {
      expect(r.value).toBe(values[i]);
      expect(r.matches.length, `${values[i]} should be found`).toBeGreaterThan(0);
      expect(['malicious', 'suspicious', 'benign']).toContain(r.verdict);
      for (const m of r.matches) expect(m).toHaveProperty('feed');
    });
    const urlResults = body.results.slice(ips.length + domains.length, ips.length + domains.length + urls.length);
    for (const r of urlResults) {
      expect(r.type).toBe('url');
      expect(r.normalized).toMatch(/^https?:\/\//);
    }
  });

  it('a single GET returns the contract shape', async () => {
    const ip = readLines(path.join(DATA, 'ipsum/levels/3.txt'))[0];
    const { status, body } = await getJson(`${server.url}/api/v1/lookup?value=${encodeURIComponent(ip)}`, token);
    expect(status).toBe(200);
    expect(body).toMatchObject({ value: ip, type: 'ipv4', normalized: ip, generation: 2 });
    expect(typeof body.confidence).toBe('number');
    expect(typeof body.data_age_s).toBe('number');
    expect(body.matches[0]).toMatchObject({ feed: 'threats', indicator: ip, kind: 'exact' });
  });

  it('never reports known-benign warninglist values as malicious', async () => {
    const list = (f: string) => JSON.parse(fs.readFileSync(path.join(DATA, 'known-benign/warninglists', f), 'utf8')).list as string[];
    const values = [...every(list('tranco10k.json'), 20), ...every(list('cisco_top10k.json'), 20), ...every(list('public-dns-v4.json'), 120), ...list('sinkholes.json')];
    for (let i = 0; i < values.length; i += 1000) {
      const { body } = await postJson(`${server.url}/api/v1/lookup`, { values: values.slice(i, i + 1000) }, token);
      const bad = body.results.filter((r: any) => r.verdict === 'malicious');
      expect(bad.map((r: any) => r.value)).toEqual([]);
    }
  });

  it('unlisted values are unknown and bad input is a 4xx with a stable code', async () => {
    const miss = await getJson(`${server.url}/api/v1/lookup?value=outpost-unlisted-value.org`, token);
    expect(miss.body).toMatchObject({ verdict: 'unknown', matches: [] });
    const invalid = await getJson(`${server.url}/api/v1/lookup?value=${encodeURIComponent('010.1.1.1')}`, token);
    expect(invalid.status).toBe(200);
    expect(invalid.body.type).toBe('invalid');
    expect(invalid.body.error).toMatch(/octal|leading zero/i);
    const noValue = await getJson(`${server.url}/api/v1/lookup`, token);
    expect(noValue.status).toBe(400);
    expect(noValue.body.error.code).toBe('E_INPUT');
    const notJson = await fetch(`${server.url}/api/v1/lookup`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: '{"values":' });
    expect(notJson.status).toBe(400);
    expect((await notJson.json()).error.code).toBe('E_INPUT');
  });

  it('streams NDJSON batches in order', async () => {
    const ips = readLines(path.join(DATA, 'ipsum/levels/3.txt')).filter(Boolean).slice(0, 5000);
    const body = ips.map((v, i) => (i % 2 ? JSON.stringify(v) : JSON.stringify({ value: v }))).join('\n') + '\n';
    const res = await fetch(`${server.url}/api/v1/lookup`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/x-ndjson' }, body });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/ndjson/);
    const lines = (await res.text()).trim().split('\n').map((l) => JSON.parse(l));
    expect(lines).toHaveLength(ips.length);
    lines.forEach((r, i) => expect(r.value).toBe(ips[i]));
    expect(lines.filter((r) => r.matches.length > 0).length).toBe(ips.length);
  });

  it('/metrics needs a token of any scope and counts the lookups answered so far', async () => {
    const none = await fetch(`${server.url}/metrics`);
    expect(none.status).toBe(401);
    expect((await none.json()).error.code).toBe('E_AUTH');
    expect((await fetch(`${server.url}/metrics`, { headers: { authorization: 'Bearer op_wrong' } })).status).toBe(401);
    const scrape = async () => {
      const res = await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${token}` } });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
      return res.text();
    };
    const before = await scrape();
    const ip = readLines(path.join(DATA, 'ipsum/levels/3.txt'))[5];
    expect((await getJson(`${server.url}/api/v1/lookup?value=${ip}`, token)).body.matches.length).toBeGreaterThan(0);
    expect((await postJson(`${server.url}/api/v1/lookup`, { values: [ip, '192.0.2.77'] }, token)).status).toBe(200);
    const after = await scrape();
    expect(metricOf(after, 'outpost_lookups_total') - metricOf(before, 'outpost_lookups_total')).toBe(3);
    expect(metricOf(after, 'outpost_lookup_request_seconds_count') - metricOf(before, 'outpost_lookup_request_seconds_count')).toBe(2);
    expect(metricOf(after, 'outpost_engine_confirmed_matches')).toBeGreaterThan(metricOf(before, 'outpost_engine_confirmed_matches'));
    expect(metricOf(after, 'outpost_engine_filter_fp_rate_target')).toBe(0.001);
    expect(metricOf(after, 'outpost_engine_filter_fp_rate_observed')).toBeGreaterThanOrEqual(0);
    expect(metricOf(after, 'outpost_engine_filter_fp_rate_observed')).toBeLessThan(1);
    expect(after).toMatch(/^# TYPE outpost_engine_filter_probes counter$/m);
    expect(after).toMatch(/^outpost_feed_indicators\{feed="threats"\} [1-9]\d*$/m);
    expect(after).not.toMatch(/outpost_http_workers/); // one process: nothing to add up
  });

  it('the CLI lookup and status agree with the server', () => {
    const ip = readLines(path.join(DATA, 'ipsum/levels/3.txt'))[3];
    const r = cli(['lookup', ip, 'hxxp://example[.]invalid/x'], { dataDir });
    expect(r.code, r.stderr).toBe(0);
    const [a, b] = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(a.matches.length).toBeGreaterThan(0);
    expect(b.value).toBe('hxxp://example[.]invalid/x');
    const s = cli(['status', '--json'], { dataDir });
    expect(s.code).toBe(0);
    const st = JSON.parse(s.lastLine);
    expect(st.feeds.map((f: any) => f.name).sort()).toEqual(['known-benign', 'threats']);
    expect(st.generation).toBe(2);
  });
});
