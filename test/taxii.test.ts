// TAXII 2.1 server against a client written from the OASIS TAXII 2.1 specification: every response is
// checked for the spec's media type, resource shapes, envelope rules (more ⇒ next, X-TAXII-Date-Added
// headers equal the first/last date_added of the page) before its content is used. Whole real feeds
// are paginated and compared with the STIX export of the same store.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exportFormat } from '../lookup/exports/index.ts';
import { collectionId, mountTaxii, TAXII_MEDIA_TYPE } from '../lookup/taxii.ts';
import { buildFixture, collect, NOW, type Fixture } from './exports-fixture.ts';
import { startTestServer, type TestServer } from './integrations-fixture.ts';

// ---- the spec client ----
type Json = Record<string, unknown>;
const TS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;

class SpecClient {
  constructor(private readonly auth: string) {}

  async raw(url: string, headers: Record<string, string> = {}): Promise<Response> {
    return fetch(url, { headers: { accept: TAXII_MEDIA_TYPE, authorization: this.auth, ...headers } });
  }

  /** GET a TAXII resource: 200 and exactly the TAXII 2.1 media type (section 1.6.8.1). */
  async get(url: string): Promise<{ body: Json; headers: Headers }> {
    const r = await this.raw(url);
    const text = await r.text();
    if (r.status !== 200) throw new Error(`${url}: HTTP ${r.status} ${text}`);
    expect(r.headers.get('content-type')!.replace(/\s/g, '')).toBe(TAXII_MEDIA_TYPE);
    return { body: JSON.parse(text) as Json, headers: r.headers };
  }

  async discovery(url: string) {
    const { body } = await this.get(url);
    expect(typeof body.title).toBe('string');
    expect(Array.isArray(body.api_roots)).toBe(true);
    if (body.default !== undefined) expect(body.api_roots).toContain(body.default);
    return body as { title: string; api_roots: string[]; default?: string };
  }

  async apiRoot(url: string) {
    const { body } = await this.get(url);
    expect(typeof body.title).toBe('string');
    expect(body.versions).toContain(TAXII_MEDIA_TYPE);
    expect(Number.isInteger(body.max_content_length)).toBe(true);
    return body;
  }

  async collections(rootUrl: string) {
    const { body } = await this.get(`${rootUrl}collections/`);
    const list = (body.collections ?? []) as Json[];
    for (const c of list) {
      expect(typeof c.id).toBe('string');
      expect(typeof c.title).toBe('string');
      expect(typeof c.can_read).toBe('boolean');
      expect(typeof c.can_write).toBe('boolean');
    }
    return list as Array<{ id: string; title: string; can_read: boolean; can_write: boolean; media_types: string[] }>;
  }

  /** One page of objects or manifest; validates the envelope and the date headers. */
  async page(url: string, kind: 'objects' | 'manifest') {
    const { body, headers } = await this.get(url);
    const objects = (body.objects ?? []) as Json[];
    if (body.more === true) expect(typeof body.next).toBe('string');
    if (objects.length) {
      const first = headers.get('x-taxii-date-added-first');
      const last = headers.get('x-taxii-date-added-last');
      expect(first).toMatch(TS);
      expect(last).toMatch(TS);
      if (kind === 'manifest') {
        expect(first).toBe(objects[0].date_added);
        expect(last).toBe(objects[objects.length - 1].date_added);
        for (const m of objects) {
          expect(m.id).toMatch(/^[a-z0-9-]+--[0-9a-f-]{36}$/);
          expect(m.date_added).toMatch(TS);
          expect(m.version).toMatch(TS);
          expect(m.media_type).toBe('application/stix+json;version=2.1');
        }
      }
    } else {
      expect(body.more ?? false).toBe(false);
    }
    return { objects, more: body.more === true, next: body.next as string | undefined, first: headers.get('x-taxii-date-added-first') };
  }

  /** Follows `next` until more is false (section 3.4); returns every object and the number of requests. */
  async all(base: string, kind: 'objects' | 'manifest', params: Record<string, string> = {}) {
    const out: Json[] = [];
    let next: string | undefined;
    let requests = 0;
    for (;;) {
      const q = new URLSearchParams(params);
      if (next) q.set('next', next);
      const p = await this.page(`${base}${kind}/?${q}`, kind);
      requests++;
      out.push(...p.objects);
      if (!p.more) break;
      next = p.next;
    }
    return { objects: out, requests };
  }
}

describe('TAXII 2.1 server', () => {
  let fx: Fixture;
  let srv: TestServer;
  let client: SpecClient;
  let rootUrl = '';
  let bundle: Json[] = [];

  beforeAll(async () => {
    fx = buildFixture();
    srv = await startTestServer(fx.db, [mountTaxii(fx.db, { now: () => NOW, maxPage: 500 })], { now: () => NOW });
    client = new SpecClient(`Bearer ${srv.token('export')}`);
    bundle = (JSON.parse(collect(exportFormat(fx.db, 'stix', { now: NOW }))) as { objects: Json[] }).objects;
  });
  afterAll(async () => {
    await srv?.close();
    fx?.close();
  });

  it('discovery → API root → collections, one per block feed, read-only, stable ids', async () => {
    const d = await client.discovery(`${srv.url}/taxii2/`);
    expect(d.api_roots).toHaveLength(1);
    rootUrl = d.api_roots[0];
    expect(rootUrl.startsWith(srv.url)).toBe(true);
    await client.apiRoot(rootUrl);
    const cols = await client.collections(rootUrl);
    const blockFeeds = (fx.db.prepare(`SELECT name FROM feeds WHERE kind = 'block' ORDER BY name`).all() as { name: string }[]).map((r) => r.name);
    expect(cols.map((c) => c.title).sort()).toEqual(blockFeeds);
    for (const c of cols) {
      expect(c).toMatchObject({ can_read: true, can_write: false, media_types: ['application/stix+json;version=2.1'] });
      expect(c.id).toBe(collectionId(c.title));
      const one = await client.get(`${rootUrl}collections/${c.id}/`);
      expect(one.body).toEqual(c);
    }
  });

  for (const feed of ['lummac2', 'firehol', 'hashes']) {
    it(`paginates the whole ${feed} feed and gets exactly its indicators from the STIX export`, async () => {
      const base = `${rootUrl}collections/${collectionId(feed)}/`;
      const { objects, requests } = await client.all(base, 'objects', { limit: '37' });
      expect(requests).toBeGreaterThan(3);
      const ids = objects.map((o) => o.id as string);
      expect(new Set(ids).size).toBe(ids.length); // no object twice across pages
      expect(objects[0].type).toBe('identity');
      const indicators = objects.filter((o) => o.type === 'indicator');
      // The same objects, byte for byte, as the STIX export holds for values this feed lists.
      const expected = bundle.filter((o) => o.type === 'indicator' && (o.x_outpost_feeds as string[]).includes(feed));
      const byId = (a: Json[]) => new Map(a.map((o) => [o.id as string, o]));
      expect(byId(indicators)).toEqual(byId(expected));
      // And against the feed's raw content: every served value is one the feed lists; what is left out
      // is exactly what the shared export rules leave out (allowlists, internal address space).
      const listed = new Set(fx.inserted.get(feed)!.map((r) => r.value));
      const served = new Set(indicators.map((o) => o.name as string));
      for (const v of served) expect(listed.has(v)).toBe(true);
      const inBundle = new Set(bundle.map((o) => o.name as string));
      for (const v of listed) expect(served.has(v)).toBe(inBundle.has(v));
      if (feed === 'firehol') expect(served.size).toBeLessThan(listed.size); // 10.0.0.0/8 and friends stay out
      // The manifest lists the same ids, in the same order, with the objects' modified as version.
      const man = await client.all(base, 'manifest', { limit: '101' });
      expect(man.objects.map((m) => m.id)).toEqual(ids);
      expect(man.objects.map((m) => m.version)).toEqual(objects.map((o) => o.modified));
    });
  }

  it('added_after: objects are dated by the apply of the feed content', async () => {
    const base = `${rootUrl}collections/${collectionId('threatfox')}/objects/`;
    const applied = '2026-09-01T00:00:00.000Z';
    const before = await client.page(`${base}?added_after=2026-08-31T23:59:59.999Z&limit=5`, 'objects');
    expect(before.objects).toHaveLength(5);
    expect(before.first).toBe(applied);
    const after = await client.get(`${base}?added_after=${applied}`);
    expect(after.body).toEqual({});
    expect(after.headers.get('x-taxii-date-added-first')).toBeNull();
  });

  it('match[type], match[id], match[version], match[spec_version]', async () => {
    const base = `${rootUrl}collections/${collectionId('c2-iocs')}/`;
    const all = (await client.all(base, 'objects')).objects;
    const idOnly = await client.page(`${base}objects/?match[type]=identity`, 'objects');
    expect(idOnly.objects.map((o) => o.type)).toEqual(['identity']);
    const ind = (await client.all(base, 'objects', { 'match[type]': 'indicator', limit: '50' })).objects;
    expect(ind.length).toBe(all.length - 1);
    const pick = [ind[3], ind[ind.length - 2]];
    const byId = await client.page(`${base}objects/?match[id]=${pick.map((o) => o.id).join(',')}`, 'objects');
    expect(byId.objects).toEqual(pick);
    const v = await client.page(`${base}objects/?match[id]=${pick[0].id}&match[version]=${pick[0].modified}`, 'objects');
    expect(v.objects).toEqual([pick[0]]);
    const wrongV = await client.get(`${base}objects/?match[id]=${pick[0].id}&match[version]=2001-01-01T00:00:00.000Z`);
    expect(wrongV.body).toEqual({});
    const spec20 = await client.get(`${base}objects/?match[spec_version]=2.0`);
    expect(spec20.body).toEqual({});
    const one = await client.get(`${base}objects/${pick[1].id}/`);
    expect((one.body.objects as Json[])[0]).toEqual(pick[1]);
    const versions = await client.get(`${base}objects/${pick[1].id}/versions/`);
    expect(versions.body).toEqual({ more: false, versions: [pick[1].modified] });
  });

  it('auth: Bearer and HTTP Basic with scope export; 401 without, 403 for a lookup token', async () => {
    const url = `${srv.url}/taxii2/`;
    const none = await fetch(url, { headers: { accept: TAXII_MEDIA_TYPE } });
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toContain('Basic');
    const err = (await none.json()) as Json;
    expect(err).toMatchObject({ http_status: '401', title: 'Unauthorized' });
    expect((await new SpecClient('Bearer op_wrong').raw(url)).status).toBe(401);
    expect((await new SpecClient(`Bearer ${srv.token('lookup')}`).raw(url)).status).toBe(403);
    const basic = `Basic ${Buffer.from(`taxii:${srv.token('export')}`).toString('base64')}`;
    expect((await new SpecClient(basic).get(url)).body.api_roots).toHaveLength(1);
    expect((await new SpecClient(`Basic ${Buffer.from('taxii:nope').toString('base64')}`).raw(url)).status).toBe(401);
  });

  it('406 for a media type other than TAXII 2.1; 404 unknown collection; 400 bad filters; 405 writes', async () => {
    for (const accept of ['application/json', 'application/taxii+json;version=2.0', 'application/stix+json;version=2.1']) {
      const r = await client.raw(`${rootUrl}collections/`, { accept });
      expect(r.status).toBe(406);
      expect(r.headers.get('content-type')).toBe(TAXII_MEDIA_TYPE);
    }
    expect((await client.raw(`${rootUrl}collections/`, { accept: 'application/taxii+json' })).status).toBe(200);
    const missing = await client.raw(`${rootUrl}collections/${collectionId('no-such-feed')}/objects/`);
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as Json).http_status).toBe('404');
    const allowFeed = await client.raw(`${rootUrl}collections/${collectionId('tranco')}/objects/`);
    expect(allowFeed.status).toBe(404); // allowlists are not published as indicators
    const base = `${rootUrl}collections/${collectionId('urlhaus')}/objects/`;
    for (const q of ['limit=0', 'limit=-3', 'limit=ten', 'added_after=yesterday', 'next=garbage', 'match[version]=soon']) {
      const r = await client.raw(`${base}?${q}`);
      expect(r.status, q).toBe(400);
    }
    const post = await fetch(base, { method: 'POST', headers: { authorization: (client as unknown as { auth: string }).auth, 'content-type': TAXII_MEDIA_TYPE }, body: '{}' });
    expect(post.status).toBe(405);
  });

  it('a limit above the server maximum is lowered, and more/next still cover the rest', async () => {
    const base = `${rootUrl}collections/${collectionId('lummac2')}/`;
    const first = await client.page(`${base}objects/?limit=100000`, 'objects');
    expect(first.objects).toHaveLength(500);
    expect(first.more).toBe(true);
    const rest = await client.all(base, 'objects', { limit: '100000' });
    expect(rest.objects.length).toBeGreaterThan(500);
  });
});
