// GET /api/v1/export/<format>: the CLI's exports, streamed over HTTP (scope `export`, checked by the API's scope table in lookup/limits.ts).
import type { Hono } from 'hono';
import type { DB } from '../../appliance/db.ts';
import { ERRORS, isOutpostError } from '../../appliance/errors.ts';
import type { AppEnv } from '../api.ts';
import { EXPORT_FILE_NAMES, contentType, exportFormat, type ExportFormat } from './index.ts';
import type { SourceOptions } from './source.ts';

/** `opts`: the default lifetimes and stale limit the lookup engine uses (policyOptionsOf(cfg), appliance/freshness.ts), so exports agree with lookups. */
export function mountExports(db: DB, opts: SourceOptions = {}) {
  return (app: Hono<AppEnv>) => {
    app.get('/api/v1/export/:format', (c) => {
      const format = c.req.param('format');
      let chunks: Iterable<string>;
      let type: string;
      try {
        type = contentType(format);
        chunks = exportFormat(db, format, opts);
      } catch (e) {
        if (isOutpostError(e)) return c.json({ error: e.toJSON() }, ERRORS[e.code].status as 400);
        throw e;
      }
      const encoder = new TextEncoder();
      const it = chunks[Symbol.iterator]();
      const body = new ReadableStream<Uint8Array>({
        pull(controller) {
          const next = it.next();
          if (next.done) controller.close();
          else controller.enqueue(encoder.encode(next.value));
        },
        cancel() {
          it.return?.();
        },
      });
      return new Response(body, {
        headers: { 'content-type': type, 'content-disposition': `attachment; filename="${EXPORT_FILE_NAMES[format as ExportFormat]}"` },
      });
    });
  };
}
