// The bench's paced load generator (scripts/loadgen.ts pacedRun), against real node:http servers on
// 127.0.0.1: it sends at the rate asked (not as fast as it can), counts a server stall against every request
// that waited behind it (latency from the due instant), counts non-2xx answers and lost connections as
// errors, and reads answers that arrive in pieces.
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { pacedRun } from '../scripts/loadgen.ts';

const servers: (http.Server | net.Server)[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) {
    if (s instanceof http.Server) s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
});

async function serve(handler: http.RequestListener): Promise<string> {
  const s = http.createServer(handler);
  servers.push(s);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
}

const body = Buffer.from('{"verdict":"unknown"}');
const ok = (res: http.ServerResponse) => {
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length });
  res.end(body);
};

describe('paced load generator', () => {
  it('sends rate × duration requests, each with the path and token, and answers them all', async () => {
    let seen = 0;
    const paths = new Set<string>();
    let auth = '';
    const url = await serve((req, res) => {
      seen++;
      paths.add(req.url!);
      auth = req.headers.authorization ?? '';
      ok(res);
    });
    const r = await pacedRun({ url, token: 'tok', paths: ['/a?x=1', '/b?x=2', '/c?x=3'], rate: 500, duration: 2, connections: 8 });
    expect(r.errors).toBe(0);
    // One warm-up request per connection before the clock starts, not recorded.
    expect(r.answered).toBe(seen - 8);
    // 1,000 requests are due in 2 s at 500/s; a closed-loop client would send many times more. (Due requests
    // are released by a timer, so on a very busy machine the last few may not have come due before the end.)
    expect(r.answered).toBeLessThanOrEqual(1000);
    expect(r.answered).toBeGreaterThan(900);
    expect([...paths].sort()).toEqual(['/a?x=1', '/b?x=2', '/c?x=3']);
    expect(auth).toBe('Bearer tok');
    expect(r.p50).toBeLessThanOrEqual(r.p99);
    expect(r.p99).toBeLessThanOrEqual(r.max);
    expect(r.clientCores).toBeGreaterThan(0);
  });

  it('counts a server stall against every request that waited behind it (latency from the due instant)', async () => {
    // The server holds every answer during one 400 ms window; with 4 connections, the ~400 requests that
    // come due meanwhile wait in the client. Measured from when they were sent, only 4 requests would look
    // slow and the p99 would stay small.
    let stallUntil = 0;
    let n = 0;
    const url = await serve((_req, res) => {
      if (++n === 200) stallUntil = Date.now() + 400;
      const wait = stallUntil - Date.now();
      if (wait > 0) setTimeout(() => ok(res), wait);
      else ok(res);
    });
    const r = await pacedRun({ url, token: 't', paths: ['/'], rate: 1000, duration: 1.5, connections: 4 });
    expect(r.errors).toBe(0);
    expect(r.max).toBeGreaterThanOrEqual(390);
    // ≥ 25 % of the requests were due during the stall and waited part of it.
    expect(r.p99).toBeGreaterThanOrEqual(100);
  });

  it('does not record what is answered during the warm-up', async () => {
    // The server holds its answers for 300 ms early in the run (its 100th request after the connections'
    // first ones): inside a 1 s warm-up that leaves no trace; without one it is the maximum.
    const stalling = async () => {
      let n = 0;
      let until = 0;
      return serve((_req, res) => {
        if (++n === 100) until = Date.now() + 300;
        const wait = until - Date.now();
        if (wait > 0) setTimeout(() => ok(res), wait);
        else ok(res);
      });
    };
    const warm = await pacedRun({ url: await stalling(), token: 't', paths: ['/'], rate: 400, duration: 1, connections: 4, warmup: 1 });
    expect(warm.errors).toBe(0);
    expect(warm.max).toBeLessThan(250);
    expect(warm.answered).toBeGreaterThan(300); // the measured second only (~400), not the warm-up's too
    expect(warm.answered).toBeLessThanOrEqual(400);
    const cold = await pacedRun({ url: await stalling(), token: 't', paths: ['/'], rate: 400, duration: 1, connections: 4 });
    expect(cold.max).toBeGreaterThanOrEqual(290);
  });

  it('counts non-2xx answers and connections lost mid-request as errors, with the status codes', async () => {
    let n = 0;
    const url = await serve((req, res) => {
      n++;
      if (n % 10 === 0) {
        res.writeHead(503, { 'content-length': 0 });
        res.end();
      } else if (n % 25 === 0) req.socket.destroy();
      else ok(res);
    });
    const r = await pacedRun({ url, token: 't', paths: ['/'], rate: 400, duration: 1, connections: 4 });
    const failed = Math.floor(n / 10) + (Math.floor(n / 25) - Math.floor(n / 50));
    expect(r.errors).toBe(failed);
    expect(r.answered).toBe(n - failed - 4); // the 4 warm-up requests (n = 1..4, all answered) are not recorded
    expect(r.statuses).toEqual([503]);
  });

  it('reads an answer whose head and body arrive in separate pieces', async () => {
    const url = await serve((_req, res) => {
      res.socket!.setNoDelay(true);
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length });
      res.flushHeaders();
      res.write(body.subarray(0, 5));
      setTimeout(() => res.end(body.subarray(5)), 5);
    });
    const r = await pacedRun({ url, token: 't', paths: ['/'], rate: 100, duration: 0.5, connections: 2 });
    expect(r.errors).toBe(0);
    expect(r.answered).toBeGreaterThan(40);
    expect(r.p50).toBeGreaterThanOrEqual(4);
  });

  it('reads answers cut anywhere, finds the length header in any case, and counts an answer without a length as an error', async () => {
    // The client parses answers in place in one shared read buffer, so a piece kept between reads must be a
    // copy. A raw server writes each answer in four pieces (inside the status line, inside the length
    // header's name, inside the body), ms apart; every 7th answer has no length (chunked) and the server
    // closes that connection.
    const payload = '{"verdict":"unknown","pad":"' + 'x'.repeat(300) + '"}';
    const head = `HTTP/1.1 200 OK\r\nDate: now\r\nCONTENT-length:  ${payload.length}\r\nConnection: keep-alive\r\n\r\n`;
    const full = head + payload;
    const cuts = [5, head.indexOf('length'), head.length + 10, full.length];
    let n = 0;
    const sockets = new Set<net.Socket>();
    const srv = net.createServer((sock) => {
      sockets.add(sock);
      sock.on('close', () => sockets.delete(sock));
      sock.setNoDelay(true);
      let pending = '';
      sock.on('data', (d) => {
        pending += d.toString('latin1');
        for (let i = pending.indexOf('\r\n\r\n'); i >= 0; i = pending.indexOf('\r\n\r\n')) {
          pending = pending.slice(i + 4);
          if (++n % 7 === 0) {
            sock.end('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n');
            return;
          }
          // One piece per ms, each timer set by the one before (timers of different lengths may run out of
          // order on a busy machine).
          const piece = (k: number) => {
            if (!sock.writable) return;
            sock.write(full.slice(k ? cuts[k - 1] : 0, cuts[k]));
            if (k + 1 < cuts.length) setTimeout(() => piece(k + 1), 1);
          };
          piece(0);
        }
      });
    });
    servers.push(srv);
    srv.on('close', () => sockets.forEach((s) => s.destroy()));
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
    const r = await pacedRun({ url, token: 't', paths: ['/'], rate: 200, duration: 1, connections: 4 });
    const failed = Math.floor(n / 7);
    expect(failed).toBeGreaterThan(20);
    expect(r.errors).toBe(failed);
    expect(r.answered).toBe(n - failed - 4); // the 4 warm-up answers (n = 1..4) are not recorded
    // Each answer counted only once its last piece (written ≥ 3 ms after the first) had arrived.
    expect(r.p50).toBeGreaterThanOrEqual(2.5);
  });

  it('alternates between two servers by time slot, each with its own connections and figures', async () => {
    // The second server answers 20 ms late: that shows in its figures only. Slots of 250 ms over 2 s: four
    // each, so each server gets about half of the 800 due requests.
    const seen = { a: 0, b: 0 };
    const a = await serve((_req, res) => {
      seen.a++;
      ok(res);
    });
    const b = await serve((_req, res) => {
      seen.b++;
      setTimeout(() => ok(res), 20);
    });
    const r = await pacedRun({ url: a, token: 't', paths: ['/'], rate: 400, duration: 2, connections: 4, alternate: { url: b, everyMs: 250 } });
    expect(r.errors).toBe(0);
    expect(r.alternate!.errors).toBe(0);
    expect(r.answered).toBe(seen.a - 4); // each side's 4 warm-up requests are not recorded
    expect(r.alternate!.answered).toBe(seen.b - 4);
    expect(r.answered + r.alternate!.answered).toBeLessThanOrEqual(800);
    for (const n of [r.answered, r.alternate!.answered]) {
      expect(n).toBeGreaterThan(340);
      expect(n).toBeLessThanOrEqual(400);
    }
    expect(r.p50).toBeLessThan(15);
    expect(r.alternate!.p50).toBeGreaterThanOrEqual(20);
    expect(r.alternate!.alternate).toBeUndefined();
  });

  it('reports every request as failed when nothing listens', async () => {
    const url = await serve((_req, res) => ok(res));
    for (const s of servers.splice(0)) await new Promise((r) => s.close(r));
    const r = await pacedRun({ url, token: 't', paths: ['/'], rate: 100, duration: 0.3, connections: 2 });
    expect(r.answered).toBe(0);
    expect(r.errors).toBeGreaterThan(0);
  });
});
