// Worker-thread entry for applyStaged: its own SQLite connection, so the main thread keeps serving lookups.
// Started ahead of its job (startApply in apply.ts) it waits for a {type:'job'} message; else the job is
// its workerData.
import { once } from 'node:events';
import { parentPort, workerData } from 'node:worker_threads';
import { workOnOwnConnection } from '../appliance/worker.ts';
import { applyStaged } from './apply.ts';
import type { ApplyJob } from './import.ts';

const job: ApplyJob = (workerData as { waitForJob?: boolean } | null)?.waitForJob
  ? ((await once(parentPort!, 'message'))[0] as { job: ApplyJob }).job
  : (workerData as ApplyJob);
// A larger page cache for this connection only: a full package into a store holding other feeds inserts
// between their rows, and pages that stay cached are not spilled to the WAL before the commit.
await workOnOwnConnection(job.dbPath, { pragmas: ['cache_size = -131072'] }, (db) => {
  const staged = { ...job.staged, files: new Map(job.staged.files), cleanup: () => {} };
  return applyStaged(db, staged, job.limits, job.meta, (p) => parentPort!.postMessage({ type: 'progress', ...p }), job.filters);
});
