// Worker-thread entry for applyStaged: its own SQLite connection, so the main thread keeps serving lookups.
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { asOutpostError } from '../appliance/errors.ts';
import { applyStaged } from './apply.ts';
import type { ApplyJob } from './import.ts';

const job = workerData as ApplyJob;
const db = new Database(job.dbPath);
db.pragma('busy_timeout = 30000');
db.pragma('journal_mode = WAL');
try {
  const staged = { ...job.staged, files: new Map(job.staged.files), cleanup: () => {} };
  const result = await applyStaged(db, staged, job.limits, job.meta, (p) => parentPort!.postMessage({ type: 'progress', ...p }));
  parentPort!.postMessage({ type: 'done', result });
} catch (e) {
  const err = asOutpostError(e);
  parentPort!.postMessage({ type: 'error', error: { code: err.code, message: err.message } });
} finally {
  db.close();
}
