// Worker-thread entry for the scheduled purge: its own SQLite connection, so a purge waiting for the write
// lock (an apply in progress) never stalls lookups on the main thread.
import { workerData } from 'node:worker_threads';
import { workOnOwnConnection } from '../appliance/worker.ts';
import { purgeExpired, type ExpiryDays } from './expiry.ts';

const job = workerData as { dbPath: string; days: ExpiryDays; batch?: number };
await workOnOwnConnection(job.dbPath, {}, (db) =>
  purgeExpired(db, { days: job.days, batch: job.batch, actor: 'purge', between: () => new Promise((r) => setImmediate(r)) }),
);
