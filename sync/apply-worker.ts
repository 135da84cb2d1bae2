// Worker-thread entry for applyStaged: its own SQLite connection, so the main thread keeps serving lookups.
// Started ahead of its job (startApply in apply.ts), it first stages and verifies the package when asked
// ({type:'stage'}: tar parsing, hashing and the signature check, at the worker's lower priority instead of
// on the thread that answers lookups), then waits for a {type:'job'} message; else the job is its workerData.
import { once } from 'node:events';
import { parentPort, workerData } from 'node:worker_threads';
import { asOutpostError } from '../appliance/errors.ts';
import { workOnOwnConnection } from '../appliance/worker.ts';
import { pinThisThread } from '../appliance/worker-priority.ts';
import { applyStaged, stageVerified, type StageRequest, type StagedTransfer } from './apply.ts';
import type { ApplyJob } from './import.ts';

async function stage(req: StageRequest): Promise<StagedTransfer> {
  const { cleanup: _, ...rest } = await stageVerified(req);
  return rest;
}

async function nextJob(): Promise<ApplyJob> {
  for (;;) {
    const msg = (await once(parentPort!, 'message'))[0] as { type: 'stage'; req: StageRequest } | { type: 'job'; job: ApplyJob };
    if (msg.type === 'job') return msg.job;
    try {
      parentPort!.postMessage({ type: 'staged', staged: await stage(msg.req) });
    } catch (e) {
      const err = asOutpostError(e);
      parentPort!.postMessage({ type: 'stage-error', error: { code: err.code, message: err.message } });
    }
  }
}

// On one core, so the lookups on the other keep it to themselves (appliance/worker-priority.ts): staging,
// verification and the apply.
pinThisThread();
const job: ApplyJob = (workerData as { waitForJob?: boolean } | null)?.waitForJob ? await nextJob() : (workerData as ApplyJob);
// A larger page cache for this connection only: a full package into a store holding other feeds inserts
// between their rows, and pages that stay cached are not spilled to the WAL before the commit.
await workOnOwnConnection(job.dbPath, { pragmas: ['cache_size = -131072'] }, (db) => {
  const staged = { ...job.staged, files: new Map(job.staged.files), cleanup: () => {} };
  return applyStaged(db, staged, job.limits, job.meta, (p) => parentPort!.postMessage({ type: 'progress', ...p }), job.filters);
});
