// The HTTP server of every serving process (one-process serve and each cluster worker): node:http with
// the slow-client limits from config.ts, the API's fast path for a plain single GET lookup answered
// straight from node:http, everything else through @hono/node-server to `fetch`, and parser-level
// refusals (bad request line, header overflow, header timeout) answered with a catalog code.
import http from 'node:http';
import { getRequestListener } from '@hono/node-server';
import type { Config } from './config.ts';
import type { LookupFastPath } from '../lookup/api.ts';
import { answerClientError } from '../lookup/limits.ts';

type HttpLimits = Pick<Config, 'host' | 'headersTimeoutMs' | 'requestTimeoutMs' | 'keepAliveTimeoutMs'>;

export function createHttpServer(cfg: HttpLimits, fetch: (req: Request) => Response | Promise<Response>, fast?: LookupFastPath): http.Server {
  const viaHono = getRequestListener(fetch, { hostname: cfg.host });
  const server = http.createServer(
    {
      headersTimeout: cfg.headersTimeoutMs,
      requestTimeout: cfg.requestTimeoutMs,
      keepAliveTimeout: cfg.keepAliveTimeoutMs,
      // How late an expired headers/request timeout is noticed (Node's default is 30 s).
      connectionsCheckingInterval: Math.max(250, Math.min(5_000, Math.floor(cfg.headersTimeoutMs / 4))),
    },
    (req, res) => {
      if (fast === undefined || !fast(req, res)) void viaHono(req, res);
    },
  );
  server.on('clientError', answerClientError);
  return server;
}
