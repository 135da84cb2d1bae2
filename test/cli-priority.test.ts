// Batch commands (import, sync, …) run every thread at nice 10, so a shell's `outpost import` beside a
// serving appliance does not compete with the lookups at their priority (bin/outpost.js); serve does not.
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { BIN, ROOT, cli, serve, tmpDir } from './helpers.ts';

/** The nice value of every thread of a live process, from /proc. */
function threadNices(pid: number): number[] {
  return fs.readdirSync(`/proc/${pid}/task`).flatMap((tid) => {
    try {
      const st = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      return [Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[16])];
    } catch {
      return []; // the thread ended meanwhile
    }
  });
}

describe('CLI priority', () => {
  const work = tmpDir('outpost-nice-');
  const dataDir = path.join(work, 'var');
  afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

  it('`outpost sync` runs every thread at nice 10 while it works; `outpost serve` stays at nice 0', async () => {
    // An upstream that holds every request: the sync is caught mid-work, fully started.
    let arrived: () => void = () => {};
    const reached = new Promise<void>((r) => (arrived = r));
    const held: http.ServerResponse[] = [];
    const upstream = http.createServer((_req, res) => {
      held.push(res);
      arrived();
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    const port = (upstream.address() as { port: number }).port;
    try {
      const add = cli(['upstream', 'add', 'slow', `http://127.0.0.1:${port}/`], { dataDir });
      expect(add.code, add.stderr).toBe(0);
      const child = spawn(process.execPath, [BIN, 'sync', 'slow'], { cwd: ROOT, env: { ...process.env, OUTPOST_DATA_DIR: dataDir, OUTPOST_LOG_LEVEL: 'warn' }, stdio: 'ignore' });
      try {
        await reached;
        const nices = threadNices(child.pid!);
        expect(nices.length).toBeGreaterThan(1); // the main thread and Node's own threads
        expect(nices.every((n) => n >= 10), `thread nice values: ${nices.join(' ')}`).toBe(true);
      } finally {
        const gone = new Promise((r) => child.once('exit', r));
        child.kill('SIGKILL');
        await gone;
      }
    } finally {
      for (const res of held) res.destroy();
      upstream.close();
    }

    const served = await serve(dataDir, [], { OUTPOST_NO_DEMO: '1' });
    try {
      const st = fs.readFileSync(`/proc/${served.proc.pid}/stat`, 'utf8');
      expect(Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[16]), 'serve main thread').toBe(0);
    } finally {
      await served.stop();
    }
  }, 120_000);
});
