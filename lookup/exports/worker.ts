// Worker-thread entry: regenerates the export files after an apply or an override change on its own read-only connection,
// so a large export never stalls the lookup path.
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { asOutpostError } from '../../appliance/errors.ts';
import type { ExpiryDays } from '../../sync/expiry.ts';
import { writeExportFiles } from './index.ts';

const { dbPath, dir, expiryDays } = workerData as { dbPath: string; dir: string; expiryDays?: ExpiryDays };
const db = new Database(dbPath, { readonly: true });
db.pragma('busy_timeout = 30000');
try {
  const files = await writeExportFiles(db, dir, { expiryDays });
  parentPort!.postMessage({ type: 'done', result: files });
} catch (e) {
  const err = asOutpostError(e);
  parentPort!.postMessage({ type: 'error', error: { code: err.code, message: err.message } });
} finally {
  db.close();
}
