// Worker-thread entry: regenerates the export files after an apply or an override change on its own read-only connection,
// so a large export never stalls the lookup path.
import { workerData } from 'node:worker_threads';
import { workOnOwnConnection } from '../../appliance/worker.ts';
import { pinThisThread } from '../../appliance/worker-priority.ts';
import type { ExportFileSet } from '../../appliance/types.ts';
import type { SourceOptions } from './source.ts';
import { writeExportFiles } from './index.ts';

const { dbPath, dir, policy, files } = workerData as { dbPath: string; dir: string; policy: SourceOptions; files: ExportFileSet[] };
// Minutes of work at 10M indicators: on one core, so the lookups on the other keep it to themselves
// (appliance/worker-priority.ts).
pinThisThread();
await workOnOwnConnection(dbPath, { readonly: true }, (db) => writeExportFiles(db, dir, { ...policy, files }));
