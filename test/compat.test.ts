// VirusTotal-v3-compatible routes over real data: the VirusTotal object shape, and for real listed,
// allowlisted and unlisted values the mapping agrees with the native lookup of the same value.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { COMPAT_BASE, mountCompat, rating, vtUrlId } from '../lookup/compat.ts';
import type { LookupResult } from '../appliance/types.ts';
import { buildFixture, NOW, urlhausUrls, warninglist, type Fixture } from './exports-fixture.ts';
import { startTestServer, type TestServer } from './integrations-fixture.ts';

type Json = Record<string, any>;

describe('VirusTotal v3 compatible endpoint', () => {
  let fx: Fixture;
  let srv: TestServer;
  let key = '';
  let bearer = '';
  const seen: string[] = [];

  beforeAll(async () => {
    fx = buildFixture();
    let engineRef: TestServer['engine'] | undefined;
    // The engine is created by startTestServer; the mount reads it lazily through this proxy object.
    const lazy = { lookup: (v: string) => engineRef!.lookup(v) } as TestServer['engine'];
    srv = await startTestServer(fx.db, [mountCompat(fx.db, lazy, { now: () => NOW, onResult: (r) => seen.push(r.value) })], { now: () => NOW });
    engineRef = srv.engine;
    key = srv.token('lookup');
    bearer = srv.token('lookup');
  });
  afterAll(async () => {
    await srv?.close();
    fx?.close();
  });

  const vt = async (path: string, headers: Record<string, string> = { 'x-apikey': key }) => {
    const r = await fetch(`${srv.url}${COMPAT_BASE}${path}`, { headers });
    return { status: r.status, body: (await r.json()) as Json };
  };
  const native = async (value: string) =>
    (await (await fetch(`${srv.url}/api/v1/lookup?value=${encodeURIComponent(value)}`, { headers: { authorization: `Bearer ${bearer}` } })).json()) as LookupResult;

  /** The mapping invariants between a VirusTotal object and our result for the same value. */
  const agree = (o: Json, r: LookupResult) => {
    const a = o.data.attributes;
    const s = a.last_analysis_stats;
    expect(Object.keys(s).sort()).toEqual(['harmless', 'malicious', 'suspicious', 'timeout', 'undetected']);
    expect(a.outpost.verdict).toBe(r.verdict);
    expect(a.outpost.rating).toBe(rating(r.verdict));
    expect(a.outpost.confidence).toBe(r.confidence);
    expect(s.malicious > 0).toBe(r.verdict === 'malicious');
    expect(s.suspicious > 0).toBe(r.verdict === 'suspicious');
    const feeds = new Set(r.matches.map((m) => m.feed));
    expect(Object.keys(a.last_analysis_results).sort()).toEqual([...feeds].map((f) => `Outpost:${f}`).sort());
    expect(s.malicious + s.suspicious + s.harmless + s.undetected).toBe(feeds.size);
    expect(Math.sign(a.reputation)).toBe(r.verdict === 'malicious' || r.verdict === 'suspicious' ? -1 : r.verdict === 'benign' && r.confidence > 0 ? 1 : 0);
    for (const m of r.matches) if (m.feed_kind !== 'allow' && m.category) expect(a.tags).toContain(m.category);
  };

  it('IP addresses: real listed, allowlisted and unlisted values agree with the native lookup', async () => {
    const ips = [
      ...fx.inserted.get('threatfox')!.filter((x) => x.type === 'ipv4').slice(0, 25).map((x) => x.value),
      ...fx.inserted.get('ipsum')!.slice(0, 25).map((x) => x.value),
      ...warninglist('known-benign/warninglists/public-dns-v4.json').slice(0, 10),
      '203.0.113.77',
    ];
    const verdicts = new Set<string>();
    for (const ip of ips) {
      const { status, body } = await vt(`/ip_addresses/${ip}`);
      expect(status, ip).toBe(200);
      expect(body.data.type).toBe('ip_address');
      expect(body.data.id).toBe(ip);
      expect(body.data.links.self).toBe(`${srv.url}${COMPAT_BASE}/ip_addresses/${ip}`);
      const r = await native(ip);
      agree(body, r);
      verdicts.add(r.verdict);
    }
    expect(verdicts).toEqual(new Set(['malicious', 'suspicious', 'benign', 'unknown']));
  });

  it('domains: listed (lummac2) and allowlisted (tranco) values', async () => {
    const domains = [...fx.inserted.get('lummac2')!.filter((x) => x.type === 'domain').slice(0, 20).map((x) => x.value), ...warninglist('known-benign/warninglists/tranco10k.json').slice(0, 5)];
    for (const d of domains) {
      const { status, body } = await vt(`/domains/${d}`);
      expect(status, d).toBe(200);
      expect(body.data.type).toBe('domain');
      agree(body, await native(d));
    }
    const listed = await vt(`/domains/${fx.inserted.get('lummac2')!.find((x) => x.type === 'domain')!.value}`);
    expect(listed.body.data.attributes.last_analysis_results['Outpost:lummac2']).toMatchObject({ category: 'malicious', method: 'blacklist', engine_name: 'Outpost:lummac2' });
    expect(listed.body.data.attributes.categories['Outpost:lummac2']).toBe('malware');
  });

  it('files: a listed hash by md5/sha1/sha256; an unknown hash is NotFoundError like VirusTotal', async () => {
    for (const t of ['md5', 'sha1', 'sha256'] as const) {
      const h = fx.inserted.get('hashes')!.find((x) => x.type === t)!.value;
      const { status, body } = await vt(`/files/${h.toUpperCase()}`);
      expect(status).toBe(200);
      expect(body.data.type).toBe('file');
      expect(body.data.attributes[t]).toBe(h);
      expect(body.data.attributes.popular_threat_classification.suggested_threat_label).toBe('malware');
      agree(body, await native(h));
    }
    const miss = await vt(`/files/${'0'.repeat(63)}1`);
    expect(miss).toEqual({ status: 404, body: { error: { code: 'NotFoundError', message: expect.any(String) } } });
  });

  it('urls: the base64url identifier of a listed URLhaus URL; unknown and sha256 ids are NotFoundError', async () => {
    const raw = urlhausUrls(5)[2];
    const { status, body } = await vt(`/urls/${vtUrlId(raw)}`);
    expect(status).toBe(200);
    expect(body.data).toMatchObject({ type: 'url', id: vtUrlId(raw) });
    expect(body.data.attributes.url).toBe(raw);
    agree(body, await native(raw));
    expect(body.data.attributes.last_analysis_stats.malicious + body.data.attributes.last_analysis_stats.suspicious).toBeGreaterThan(0);
    expect(seen).toContain(raw); // the result hook saw the hit
    expect((await vt(`/urls/${vtUrlId('http://unlisted.example/x')}`)).status).toBe(404);
    expect((await vt(`/urls/${'ab'.repeat(32)}`)).body.error.code).toBe('NotFoundError');
  });

  it('auth with x-apikey: missing 401, wrong 401, Bearer alone is not VirusTotal; bad values 400', async () => {
    expect((await vt('/ip_addresses/1.2.3.4', {})).body.error.code).toBe('AuthenticationRequiredError');
    const wrong = await vt('/ip_addresses/1.2.3.4', { 'x-apikey': 'op_nope' });
    expect(wrong).toEqual({ status: 401, body: { error: { code: 'WrongCredentialsError', message: 'Wrong API key' } } });
    expect((await vt('/ip_addresses/1.2.3.4', { authorization: `Bearer ${key}` })).status).toBe(401);
    const bad = await vt('/ip_addresses/not-an-ip');
    expect(bad.status).toBe(400);
    expect(bad.body.error.code).toBe('InvalidArgumentError');
    expect((await vt('/domains/198.51.100.1')).status).toBe(400);
    expect((await vt('/files/evil.example')).status).toBe(400);
  });
});
