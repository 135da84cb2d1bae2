// POST /api/v1/lookup with application/x-ndjson (lookup/api.ts streamNdjson) on a real server over a real
// store: every answer line must be exactly JSON.stringify(lookup(value)) for the value the line carries — bare
// text, a JSON string or {"value": …}, escaped or not, CRLF, blank lines, non-ASCII, broken JSON — whether the
// body arrives whole or in odd pieces that split lines and UTF-8 sequences, including pieces without any
// newline. resultJson (the serializer the stream uses) must equal JSON.stringify on every kind of result.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { getRequestListener } from '@hono/node-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../appliance/config.ts';
import { openDb, type DB } from '../appliance/db.ts';
import { createLogger } from '../appliance/log.ts';
import { createToken } from '../appliance/tokens.ts';
import type { LookupResult } from '../appliance/types.ts';
import { createApi } from '../lookup/api.ts';
import { jsonString, LookupEngine, resultJson } from '../lookup/engine.ts';
import { tmpDir } from './helpers.ts';
import { listValues, prepareRealData } from './ops-fixture.ts';

const SOURCES = ['ipsum/levels/3.txt', 'maltrail/malware/lummac2.txt', 'maltrail/malware/emotet.txt', 'eset/nukesped_lazarus/samples.sha256'];

/** What a line means (the documented rule, with JSON.parse): a JSON string, {"value": string}, else the text. */
function lineValue(line: string): string {
  if (line.startsWith('"') || line.startsWith('{')) {
    try {
      const v = JSON.parse(line) as unknown;
      if (typeof v === 'string') return v;
      if (v && typeof v === 'object' && typeof (v as { value?: unknown }).value === 'string') return (v as { value: string }).value;
    } catch {
      /* bare text */
    }
  }
  return line;
}

describe('NDJSON lookups', () => {
  const work = tmpDir('outpost-ndjson-');
  let db: DB;
  let engine: LookupEngine;
  let server: http.Server;
  let port: number;
  let token: string;
  const listed: string[] = [];

  /** Posts `body` (whole, or in pieces of the given sizes, cycled); the response text. */
  function post(body: Buffer, pieces?: number[]): Promise<string> {
    return new Promise((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port, path: '/api/v1/lookup', method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/x-ndjson' } }, (res) => {
        const parts: Buffer[] = [];
        res.on('data', (d: Buffer) => parts.push(d));
        res.on('end', () => resolve(Buffer.concat(parts).toString('utf8')));
        res.on('error', reject);
      });
      req.on('error', reject);
      if (!pieces) return void req.end(body);
      let at = 0;
      let k = 0;
      const next = () => {
        if (at >= body.length) return void req.end();
        const n = pieces[k++ % pieces.length];
        req.write(body.subarray(at, at + n));
        at += n;
        setImmediate(next);
      };
      next();
    });
  }

  beforeAll(async () => {
    const real = prepareRealData(work, SOURCES);
    db = openDb(real.dataDir);
    const now = Date.now() / 1000; // fixed: data_age_s must not move between the stream and the reference
    engine = new LookupEngine(db, { fpRate: 0.001, worker: false, filterDir: null, now: () => now });
    token = createToken(db, 'ndjson', 'lookup').token;
    const app = createApi({ cfg: loadConfig({ rateLimitRps: 0 }, {}), db, engine, log: createLogger('silent') });
    server = http.createServer(getRequestListener(app.fetch));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as AddressInfo).port;
    for (const s of SOURCES) listed.push(...listValues(s).filter((_, i) => i % 3 === 0));
  }, 180_000);

  afterAll(async () => {
    await new Promise<void>((r) => server.close(() => r()));
    db.close();
  });

  it('answers every line form exactly as lookup() answers its value, whole and in odd pieces', async () => {
    const lines: string[] = [];
    const miss = (i: number) => [`${(i * 7919) % 223 + 1}.${i % 256}.${(i * 31) % 256}.${(i * 17) % 256}`, `not-listed-${i}.example.com`, `http://not-listed-${i}.example.org/a/b?c=${i}`, 'ab'.repeat(16)][i % 4];
    for (let i = 0; i < 6000; i++) {
      const v = i % 3 === 0 ? listed[(i * 13) % listed.length] : miss(i);
      const forms = [
        v, JSON.stringify(v), JSON.stringify({ value: v }), `{"value": "${v}"}`, `  ${v}  `, `${v}\r`, '', '   ', '\t', `"${v}`,
        JSON.stringify({ value: v, extra: [1, 2] }), JSON.stringify(`é${v}`), `${v}é中`, '{}', '[1,2]', '{"value": 5}', JSON.stringify({ value: `${v}"x` }),
        `"${v}"  `, ` "${v}"`, `{"value":"${v}","value":"1.2.3.4"}`, '"a\\"b"', '"\\u0031.2.3.4"', `\t${v}`, JSON.stringify(v.toUpperCase()),
        `"${v}\ttab"`, `{"value":"${v}\u0001"}`, '\u00a0', '\ufeff', `${v.replace(/\./g, '[.]')}`, '"', '{"value":"}', '{"value":""}', '""',
      ];
      lines.push(forms[i % forms.length]);
    }
    const text = lines.join('\n') + '\nlast-line-without-newline.example.com';
    const body = Buffer.from(text, 'utf8');
    const values = text.split('\n').map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l)).filter((l) => l.trim() !== '').map(lineValue);
    const expected = values.map((v) => JSON.stringify(engine.lookup(v)) + '\n').join('');
    expect(values.length).toBeGreaterThan(4000);
    expect(expected).toContain('"verdict":"malicious"');

    expect(await post(body)).toBe(expected);
    // Pieces of 1–4 bytes split lines and UTF-8 sequences, and most carry no newline at all.
    const head = body.subarray(0, 3000);
    const headAnswer = await post(head);
    expect(headAnswer.split('\n').length).toBeGreaterThan(50);
    expect(await post(head, [1, 2, 3, 4])).toBe(headAnswer);
    expect(await post(body, [7, 4093, 1, 65_000, 3, 333])).toBe(expected);
  }, 120_000);

  it('a value spread over many pieces without a newline is answered once it is complete', async () => {
    const v = listed[0];
    const body = Buffer.from(`${'  '.repeat(200)}${v}\n5.6.7.8`, 'utf8');
    const want = JSON.stringify(engine.lookup(`${'  '.repeat(200)}${v}`)) + '\n' + JSON.stringify(engine.lookup('5.6.7.8')) + '\n';
    expect(await post(body, [1])).toBe(want);
  }, 60_000);

  it('resultJson is JSON.stringify on misses, hits, invalid values and results with extra fields', () => {
    const vals = [...listed.slice(0, 3000), 'not a value', '', '10.0.0.0/8', '8.8.4.4', 'never-listed.example', 'ÉX.example.com', '"q"'];
    const results: LookupResult[] = engine.lookupMany(vals);
    expect(results.filter((r) => r.matches.length > 0).length).toBeGreaterThan(500);
    for (const r of results) expect(resultJson(r)).toBe(JSON.stringify(r));
    const m = engine.lookup('8.8.4.4');
    const odd: LookupResult[] = [
      { ...m, value: 'a"b\\c\u0001\ud800é' },
      { ...m, normalized: 'x"y' },
      Object.assign({ ...m }, { stale: true, stale_feeds: ['f'] }),
      { ...m, actors: [] },
      { ...m, data_age_s: null },
      { ...m, data_age_s: Number.NaN },
      { ...m, generation: 1.5 },
      { ...m, reasons: ['other'] },
      { ...m, confidence: 1 },
      { type: m.type, value: m.value, normalized: m.normalized, verdict: m.verdict, confidence: 0, matches: [], rule: m.rule, reasons: m.reasons, generation: m.generation, data_age_s: m.data_age_s },
    ];
    for (const r of odd) expect(resultJson(r)).toBe(JSON.stringify(r));
    // Two generations / ages in a row (the cached template tail follows them).
    expect(resultJson({ ...m, generation: 7, data_age_s: 3 })).toBe(JSON.stringify({ ...m, generation: 7, data_age_s: 3 }));
    expect(resultJson(m)).toBe(JSON.stringify(m));
  });

  it('jsonString is JSON.stringify on every UTF-16 code unit, alone and inside a value, and on real values', () => {
    for (let c = 0; c <= 0xffff; c++) {
      const ch = String.fromCharCode(c);
      expect(jsonString(ch)).toBe(JSON.stringify(ch));
      expect(jsonString(`a.${ch}.b`)).toBe(JSON.stringify(`a.${ch}.b`));
    }
    for (const v of [...listed.slice(0, 3000), '', '\ud83d\ude00', '\ud800', 'http://x.example/a?b="c"&d=\\e', 'x\u007f']) {
      expect(jsonString(v)).toBe(JSON.stringify(v));
    }
  });
});
