// SIEM push against a real receiver: Debian's rsyslogd started by the test on loopback ports (imtcp
// with octet-counted framing, imudp), writing what it parsed from each RFC 5424 message to a file.
// Lookups of real listed values go through the real engine; CEF escaping is checked by parsing the
// received CEF back with a parser written from the CEF spec. scripts/install-consumers.sh installs rsyslog.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LookupResult } from '../appliance/types.ts';
import { LookupEngine } from '../lookup/engine.ts';
import { cefHeader, cefValue, SiemPush, type PushConfig } from '../lookup/push.ts';
import { buildFixture, NOW, type Fixture } from './exports-fixture.ts';
import { freePort } from './helpers.ts';

const RSYSLOGD = fs.existsSync('/usr/sbin/rsyslogd') ? '/usr/sbin/rsyslogd' : 'rsyslogd';


const until = async (cond: () => boolean, what: string, ms = 20_000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
};

/** CEF parser from the spec: 7 pipe-separated header fields (\| and \\ escaped), then key=value pairs. */
function parseCef(line: string): { header: string[]; ext: Record<string, string> } {
  const header: string[] = [];
  let cur = '';
  let i = 0;
  for (; i < line.length && header.length < 7; i++) {
    const ch = line[i];
    if (ch === '\\' && (line[i + 1] === '|' || line[i + 1] === '\\')) cur += line[++i];
    else if (ch === '|') {
      header.push(cur);
      cur = '';
    } else cur += ch;
  }
  const rest = line.slice(i);
  const ext: Record<string, string> = {};
  // A key starts after a space (or at the start) and ends at the first unescaped '='.
  const re = /(?:^| )([A-Za-z0-9_]+)=/g;
  const keys: { key: string; start: number; valueStart: number }[] = [];
  for (let m; (m = re.exec(rest)); ) {
    // an '=' preceded by a backslash is part of a value, never a key boundary
    if (rest[m.index + m[0].length - 2] === '\\') continue;
    keys.push({ key: m[1], start: m.index, valueStart: m.index + m[0].length });
  }
  const real = keys.filter((k) => !isEscaped(rest, k.valueStart - 1));
  real.forEach((k, n) => {
    const raw = rest.slice(k.valueStart, n + 1 < real.length ? real[n + 1].start : rest.length);
    ext[k.key] = raw.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c === 'r' ? '\r' : c));
  });
  return { header, ext };
}
function isEscaped(s: string, at: number): boolean {
  let n = 0;
  for (let j = at - 1; j >= 0 && s[j] === '\\'; j--) n++;
  return n % 2 === 1;
}

interface Received {
  pri: number;
  app: string;
  msgid: string;
  sd: string;
  msg: string;
}

describe('SIEM push to rsyslog', () => {
  let fx: Fixture;
  let engine: LookupEngine;
  let rsyslog: ChildProcess | undefined;
  let dir = '';
  let tcpPort = 0;
  let udpPort = 0;
  let log = '';
  const received = (): Received[] =>
    fs.existsSync(path.join(dir, 'out.log'))
      ? fs.readFileSync(path.join(dir, 'out.log'), 'utf8').split('\n').filter(Boolean).map((l) => {
          const [pri, app, msgid, sd, ...msg] = l.split('\t');
          return { pri: Number(pri), app, msgid, sd, msg: msg.join('\t') };
        })
      : [];
  const cfg = (over: Partial<PushConfig>): PushConfig => ({ host: '127.0.0.1', port: tcpPort, transport: 'tcp', format: 'cef', minVerdict: 'suspicious', queueMax: 10_000, batchMax: 100, facility: 16, hostname: 'outpost-test', ...over });

  beforeAll(async () => {
    if (spawnSync(RSYSLOGD, ['-v']).error) throw new Error('rsyslogd is required: run scripts/install-consumers.sh');
    fx = buildFixture();
    engine = new LookupEngine(fx.db, { fpRate: 0.001, worker: false, filterDir: null, now: () => NOW });
    dir = fs.mkdtempSync(path.join(fx.dir, 'rsyslog-'));
    fs.mkdirSync(path.join(dir, 'work'));
    tcpPort = await freePort();
    udpPort = await freePort();
    // The receiver writes the RFC 5424 fields it parsed, tab-separated, one message per line.
    fs.writeFileSync(
      path.join(dir, 'rsyslog.conf'),
      [
        `global(workDirectory="${dir}/work" maxMessageSize="64k")`,
        `module(load="imtcp")`,
        `module(load="imudp")`,
        `template(name="fields" type="string" string="%pri%\\t%app-name%\\t%msgid%\\t%structured-data%\\t%msg%\\n")`,
        `ruleset(name="siem") { action(type="omfile" file="${dir}/out.log" template="fields") }`,
        `input(type="imtcp" address="127.0.0.1" port="${tcpPort}" ruleset="siem")`,
        `input(type="imudp" address="127.0.0.1" port="${udpPort}" ruleset="siem")`,
        '',
      ].join('\n'),
    );
    rsyslog = spawn(RSYSLOGD, ['-n', '-f', path.join(dir, 'rsyslog.conf'), '-i', path.join(dir, 'rsyslogd.pid')], { stdio: ['ignore', 'pipe', 'pipe'] });
    rsyslog.stdout!.on('data', (d) => (log += d));
    rsyslog.stderr!.on('data', (d) => (log += d));
    // Ready once the TCP input accepts connections.
    await until(() => spawnSync('bash', ['-c', `exec 3<>/dev/tcp/127.0.0.1/${tcpPort}`]).status === 0, `rsyslogd on ${tcpPort}: ${log}`);
  });
  afterAll(() => {
    rsyslog?.kill('SIGTERM');
    fx?.close();
  });

  it('forwards real malicious and suspicious hits as RFC 5424 + CEF over TCP (octet counting); skips the rest', async () => {
    const push = new SiemPush(cfg({}));
    const values = [
      ...fx.inserted.get('threatfox')!.filter((x) => x.type === 'ipv4').slice(0, 40).map((x) => x.value),
      ...fx.inserted.get('ipsum')!.slice(0, 40).map((x) => x.value),
      ...fx.inserted.get('lummac2')!.slice(0, 40).map((x) => x.value),
      '203.0.113.77',
      'github.com',
    ];
    const results = engine.lookupMany(values);
    const forwarded = results.filter((r) => r.verdict === 'malicious' || r.verdict === 'suspicious');
    expect(forwarded.length).toBeGreaterThan(50);
    expect(results.length - forwarded.length).toBeGreaterThan(0);
    const before = received().length;
    push.offerMany(results, 'edge-proxy');
    await push.drained();
    await until(() => received().length >= before + forwarded.length, 'messages in rsyslog output');
    const got = received().slice(before);
    expect(got).toHaveLength(forwarded.length);
    expect(push.stats()).toMatchObject({ sent: forwarded.length, dropped: 0, errors: 0 });
    for (const [i, r] of forwarded.entries()) {
      const m = got[i];
      expect(m.app).toBe('outpost');
      expect(m.msgid).toBe('hit');
      expect(m.pri).toBe(16 * 8 + (r.verdict === 'malicious' ? 2 : 4));
      expect(m.sd).toContain(`verdict="${r.verdict}"`);
      const cef = parseCef(m.msg);
      expect(cef.header.slice(0, 3)).toEqual(['CEF:0', 'Outpost', 'Outpost']);
      expect(cef.header[4]).toBe(r.rule);
      expect(cef.header[6]).toBe(r.verdict === 'malicious' ? '8' : '5');
      expect(cef.ext.cs1).toBe(r.normalized);
      expect(cef.ext.act).toBe(r.verdict);
      expect(cef.ext.cs2.split(',').sort()).toEqual([...new Set(r.matches.map((x) => x.feed))].sort());
      expect(cef.ext.suser).toBe('edge-proxy');
    }
    await push.close();
  });

  it('CEF escaping survives |, =, \\ and line breaks through rsyslog', async () => {
    const push = new SiemPush(cfg({}));
    const nasty = 'a|b=c\\d\ne\r\nf';
    const r: LookupResult = {
      value: 'http://evil.example/x', type: 'url', normalized: 'http://evil.example/p=1|2\\3', verdict: 'malicious', confidence: 90,
      rule: 'block|rule\\x', reasons: ['line one\nline two = yes'],
      matches: [{ feed: 'f|1', indicator: 'evil.example', kind: 'subdomain', category: 'c2=x', confidence: 90, first_seen: null, last_seen: null, expires_at: null }],
      generation: 1, data_age_s: 0,
    };
    const before = received().length;
    push.offer(r, nasty);
    await push.drained();
    await until(() => received().length > before, 'escaped message');
    const m = received()[before];
    expect(m.msg.split('\n')).toHaveLength(1);
    const cef = parseCef(m.msg);
    expect(cef.header).toHaveLength(7);
    expect(cef.header[4]).toBe('block|rule\\x');
    expect(cef.ext.suser).toBe(nasty.replace(/\r\n/g, '\n'));
    expect(cef.ext.request).toBe('http://evil.example/p=1|2\\3');
    expect(cef.ext.cs2).toBe('f|1');
    expect(cef.ext.cat).toBe('c2=x');
    expect(cef.ext.msg).toBe('line one\nline two = yes');
    expect(m.sd).toContain('client="a|b=c\\\\d');
    expect(cefHeader('x|y\\z\nw')).toBe('x\\|y\\\\z w');
    expect(cefValue('k=v\\w\nx|y')).toBe('k\\=v\\\\w\\nx|y');
    await push.close();
  });

  it('JSON bodies over UDP', async () => {
    const push = new SiemPush(cfg({ transport: 'udp', port: udpPort, format: 'json', minVerdict: 'malicious' }));
    const results = engine.lookupMany(fx.inserted.get('urlhaus')!.slice(0, 10).map((x) => x.value));
    const mal = results.filter((r) => r.verdict === 'malicious');
    expect(mal.length).toBeGreaterThan(0);
    const before = received().length;
    push.offerMany(results, 'dns');
    await push.drained();
    await until(() => received().length >= before + mal.length, 'UDP messages');
    const bodies = received().slice(before).map((m) => JSON.parse(m.msg) as { value: string; verdict: string; client: string });
    expect(bodies.map((b) => b.value).sort()).toEqual(mal.map((r) => r.value).sort());
    for (const b of bodies) expect(b).toMatchObject({ verdict: 'malicious', client: 'dns' });
    await push.close();
  });

  it('bounded queue: with the receiver away, hits beyond the queue are dropped and counted; the rest arrive after reconnect', async () => {
    const port = await freePort(); // nothing listens yet
    const push = new SiemPush(cfg({ port, queueMax: 5 }));
    const results = engine.lookupMany(fx.inserted.get('threatfox')!.filter((x) => x.type === 'ipv4').slice(0, 20).map((x) => x.value)).filter((r) => r.matches.length);
    expect(results.length).toBe(20);
    push.offerMany(results, 'late');
    expect(push.stats()).toMatchObject({ queued: 5, dropped: 15 });
    expect(push.renderMetrics()).toContain('outpost_siem_push_dropped_total 15');
    // A plain octet-counting receiver appears on that port; the pusher reconnects on its own.
    const frames: string[] = [];
    const srv = net.createServer((s) => {
      let buf = Buffer.alloc(0);
      s.on('data', (d) => {
        buf = Buffer.concat([buf, d as Buffer]);
        for (;;) {
          const sp = buf.indexOf(0x20);
          if (sp < 0) break;
          const len = Number(buf.subarray(0, sp).toString('ascii'));
          if (buf.length < sp + 1 + len) break;
          frames.push(buf.subarray(sp + 1, sp + 1 + len).toString('utf8'));
          buf = buf.subarray(sp + 1 + len);
        }
      });
    });
    await new Promise<void>((r) => srv.listen(port, '127.0.0.1', () => r()));
    await until(() => frames.length === 5, 'queued messages after reconnect');
    expect(frames.every((f) => f.startsWith('<13') && f.includes(' outpost '))).toBe(true);
    expect(push.stats()).toMatchObject({ queued: 0, sent: 5, dropped: 15 });
    await push.close();
    await new Promise<void>((r) => srv.close(() => r()));
  });
  it('TLS (RFC 5425): octet-counted frames to a receiver whose certificate is verified against the configured CA', async () => {
    const key = path.join(dir, 'tls.key');
    const crt = path.join(dir, 'tls.crt');
    const gen = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', crt, '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1', '-days', '1'], { encoding: 'utf8' });
    expect(gen.status, gen.stderr).toBe(0);
    const frames: string[] = [];
    const srv = tls.createServer({ key: fs.readFileSync(key), cert: fs.readFileSync(crt) }, (s) => {
      let buf = Buffer.alloc(0);
      s.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        for (;;) {
          const sp = buf.indexOf(0x20);
          if (sp < 0) break;
          const len = Number(buf.subarray(0, sp).toString('ascii'));
          if (buf.length < sp + 1 + len) break;
          frames.push(buf.subarray(sp + 1, sp + 1 + len).toString('utf8'));
          buf = buf.subarray(sp + 1 + len);
        }
      });
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    const port = (srv.address() as net.AddressInfo).port;
    const results = engine.lookupMany(fx.inserted.get('c2-iocs')!.slice(0, 30).map((x) => x.value)).filter((r) => r.verdict === 'malicious');
    expect(results.length).toBeGreaterThan(5);
    // Without the CA the receiver is not trusted: nothing is delivered.
    const untrusted = new SiemPush(cfg({ transport: 'tls', port }));
    untrusted.offerMany(results, 'tls-client');
    await new Promise((r) => setTimeout(r, 300));
    expect(untrusted.stats().sent).toBe(0);
    await untrusted.close();
    const push = new SiemPush(cfg({ transport: 'tls', port, tlsCa: fs.readFileSync(crt, 'utf8') }));
    push.offerMany(results, 'tls-client');
    await push.drained();
    await until(() => frames.length === results.length, 'TLS frames');
    expect(frames.map((f) => parseCef(f.slice(f.indexOf('CEF:0'))).ext.cs1)).toEqual(results.map((r) => r.normalized));
    await push.close();
    await new Promise<void>((r) => srv.close(() => r()));
  });
});
