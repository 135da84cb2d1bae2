// Test fixture for sync: a real static HTTP server on 127.0.0.1 serving a published tree with ETag,
// If-None-Match / If-Modified-Since and single byte ranges — and hooks to make it hostile per path.
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';

export type Hook = (req: http.IncomingMessage, res: http.ServerResponse, file: string | null) => boolean | void;

export interface StaticServer {
  url: string;
  /** Every request seen: method, path and the Range / conditional headers. */
  log: { path: string; range?: string; inm?: string; status?: number }[];
  /** path (e.g. "/feeds/ipsum/latest.json" or a prefix ending in "*") → hook; return true when handled. */
  hooks: Map<string, Hook>;
  close(): Promise<void>;
}

export async function startStaticServer(root: string): Promise<StaticServer> {
  const log: StaticServer['log'] = [];
  const hooks = new Map<string, Hook>();
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const entry: StaticServer['log'][number] = { path: url.pathname, range: req.headers.range, inm: req.headers['if-none-match'] as string | undefined };
    log.push(entry);
    res.on('finish', () => (entry.status = res.statusCode));
    const rel = decodeURIComponent(url.pathname).replace(/^\/+/, '');
    const file = rel.split('/').includes('..') ? null : path.join(root, rel);
    const hook = hooks.get(url.pathname) ?? [...hooks].find(([k]) => k.endsWith('*') && url.pathname.startsWith(k.slice(0, -1)))?.[1];
    if (hook && hook(req, res, file && fs.existsSync(file) ? file : null)) return;
    if (!file || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404).end('not found');
      return;
    }
    const st = fs.statSync(file);
    const body = fs.readFileSync(file);
    const etag = `"${crypto.createHash('sha256').update(body).digest('hex').slice(0, 16)}"`;
    const lastModified = st.mtime.toUTCString();
    if (req.headers['if-none-match'] === etag || (!req.headers['if-none-match'] && req.headers['if-modified-since'] && Date.parse(req.headers['if-modified-since']) >= Math.floor(st.mtimeMs / 1000) * 1000)) {
      res.writeHead(304, { etag, 'last-modified': lastModified }).end();
      return;
    }
    const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (m) {
      const start = Number(m[1]);
      const end = m[2] ? Math.min(Number(m[2]), body.length - 1) : body.length - 1;
      if (start >= body.length) {
        res.writeHead(416, { 'content-range': `bytes */${body.length}` }).end();
        return;
      }
      res.writeHead(206, { 'content-range': `bytes ${start}-${end}/${body.length}`, 'content-length': end - start + 1, etag, 'accept-ranges': 'bytes' });
      res.end(body.subarray(start, end + 1));
      return;
    }
    res.writeHead(200, { 'content-length': body.length, etag, 'last-modified': lastModified, 'accept-ranges': 'bytes' });
    res.end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/`,
    log,
    hooks,
    close: () => new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    }),
  };
}
