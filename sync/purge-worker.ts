// Worker-thread entry for the scheduled purge: its own SQLite connection, so a purge waiting for the write
// lock (an apply in progress) never stalls lookups on the main thread.
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { asOutpostError } from '../appliance/errors.ts';
import { purgeExpired, type ExpiryDays } from './expiry.ts';

const job = workerData as { dbPath: string; days: ExpiryDays; batch?: number };
const db = new Database(job.dbPath);
db.pragma('busy_timeout = 30000');
db.pragma('journal_mode = WAL');
try {
  const result = await purgeExpired(db, { days: job.days, batch: job.batch, actor: 'purge', between: () => new Promise((r) => setImmediate(r)) });
  parentPort!.postMessage({ type: 'done', result });
} catch (e) {
  const err = asOutpostError(e);
  parentPort!.postMessage({ type: 'error', error: { code: err.code, message: err.message } });
} finally {
  db.close();
}
