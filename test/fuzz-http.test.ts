// HTTP fuzzer against a real server on real data: ≥ 10,000 seeded, reproducible requests (bodies, query
// strings, headers, NDJSON streams with invalid UTF-8, huge numbers, deep JSON, __proto__/constructor keys,
// control characters, 1 MB values, wrong content types and methods) plus raw protocol garbage on sockets.
// Asserts: no 5xx, no crash, every 4xx (and every NDJSON error line) carries a code from the one catalog,
// and afterwards the server still answers a known lookup correctly. Reproduce with FUZZ_SEED=<seed>;
// FUZZ_REQUESTS=<n> changes the count, FUZZ_PROFILE=1 prints the slowest requests.
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ERRORS } from '../appliance/errors.ts';
import { serve, tmpDir, type Served } from './helpers.ts';
import { bearer, createToken, listValues, prepareRealData, request, type RawResponse } from './ops-fixture.ts';

const SEED = Number(process.env.FUZZ_SEED ?? 20261122);
const REQUESTS = Number(process.env.FUZZ_REQUESTS ?? 10_000);
const RAW = 300;
const CONCURRENCY = 32;
const CODES = new Set(Object.keys(ERRORS));
const TYPES = new Set(['ipv4', 'ipv6', 'domain', 'url', 'md5', 'sha1', 'sha256', 'email', 'invalid']);

// Real dirty lines (comments, ip:port, CSV rows, defanged text) as seeds next to generated strings.
const REAL = [
  ...listValues('maltrail/malware/emotet.txt').slice(0, 300),
  ...fs.readFileSync(new URL('../../shared/data/urlhaus/urls.csv', import.meta.url), 'utf8').split('\n').slice(0, 200),
  ...fs.readFileSync(new URL('../../shared/data/signature-base/hash-iocs.txt', import.meta.url), 'utf8').split('\n').slice(0, 200),
  ...fs.readFileSync(new URL('../../shared/data/firehol/firehol_level1.netset', import.meta.url), 'utf8').split('\n').slice(0, 100),
];

interface Spec {
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: Buffer;
}

const hostile = fc.constantFrom(
  '__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', '__defineGetter__',
  '1e999999', '-0', '123456789012345678901234567890123456789', 'NaN', 'Infinity', '0x7fffffff',
  'hxxp://evil[.]example/a', 'evil[.]example', '1.2.3.4/33', '::ffff:1.2.3.4', '[::1]:80', '0177.0.0.1', '4294967295',
  'http://user:pass@host/', 'xn--', '.', '..', '', ' ', '\u0000', '\u202e', '\ud800', '\uffff', 'a\r\nb', '%00', '%',
);
const value: fc.Arbitrary<string> = fc.oneof(
  { arbitrary: fc.constantFrom(...REAL), weight: 4 },
  { arbitrary: hostile, weight: 3 },
  { arbitrary: fc.string({ maxLength: 80 }), weight: 3 },
  { arbitrary: fc.string({ unit: 'binary', maxLength: 80 }), weight: 3 },
  { arbitrary: fc.string({ unit: fc.constantFrom('\u0000', '\u0001', '\u001b', '\u007f', '\t', '\r', '\n', '.', ':', '/', '[', ']'), maxLength: 40 }), weight: 2 },
);
/** Values as they come, now and then one far over every sane length. */
const anyValue: fc.Arbitrary<string> = fc.oneof(
  { arbitrary: value, weight: 30 },
  { arbitrary: fc.integer({ min: 1_000, max: 70_000 }).map((n) => 'a'.repeat(n) + '.example'), weight: 1 },
);

/** Deep JSON, prototype keys, huge numbers, invalid UTF-8, truncations: bytes, not just strings. */
const jsonBody: fc.Arbitrary<Buffer> = fc.oneof(
  { arbitrary: fc.array(anyValue, { maxLength: 30 }).map((values) => Buffer.from(JSON.stringify({ values }))), weight: 12 },
  { arbitrary: fc.jsonValue({ maxDepth: 4 }).map((v) => Buffer.from(JSON.stringify(v) ?? 'null')), weight: 3 },
  { arbitrary: fc.integer({ min: 1, max: 200_000 }).map((n) => Buffer.from('['.repeat(n) + ']'.repeat(n))), weight: 1 },
  { arbitrary: fc.integer({ min: 1, max: 50_000 }).map((n) => Buffer.from('{"values":'.repeat(n) + '[]' + '}'.repeat(n))), weight: 1 },
  {
    arbitrary: fc.constantFrom(
      '{"__proto__":{"values":["1.2.3.4"]}}', '{"values":["1.2.3.4"],"__proto__":{"isAdmin":true,"scope":"admin"}}',
      '{"constructor":{"prototype":{"values":["x"]}}}', '{"values":{"length":1,"0":"1.2.3.4"}}', '{"values":[1e999999,-1e-999999,123456789012345678901234567890]}',
      '{"values":[null,true,{},[]]}', '{"values":"1.2.3.4"}', '{"values":["a"]', '', 'null', 'true', '"x"', '[]', '{}', '\u0000', '{"values":[]}garbage',
    ).map((s) => Buffer.from(s)),
    weight: 3,
  },
  { arbitrary: fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.concat([Buffer.from('{"values":["'), Buffer.from(b), Buffer.from('"]}')])), weight: 2 },
  { arbitrary: fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)), weight: 1 },
  { arbitrary: fc.constantFrom('x', '1.2.3.4', 'a.', '\u0000').map((c) => Buffer.from(JSON.stringify({ values: [c.repeat(Math.ceil((1024 * 1024) / c.length))] }))), weight: 1 },
);

const ndjsonBody: fc.Arbitrary<Buffer> = fc
  .array(
    fc.oneof(
      { arbitrary: value.map((v) => Buffer.from(v.replace(/\n/g, ' '))), weight: 5 },
      { arbitrary: value.map((v) => Buffer.from(JSON.stringify({ value: v }))), weight: 3 },
      { arbitrary: fc.constantFrom('{"__proto__":{"value":"1.2.3.4"}}', '{"value":1e999999}', '{"value":{"value":"x"}}', '"unterminated', '[1,2]', '{', '\r').map((s) => Buffer.from(s)), weight: 2 },
      { arbitrary: fc.uint8Array({ maxLength: 100 }).map((b) => Buffer.from(b.map((x) => (x === 10 ? 32 : x)))), weight: 2 },
    ),
    { maxLength: 40 },
  )
  .chain((lines) =>
    fc.record({
      sep: fc.constantFrom('\n', '\r\n'),
      // Rarely: one line of up to 1 MB somewhere in the stream (over the 64 KiB line cap, or just under it).
      huge: fc.option(fc.record({ at: fc.nat(), n: fc.integer({ min: 60_000, max: 1024 * 1024 }) }), { freq: 25 }),
    }).map(({ sep, huge }) => {
      const all = [...lines];
      if (huge) all.splice(huge.at % (all.length + 1), 0, Buffer.from('b'.repeat(huge.n)));
      return Buffer.concat(all.flatMap((l) => [l, Buffer.from(sep)]));
    }),
  );

/** Query strings: valid encodings, raw invalid UTF-8 escapes, broken escapes, repeats. */
const query: fc.Arbitrary<string> = fc.oneof(
  { arbitrary: anyValue.map((v) => `?value=${encodeURIComponent(v.replace(/[\ud800-\udfff]/g, '?'))}`), weight: 6 },
  { arbitrary: fc.uint8Array({ maxLength: 40 }).map((b) => `?value=${[...b].map((x) => `%${x.toString(16).padStart(2, '0')}`).join('')}`), weight: 3 },
  { arbitrary: fc.constantFrom('', '?', '?value', '?value=', '?value=%', '?value=%G1', '?value=%ff%fe', '?value=a&value=b', '?VALUE=1.2.3.4', '?value[]=x', '?__proto__=x', '?value=%00'), weight: 2 },
  { arbitrary: fc.string({ unit: fc.constantFrom(...'abc=&%?#+;/:'.split('')), maxLength: 30 }).map((s) => `?${s}`), weight: 1 },
);

const headerValue = fc.string({ unit: fc.integer({ min: 0x20, max: 0xff }).filter((c) => c !== 0x7f).map((c) => String.fromCharCode(c)), maxLength: 60 });

function specs(tokens: { lookup: string; export: string; admin: string }): fc.Arbitrary<Spec> {
  const auth = fc.oneof(
    { arbitrary: fc.constantFrom(tokens.lookup, tokens.export, tokens.admin).map((t) => `Bearer ${t}`), weight: 12 },
    { arbitrary: fc.constantFrom('', 'Bearer', 'Bearer ', 'bearer x', `Bearer ${tokens.lookup}x`, `Bearer  ${tokens.lookup}`, 'Basic YWRtaW46YWRtaW4=', `Bearer ${'A'.repeat(5000)}`), weight: 2 },
    { arbitrary: headerValue.map((v) => `Bearer ${v}`), weight: 1 },
  );
  const ctype = fc.oneof(
    { arbitrary: fc.constantFrom('application/json', 'application/x-ndjson'), weight: 8 },
    { arbitrary: fc.constantFrom('', 'text/plain', 'application/json; charset=latin1', 'application/x-ndjson; charset=utf-16', 'multipart/form-data; boundary=x', 'application/x-www-form-urlencoded', 'application/JSON', 'application/jsonx'), weight: 2 },
    { arbitrary: headerValue, weight: 1 },
  );
  const apiPath = fc.oneof(
    { arbitrary: fc.constant('/api/v1/lookup'), weight: 12 },
    { arbitrary: fc.constantFrom('/api/v1/export/csv', '/api/v1/export/stix', '/api/v1/export/../../etc/passwd', '/api/v1/export/%2e%2e%2fetc', '/api/v1/lookup/', '/api//v1/lookup', '/API/v1/lookup', '/api/v1/lookup%00', '/api/v2/lookup', '/api', '/api/', '/healthz', '/metrics', '/api/v1/overrides', '/api/v1/hits'), weight: 3 },
    { arbitrary: fc.string({ unit: fc.constantFrom(...'abcxyz-_.%/~0123456789'.split('')), maxLength: 30 }).map((s) => `/api/v1/${s}`), weight: 1 },
  );
  const method = fc.oneof({ arbitrary: fc.constantFrom('GET', 'POST'), weight: 10 }, { arbitrary: fc.constantFrom('PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD', 'TRACE'), weight: 1 });
  const extra = fc.dictionary(fc.constantFrom('x-fuzz', 'accept', 'accept-encoding', 'x-forwarded-for', 'x-forwarded-proto', 'user-agent', 'origin', 'cookie', 'range', 'if-none-match'), headerValue, { maxKeys: 3 });
  return fc.record({ method, path: apiPath, query, auth, ctype, extra, json: jsonBody, ndjson: ndjsonBody }).map((r) => {
    const headers: Record<string, string> = { ...r.extra };
    if (r.auth) headers.authorization = r.auth;
    let body: Buffer | undefined;
    if (r.method !== 'GET' && r.method !== 'HEAD') {
      if (r.ctype) headers['content-type'] = r.ctype;
      body = r.ctype.startsWith('application/x-ndjson') ? r.ndjson : r.json;
    }
    const path = r.method === 'GET' || r.path.includes('?') ? r.path + r.query : r.path;
    return { method: r.method, path, headers, body };
  });
}

/** Raw bytes on a fresh socket: broken request lines, control characters in headers, smuggling shapes. */
const raw: fc.Arbitrary<Buffer> = fc.oneof(
  fc.uint8Array({ minLength: 1, maxLength: 400 }).map((b) => Buffer.from(b)),
  fc.uint8Array({ maxLength: 60 }).map((b) => Buffer.concat([Buffer.from('GET /api/v1/lookup?value=1.2.3.4 HTTP/1.1\r\nHost: x\r\nX-A: '), Buffer.from(b), Buffer.from('\r\n\r\n')])),
  fc.constantFrom(
    'GET / HTTP/9.9\r\n\r\n', 'GET\r\n\r\n', ' / HTTP/1.1\r\n\r\n', 'GET /\u0000 HTTP/1.1\r\nHost: x\r\n\r\n',
    'POST /api/v1/lookup HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
    'POST /api/v1/lookup HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nabc\r\n0\r\n\r\n',
    'POST /api/v1/lookup HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n', 'POST /api/v1/lookup HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab',
    `GET /${'a'.repeat(100_000)} HTTP/1.1\r\nHost: x\r\n\r\n`, `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'b'.repeat(70_000)}\r\n\r\n`,
    'GET /healthz HTTP/1.1\r\nHost: x\r\n Folded: yes\r\n\r\n', 'GET /healthz HTTP/1.0\r\n\r\n',
  ).map((s) => Buffer.from(s, 'latin1')),
);

function sendRaw(port: number, bytes: Buffer): Promise<string> {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    let got = '';
    const done = () => {
      clearTimeout(t);
      sock.destroy();
      resolve(got);
    };
    const t = setTimeout(done, 1000);
    sock.on('connect', () => sock.end(bytes));
    sock.on('data', (d) => (got += d.toString('latin1')));
    sock.on('error', done);
    sock.on('close', done);
  });
}

/** Protocol-level refusals carry a catalog code too (answerClientError in lookup/limits.ts). */
function rawProblem(answer: string): string | null {
  const m = /^HTTP\/1\.[01] (4\d\d)[^]*?\r\ncontent-length: (\d+)[^]*?\r\n\r\n/i.exec(answer);
  if (!m) return null;
  const body = answer.slice(m[0].length, m[0].length + Number(m[2]));
  try {
    const code = JSON.parse(body).error.code;
    return CODES.has(code) ? null : `${m[1]} with unknown code ${code}`;
  } catch {
    return `${m[1]} without a JSON error body: ${answer.slice(0, 160)}`;
  }
}

/** What a response must satisfy; returns a problem description or null. */
function check(spec: Spec, r: RawResponse): string | null {
  if (r.status >= 500) return `5xx ${r.status}: ${r.text.slice(0, 200)}`;
  const ctype = String(r.headers['content-type'] ?? '');
  if (spec.method === 'HEAD') return null;
  if (r.status >= 400) {
    let code: unknown;
    try {
      code = JSON.parse(r.text).error.code;
    } catch {
      return `${r.status} without a JSON error body: ${r.text.slice(0, 200)}`;
    }
    return CODES.has(String(code)) ? null : `${r.status} with unknown code ${String(code)}`;
  }
  if (ctype.startsWith('application/x-ndjson')) {
    for (const line of r.text.split('\n').filter(Boolean)) {
      let o: any;
      try {
        o = JSON.parse(line);
      } catch {
        return `NDJSON output line is not JSON: ${line.slice(0, 100)}`;
      }
      if (o.error && typeof o.error === 'object') {
        if (!CODES.has(o.error.code)) return `NDJSON error line with unknown code ${o.error.code}`;
      } else if (!TYPES.has(o.type)) return `NDJSON result with type ${o.type}`;
    }
  } else if (spec.path.startsWith('/api/v1/lookup') && r.status === 200) {
    const o = JSON.parse(r.text);
    const results = o.results ?? [o];
    if (!results.every((x: any) => TYPES.has(x.type) && typeof x.verdict === 'string')) return `lookup result of an unexpected shape: ${r.text.slice(0, 200)}`;
  }
  return null;
}

describe(`HTTP fuzzing (seed ${SEED}, FUZZ_SEED to reproduce)`, () => {
  const work = tmpDir('outpost-fuzz-');
  let server: Served;
  let tokens: { lookup: string; export: string; admin: string };
  const listed = listValues('maltrail/malware/emotet.txt').find((v) => /^\d+\.\d+\.\d+\.\d+:\d+$/.test(v))!.replace(/:\d+$/, '');

  beforeAll(async () => {
    const { dataDir } = prepareRealData(work, ['maltrail/malware/emotet.txt']);
    tokens = { lookup: createToken(dataDir, 'fz-l', 'lookup'), export: createToken(dataDir, 'fz-e', 'export'), admin: createToken(dataDir, 'fz-a', 'admin') };
    // No rate limit: the fuzzer wants every request to reach the handlers (limits.test.ts covers 429).
    server = await serve(dataDir, ['--no-demo'], { OUTPOST_RATE_LIMIT_RPS: '0', OUTPOST_LOG_LEVEL: 'warn' });
  });

  afterAll(async () => {
    await server?.stop();
    fs.rmSync(work, { recursive: true, force: true });
  });

  it(`${REQUESTS} generated requests and ${RAW} raw socket payloads: no 5xx, stable codes, still correct afterwards`, { timeout: 300_000 }, async () => {
    const all = fc.sample(specs(tokens), { seed: SEED, numRuns: REQUESTS });
    const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
    const problems: string[] = [];
    const statuses = new Map<number, number>();
    const slow: [number, string][] = [];
    let next = 0;
    const worker = async () => {
      while (next < all.length) {
        const i = next++;
        const spec = all[i];
        let r: RawResponse;
        const t0 = performance.now();
        try {
          r = await request(`${server.url}${spec.path}`, { method: spec.method, headers: spec.headers, body: spec.body, agent, timeoutMs: 30_000 });
        } catch (e) {
          // The server may close a connection on a refused body; that is not a crash, but the next check is.
          if (server.proc.exitCode !== null) problems.push(`#${i} server died: ${(e as Error).message}`);
          statuses.set(-1, (statuses.get(-1) ?? 0) + 1);
          continue;
        }
        statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
        if (process.env.FUZZ_PROFILE) slow.push([performance.now() - t0, `${spec.method} ${spec.path.slice(0, 60)} ${spec.headers['content-type']} body=${spec.body?.length ?? 0} → ${r.status}`]);
        const p = check(spec, r);
        if (p) problems.push(`#${i} ${spec.method} ${spec.path.slice(0, 120)} [${spec.headers['content-type'] ?? '-'}]: ${p}`);
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    agent.destroy();
    if (process.env.FUZZ_PROFILE) console.log(slow.sort((x, y) => y[0] - x[0]).slice(0, 15).map(([ms, d]) => `${ms.toFixed(0)} ms ${d}`).join('\n'));

    const port = Number(new URL(server.url).port);
    const rawCases = fc.sample(raw, { seed: SEED + 1, numRuns: RAW });
    for (let i = 0; i < rawCases.length; i += 60) {
      const answers = await Promise.all(rawCases.slice(i, i + 60).map((b) => sendRaw(port, b)));
      answers.forEach((a, j) => {
        if (/^HTTP\/1\.[01] 5/.test(a)) problems.push(`raw #${i + j}: ${a.slice(0, 120)}`);
        const p = rawProblem(a);
        if (p) problems.push(`raw #${i + j}: ${p}`);
      });
    }

    console.log(`fuzz seed ${SEED}: ${all.length} requests, statuses ${JSON.stringify(Object.fromEntries([...statuses].sort((a, b) => a[0] - b[0])))}; ${RAW} raw payloads`);
    expect(problems.slice(0, 20), `seed ${SEED}: ${problems.length} problems`).toEqual([]);
    expect(server.proc.exitCode).toBeNull();
    // Variety check: the fuzzer reached the handlers, not only the auth layer.
    expect(statuses.get(200) ?? 0).toBeGreaterThan(REQUESTS / 10);
    expect([...statuses.keys()].filter((s) => s >= 400).length).toBeGreaterThanOrEqual(4);

    const after = await request(`${server.url}/api/v1/lookup?value=${listed}`, { headers: bearer(tokens.lookup) });
    expect(after.status).toBe(200);
    expect(JSON.parse(after.text)).toMatchObject({ verdict: 'malicious', type: 'ipv4', normalized: listed });
    const batch = await request(`${server.url}/api/v1/lookup`, { method: 'POST', headers: bearer(tokens.lookup, { 'content-type': 'application/json' }), body: JSON.stringify({ values: [listed, '192.0.2.1'] }) });
    expect(JSON.parse(batch.text).results.map((x: any) => x.verdict)).toEqual(['malicious', 'unknown']);
    expect(server.stderr()).not.toMatch(/"level":50/); // no "unhandled error" logged
  });
});
