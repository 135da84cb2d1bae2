// SIEM push against a real receiver: Debian's rsyslogd started by the test on loopback ports (imtcp
// with octet-counted framing, imudp; test/rsyslog-fixture.ts), writing what it parsed from each RFC 5424
// message to a file.
// Lookups of real listed values go through the real engine; CEF escaping is checked by parsing the
// received CEF back with a parser written from the CEF spec. scripts/install-consumers.sh installs rsyslog.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { layout } from '../appliance/db.ts';
import type { LookupResult } from '../appliance/types.ts';
import { LookupEngine } from '../lookup/engine.ts';
import { cefHeader, cefValue, SiemPush, type PushConfig } from '../lookup/push.ts';
import { buildFixture, NOW, type Fixture } from './exports-fixture.ts';
import { freePort } from './helpers.ts';
import { parseCef, startRsyslog, until, type Rsyslog } from './rsyslog-fixture.ts';

describe('SIEM push to rsyslog', () => {
  let fx: Fixture;
  let engine: LookupEngine;
  let rsyslog: Rsyslog;
  let dir = '';
  let tcpPort = 0;
  let udpPort = 0;
  const received = () => rsyslog.received();
  const cfg = (over: Partial<PushConfig>): PushConfig => ({ host: '127.0.0.1', port: tcpPort, transport: 'tcp', format: 'cef', minVerdict: 'suspicious', queueMax: 10_000, batchMax: 100, facility: 16, hostname: 'outpost-test', ...over });

  beforeAll(async () => {
    fx = buildFixture();
    engine = new LookupEngine(fx.db, { fpRate: 0.001, worker: false, filterDir: null, now: () => NOW });
    dir = fs.mkdtempSync(path.join(fx.dir, 'rsyslog-'));
    tcpPort = await freePort();
    udpPort = await freePort();
    rsyslog = await startRsyslog(dir, { tcp: tcpPort, udp: udpPort });
  });
  afterAll(async () => {
    await rsyslog?.stop();
    fx?.close();
  });

  it('forwards real malicious and suspicious hits as RFC 5424 + CEF over TCP (octet counting); skips the rest', async () => {
    const push = new SiemPush(fx.db, cfg({}));
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
    expect(push.stats()).toMatchObject({ sent: forwarded.length, dropped: 0, failures: 0, queued: 0 });
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
    const push = new SiemPush(fx.db, cfg({}));
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
    const push = new SiemPush(fx.db, cfg({ transport: 'udp', port: udpPort, format: 'json', minVerdict: 'malicious' }));
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

  it('bounded queue: with the receiver away, the oldest hits beyond the cap are dropped and counted; the newest arrive after reconnect', async () => {
    const port = await freePort(); // nothing listens yet
    const push = new SiemPush(fx.db, cfg({ port, queueMax: 5, target: 'syslog-cap' }));
    const results = engine.lookupMany(fx.inserted.get('threatfox')!.filter((x) => x.type === 'ipv4').slice(0, 20).map((x) => x.value)).filter((r) => r.matches.length);
    expect(results.length).toBe(20);
    push.offerMany(results, 'late');
    push.flush();
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
    expect(frames.map((f) => parseCef(f.slice(f.indexOf('CEF:0'))).ext.cs1)).toEqual(results.slice(15).map((r) => r.normalized)); // the newest five, in order
    expect(push.stats()).toMatchObject({ queued: 0, sent: 5, dropped: 15 });
    await push.close();
    await new Promise<void>((r) => srv.close(() => r()));
  });
  it('a producer-only pusher (a process that answers lookups but does not send, e.g. a cluster HTTP worker) queues in push_queue; the sender on another connection delivers its rows in order', async () => {
    const other = new Database(layout(fx.dir).db);
    other.pragma('busy_timeout = 0');
    const producer = new SiemPush(other, cfg({ sender: false, target: 'syslog-shared' }));
    const sender = new SiemPush(fx.db, cfg({ target: 'syslog-shared' }));
    const results = engine.lookupMany(fx.inserted.get('lummac2')!.slice(40, 60).map((x) => x.value)).filter((r) => r.verdict === 'malicious' || r.verdict === 'suspicious');
    expect(results.length).toBeGreaterThan(5);
    const before = received().length;
    producer.offerMany(results, 'worker-1');
    producer.flush();
    expect(producer.stats()).toMatchObject({ sent: 0, failures: 0 });
    // The sender was told nothing: it finds the other connection's rows on its own.
    await until(() => received().length >= before + results.length, 'rows of the producer at rsyslog');
    expect(received().slice(before).map((m) => parseCef(m.msg).ext.cs1)).toEqual(results.map((r) => r.normalized));
    expect(received().slice(before).every((m) => parseCef(m.msg).ext.suser === 'worker-1')).toBe(true);
    await sender.drained();
    expect(sender.stats()).toMatchObject({ sent: results.length, queued: 0 });
    await producer.close();
    await sender.close();
    other.close();
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
    const untrusted = new SiemPush(fx.db, cfg({ transport: 'tls', port, target: 'syslog-untrusted' }));
    untrusted.offerMany(results, 'tls-client');
    await untrusted.drained();
    expect(untrusted.stats()).toMatchObject({ sent: 0, queued: results.length });
    expect(untrusted.stats().failures).toBeGreaterThan(0);
    await untrusted.close();
    const push = new SiemPush(fx.db, cfg({ transport: 'tls', port, tlsCa: fs.readFileSync(crt, 'utf8'), target: 'syslog-tls' }));
    push.offerMany(results, 'tls-client');
    await push.drained();
    await until(() => frames.length === results.length, 'TLS frames');
    expect(frames.map((f) => parseCef(f.slice(f.indexOf('CEF:0'))).ext.cs1)).toEqual(results.map((r) => r.normalized));
    await push.close();
    await new Promise<void>((r) => srv.close(() => r()));
  });
});
