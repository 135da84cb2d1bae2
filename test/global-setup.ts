// Every test run writes its temporary files (data dirs, packages, browser profiles, consumers' configs)
// under one directory of its own, removed when the run ends: a run of `npm test` leaves nothing in the
// system's temp dir. The test processes and the children they spawn (the CLI, servers, Chromium, Suricata)
// all take it from TMPDIR, which os.tmpdir() reads. OUTPOST_KEEP_TEST_TMP=1 keeps it, to look at a failure.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export default function setup(): () => void {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'outpost-tests-'));
  process.env.TMPDIR = dir;
  return () => {
    if (process.env.OUTPOST_KEEP_TEST_TMP) {
      console.log(`test files kept in ${dir}`);
      return;
    }
    fs.rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
  };
}
