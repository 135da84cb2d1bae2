// Real consumer: Suricata 7 loads the exported file set (datasets, rules, IP reputation) and alerts
// on a pcap written here — a TCP connection to a listed IPv4, one into a listed network, a DNS query
// for a listed domain (mixed case), an HTTP GET for a listed URL, and the same kinds of traffic to
// unlisted values, which must stay silent. Local overrides: a block override on an unlisted address alerts,
// an allow override on a listed address silences it. scripts/install-consumers.sh installs Suricata.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeExportFiles } from '../lookup/exports/index.ts';
import { SID, iprepCategory, splitHttpUrl } from '../lookup/exports/suricata.ts';
import { ipRange, RangeSet } from '../lookup/exports/ranges.ts';
import { addOverride } from '../lookup/overrides.ts';
import { addRow, buildFixture, NOW, type Fixture } from './exports-fixture.ts';

// ---- a small pcap writer: Ethernet/IPv4 with TCP or UDP, correct checksums ----
function sum16(buf: Buffer, initial = 0): number {
  let s = initial;
  for (let i = 0; i + 1 < buf.length; i += 2) s += buf.readUInt16BE(i);
  if (buf.length % 2) s += buf[buf.length - 1] << 8;
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return s;
}
const checksum = (buf: Buffer, initial = 0) => ~sum16(buf, initial) & 0xffff;
const ip4 = (s: string) => Buffer.from(s.split('.').map(Number));

function ipv4Packet(src: string, dst: string, proto: number, payload: Buffer, id: number): Buffer {
  const h = Buffer.alloc(20);
  h[0] = 0x45;
  h.writeUInt16BE(20 + payload.length, 2);
  h.writeUInt16BE(id & 0xffff, 4);
  h.writeUInt16BE(0x4000, 6);
  h[8] = 64;
  h[9] = proto;
  ip4(src).copy(h, 12);
  ip4(dst).copy(h, 16);
  h.writeUInt16BE(checksum(h), 10);
  const eth = Buffer.from('0200000000020200000000010800', 'hex');
  return Buffer.concat([eth, h, payload]);
}

function pseudo(src: string, dst: string, proto: number, len: number): number {
  const p = Buffer.alloc(12);
  ip4(src).copy(p, 0);
  ip4(dst).copy(p, 4);
  p[9] = proto;
  p.writeUInt16BE(len, 10);
  return sum16(p);
}

class Pcap {
  private records: Buffer[] = [];
  private t = NOW;
  private id = 1;
  add(frame: Buffer): void {
    const h = Buffer.alloc(16);
    this.t += 0.001;
    h.writeUInt32LE(Math.floor(this.t), 0);
    h.writeUInt32LE(Math.round((this.t % 1) * 1e6), 4);
    h.writeUInt32LE(frame.length, 8);
    h.writeUInt32LE(frame.length, 12);
    this.records.push(h, frame);
  }
  udp(src: string, sport: number, dst: string, dport: number, data: Buffer): void {
    const u = Buffer.alloc(8);
    u.writeUInt16BE(sport, 0);
    u.writeUInt16BE(dport, 2);
    u.writeUInt16BE(8 + data.length, 4);
    const seg = Buffer.concat([u, data]);
    seg.writeUInt16BE(checksum(seg, pseudo(src, dst, 17, seg.length)) || 0xffff, 6);
    this.add(ipv4Packet(src, dst, 17, seg, this.id++));
  }
  tcp(src: string, sport: number, dst: string, dport: number, seq: number, ack: number, flags: number, data: Buffer = Buffer.alloc(0)): void {
    const t = Buffer.alloc(20);
    t.writeUInt16BE(sport, 0);
    t.writeUInt16BE(dport, 2);
    t.writeUInt32BE(seq >>> 0, 4);
    t.writeUInt32BE(ack >>> 0, 8);
    t[12] = 5 << 4;
    t[13] = flags;
    t.writeUInt16BE(65535, 14);
    const seg = Buffer.concat([t, data]);
    seg.writeUInt16BE(checksum(seg, pseudo(src, dst, 6, seg.length)), 16);
    this.add(ipv4Packet(src, dst, 6, seg, this.id++));
  }
  /** A complete TCP conversation: handshake, request, response, FIN both ways. */
  session(client: string, cport: number, server: string, sport: number, request: Buffer, response: Buffer): void {
    const SYN = 0x02, ACK = 0x10, PSH = 0x08, FIN = 0x01;
    let c = 1000, s = 5000;
    this.tcp(client, cport, server, sport, c, 0, SYN);
    this.tcp(server, sport, client, cport, s, c + 1, SYN | ACK);
    c++; s++;
    this.tcp(client, cport, server, sport, c, s, ACK);
    if (request.length) {
      this.tcp(client, cport, server, sport, c, s, PSH | ACK, request);
      c += request.length;
      this.tcp(server, sport, client, cport, s, c, ACK);
    }
    if (response.length) {
      this.tcp(server, sport, client, cport, s, c, PSH | ACK, response);
      s += response.length;
      this.tcp(client, cport, server, sport, c, s, ACK);
    }
    this.tcp(client, cport, server, sport, c, s, FIN | ACK);
    this.tcp(server, sport, client, cport, s, c + 1, FIN | ACK);
    this.tcp(client, cport, server, sport, c + 1, s + 1, ACK);
  }
  dnsQuery(client: string, server: string, name: string, id: number): void {
    const h = Buffer.alloc(12);
    h.writeUInt16BE(id, 0);
    h.writeUInt16BE(0x0100, 2);
    h.writeUInt16BE(1, 4);
    const labels = name.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]));
    const q = Buffer.concat([h, ...labels, Buffer.from([0, 0, 1, 0, 1])]);
    this.udp(client, 30000 + id, server, 53, q);
  }
  write(file: string): void {
    const g = Buffer.alloc(24);
    g.writeUInt32LE(0xa1b2c3d4, 0);
    g.writeUInt16LE(2, 4);
    g.writeUInt16LE(4, 6);
    g.writeUInt32LE(65535, 16);
    g.writeUInt32LE(1, 20);
    fs.writeFileSync(file, Buffer.concat([g, ...this.records]));
  }
}

const httpGet = (host: string, pathq: string) => Buffer.from(`GET ${pathq} HTTP/1.1\r\nHost: ${host}\r\nUser-Agent: outpost-test\r\nAccept: */*\r\n\r\n`);
const httpOk = (body: string) => Buffer.from(`HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: ${body.length}\r\n\r\n${body}`);

interface Alert { src_ip: string; dest_ip: string; alert: { signature_id: number; signature: string } }

describe('Suricata 7 consumes the exports', () => {
  let fx: Fixture;
  let work: string;
  let alerts: Alert[] = [];
  let suricataLog = '';
  const sc = {} as Record<string, { client: string; server: string; value: string; sid?: number }>;
  const PAYLOAD = 'outpost export test payload: a file whose md5 is listed\n';

  beforeAll(async () => {
    const v = spawnSync('suricata', ['-V'], { encoding: 'utf8' });
    if (v.error || !/version 7\./.test(v.stdout)) throw new Error('Suricata 7 is required: run scripts/install-consumers.sh');
    fx = buildFixture();
    // A hand-made file hash, so a served body can match filemd5 (real listed hashes have no body here).
    addRow(fx.db, 'hashes', 'block', 'md5', createHash('md5').update(PAYLOAD).digest('hex'));
    work = path.join(fx.dir, 'suricata-run');
    fs.mkdirSync(work);
    await writeExportFiles(fx.db, path.join(fx.dir, 'exports'), { now: NOW });
    const set = path.join(fx.dir, 'exports', 'suricata');
    const read = (n: string) => fs.readFileSync(path.join(set, n), 'utf8').split('\n').filter(Boolean);

    // Local overrides, then the set again: a listed address no listed network covers is allowed, an
    // unlisted one blocked (the export files as serve rewrites them after an override change).
    const nets = new RangeSet();
    for (const [v] of read('outpost.list').map((l) => l.split(','))) if (v.includes('/')) nets.add(ipRange(v)!);
    const allowedIp = read('ipv4.lst').slice(1).find((v) => !nets.overlaps(ipRange(v)!))!;
    addOverride(fx.db, { action: 'allow', value: allowedIp, reason: 'our partner', createdBy: 'test' });
    addOverride(fx.db, { action: 'block', value: '198.51.100.66', reason: 'seen in proxy logs', createdBy: 'test' });
    await writeExportFiles(fx.db, path.join(fx.dir, 'exports'), { now: NOW });

    // Listed values are taken from the export itself, so the test follows whatever the data holds.
    const ipv4 = read('ipv4.lst')[0];
    const cidr = read('outpost.list').map((l) => l.split(',')).find(([ip]) => ip.includes('/') && !ip.includes(':') && Number(ip.split('/')[1]) <= 24)!;
    const [net, prefix] = cidr[0].split('/');
    const inNet = net.split('.').map(Number);
    inNet[3] = Number(prefix) <= 24 ? 77 : inNet[3];
    const domain = Buffer.from(read('domains.lst')[0], 'base64').toString('utf8');
    const urlRule = read('outpost.rules').find((l) => l.includes('OUTPOST listed URL') && /http\.host; content:"[a-z][a-z0-9.-]*[a-z]"; startswith/.test(l) && !/\|/.test(l))!;
    const url = 'http://' + /msg:"OUTPOST listed URL ([^"]+)"/.exec(urlRule)![1];
    const urlParts = splitHttpUrl(url)!;
    const catOf = (v: string) => read('outpost.list').find((l) => l.startsWith(v + ','))!.split(',')[1];

    sc.ip = { client: '10.9.0.1', server: ipv4, value: ipv4 };
    sc.net = { client: '10.9.0.2', server: inNet.join('.'), value: cidr[0], sid: SID.iprepDstBase + Number(catOf(cidr[0])) };
    sc.dns = { client: '10.9.0.3', server: '10.9.9.53', value: domain };
    sc.url = { client: '10.9.0.4', server: '203.0.113.80', value: url, sid: Number(/sid:(\d+)/.exec(urlRule)![1]) };
    sc.file = { client: '10.9.0.5', server: '203.0.113.81', value: 'payload' };
    sc.quiet = { client: '10.9.0.9', server: '203.0.113.99', value: 'unlisted' };
    sc.blocked = { client: '10.9.0.6', server: '198.51.100.66', value: 'block override', sid: SID.iprepDstBase + iprepCategory('local-block').id };
    sc.allowed = { client: '10.9.0.7', server: allowedIp, value: 'allow override' };

    const pcap = new Pcap();
    pcap.session(sc.ip.client, 40001, sc.ip.server, 443, Buffer.alloc(0), Buffer.alloc(0));
    pcap.session(sc.net.client, 40002, sc.net.server, 8080, Buffer.alloc(0), Buffer.alloc(0));
    // Mixed case on the wire: the rule lowercases before the dataset lookup.
    pcap.dnsQuery(sc.dns.client, sc.dns.server, domain.split('.').map((l, i) => (i === 0 ? l.toUpperCase() : l)).join('.'), 7);
    pcap.session(sc.url.client, 40004, sc.url.server, 80, httpGet(urlParts.host, urlParts.path), httpOk('not found\n'));
    pcap.session(sc.file.client, 40005, sc.file.server, 80, httpGet('files.example', '/download/sample.bin'), httpOk(PAYLOAD));
    pcap.session(sc.blocked.client, 40006, sc.blocked.server, 443, Buffer.alloc(0), Buffer.alloc(0));
    pcap.session(sc.allowed.client, 40007, sc.allowed.server, 443, Buffer.alloc(0), Buffer.alloc(0));
    // Unlisted: the same kinds of traffic, to values in no feed.
    pcap.session(sc.quiet.client, 40009, sc.quiet.server, 443, Buffer.alloc(0), Buffer.alloc(0));
    pcap.dnsQuery(sc.quiet.client, sc.dns.server, 'unlisted-name.example', 9);
    pcap.session(sc.quiet.client, 40010, sc.quiet.server, 80, httpGet('unlisted-host.example', '/nothing/here.php?q=1'), httpOk('ok\n'));
    const pcapFile = path.join(work, 'traffic.pcap');
    pcap.write(pcapFile);

    const yaml = path.join(work, 'suricata.yaml');
    fs.writeFileSync(yaml, [
      '%YAML 1.1', '---',
      `default-log-dir: ${work}`,
      `default-rule-path: ${set}`,
      'rule-files:', '  - outpost.rules', '  - outpost-iprep.rules',
      `reputation-categories-file: ${path.join(set, 'categories.txt')}`,
      `default-reputation-path: ${set}`,
      'reputation-files:', '  - outpost.list',
      'outputs:', '  - eve-log:', '      enabled: yes', '      filetype: regular', '      filename: eve.json', '      types:', '        - alert',
      'app-layer:', '  protocols:', '    dns:', '      udp: { enabled: yes }', '      tcp: { enabled: yes }', '    http:', '      enabled: yes', '    tls:', '      enabled: yes',
      'stream:', '  midstream: false', '  checksum-validation: yes',
      '',
    ].join('\n'));
    const run = spawnSync('suricata', ['-c', yaml, '-r', pcapFile, '-l', work, '--runmode', 'single', '-v'], { encoding: 'utf8', timeout: 100_000 });
    suricataLog = run.stdout + run.stderr;
    if (run.status !== 0) throw new Error(`suricata exited ${run.status}:\n${suricataLog}`);
    const eve = path.join(work, 'eve.json');
    if (process.env.OUTPOST_TEST_DEBUG) console.log(fs.readFileSync(eve, 'utf8'));
    alerts = fs.existsSync(eve) ? fs.readFileSync(eve, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Alert) : [];
  });

  afterAll(() => fx?.close());

  const sidsFor = (client: string) => new Set(alerts.filter((a) => a.src_ip === client || a.dest_ip === client).map((a) => a.alert.signature_id));

  it('loads every exported rule without errors', () => {
    expect(suricataLog).not.toMatch(/error parsing signature/i);
    expect(suricataLog).toMatch(/rules successfully loaded, 0 rules failed/);
  });

  it('alerts on a connection to a listed IPv4 (dataset and IP reputation)', () => {
    const sids = sidsFor(sc.ip.client);
    expect(sids).toContain(SID.ipv4Dst);
    const cat = fs.readFileSync(path.join(fx.dir, 'exports', 'suricata', 'outpost.list'), 'utf8').split('\n').find((l) => l.startsWith(sc.ip.value + ','))!.split(',')[1];
    expect(sids).toContain(SID.iprepDstBase + Number(cat));
  });

  it('alerts on a connection into a listed network (iprep CIDR), not via the address dataset', () => {
    const sids = sidsFor(sc.net.client);
    expect(sids).toContain(sc.net.sid);
    expect(sids).not.toContain(SID.ipv4Dst);
  });

  it('alerts on a DNS query for a listed domain', () => {
    expect(sidsFor(sc.dns.client)).toContain(SID.dnsQuery);
  });

  it('alerts on an HTTP GET for a listed URL with its per-URL rule', () => {
    expect(sidsFor(sc.url.client)).toContain(sc.url.sid);
  });

  it('alerts on a served file whose MD5 is listed', () => {
    expect(sidsFor(sc.file.client)).toContain(SID.fileMd5);
  });

  it('alerts on an unlisted address with a local block override (dataset and iprep), not on an allow-overridden listed one', () => {
    const sids = sidsFor(sc.blocked.client);
    expect(sids).toContain(SID.ipv4Dst);
    expect(sids).toContain(sc.blocked.sid);
    expect([...sidsFor(sc.allowed.client)]).toEqual([]);
  });

  it('stays silent for unlisted addresses, names and URLs', () => {
    expect([...sidsFor(sc.quiet.client)]).toEqual([]);
    expect(alerts.length).toBeGreaterThan(0);
    expect(iprepCategory('c2').name).toBe('CnC');
  });
});
