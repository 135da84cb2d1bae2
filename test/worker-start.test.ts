// Worker threads start from their module graph compiled once into a cached ES module (appliance/worker.ts):
// the cache must follow every source edit, keep stack traces on the .ts lines, fall back to tsx when the
// compiled code could not stand in for the module, and the real apply worker must run from it.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { compiledWorker, runWorker, workerCacheDir } from '../appliance/worker.ts';
import { backgroundCpu, idleDemotions, idlePromotions, onIdlePromotion, priorityForks } from '../appliance/worker-priority.ts';

const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
// Inside the project (bare imports resolve from its node_modules), outside the sources.
const dir = fs.mkdtempSync(path.join(ROOT, 'node_modules', '.cache', 'outpost-test-worker-'));
fs.writeFileSync(path.join(dir, 'package.json'), '{"type":"module"}\n'); // package scopes stop at node_modules
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
  const prefix = path.relative(ROOT, dir).replace(/[^A-Za-z0-9]+/g, '-');
  for (const f of fs.readdirSync(workerCacheDir())) if (f.startsWith(prefix)) fs.rmSync(path.join(workerCacheDir(), f), { force: true });
});

// chrt as the policy setter finds it on PATH: the real one, logging its parent and arguments, so the tests see
// that every policy change comes from the one setter process and none is forked from this process.
const chrtLog = path.join(dir, 'chrt.log');
fs.mkdirSync(path.join(dir, 'bin'));
fs.writeFileSync(path.join(dir, 'bin', 'chrt'), `#!/bin/sh\necho "$PPID $*" >> '${chrtLog}'\nexec '${execFileSync('sh', ['-c', 'command -v chrt'], { encoding: 'utf8' }).trim()}' "$@"\n`, { mode: 0o755 });
process.env.PATH = `${path.join(dir, 'bin')}:${process.env.PATH}`;

/** Writes a source file dated a minute back (compile() caches nothing edited during its build). */
function write(name: string, text: string): string {
  const f = path.join(dir, name);
  fs.writeFileSync(f, text);
  const past = new Date(Date.now() - 60_000);
  fs.utimesSync(f, past, past);
  return f;
}

const entry = (helper: string) => `import { parentPort, workerData } from 'node:worker_threads';
import { answer } from './${helper}';
const n: number = workerData.n;
parentPort!.postMessage({ type: 'done', result: answer(n) });
`;

/** Runs the worker in a process of its own (each process compiles at most once per entry). */
function runInProcess(file: string): { result: number; compiled: string | null } {
  const code = `const w = await import(${JSON.stringify(pathToFileURL(path.join(ROOT, 'appliance', 'worker.ts')).href)});
const result = await w.runWorker(new URL(${JSON.stringify(pathToFileURL(file).href)}), { n: 20 });
console.log(JSON.stringify({ result, compiled: w.compiledWorker(${JSON.stringify(file)}) }));`;
  const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { cwd: ROOT, encoding: 'utf8' });
  return JSON.parse(out.trim().split('\n').pop()!);
}

describe('worker threads from compiled module graphs', () => {
  it('compiles the graph once, reuses it while the sources are unchanged and recompiles after an edit', () => {
    write('helper.ts', 'export const answer = (n: number): number => n * 2;\n');
    const main = write('entry.ts', entry('helper.ts'));
    const first = runInProcess(main);
    expect(first.result).toBe(40);
    expect(first.compiled).toMatch(/\.mjs$/);
    expect(path.dirname(first.compiled!)).toBe(workerCacheDir());
    const again = runInProcess(main);
    expect(again).toEqual(first);

    write('helper.ts', 'export const answer = (n: number): number => n * 3;\n');
    const edited = runInProcess(main);
    expect(edited.result).toBe(60);
    expect(edited.compiled).not.toBe(first.compiled);
  });

  it('keeps error stacks on the TypeScript file and line', async () => {
    write('thrower.ts', '// line 1\nexport function answer(n: number): number {\n  throw new Error(`no answer for ${n}`);\n}\n');
    const main = write('entry-throws.ts', entry('thrower.ts'));
    const err = await runWorker(pathToFileURL(main), { n: 7 }).then(() => null, (e: Error) => e);
    expect(compiledWorker(main)).toMatch(/\.mjs$/);
    expect(err?.message).toBe('no answer for 7');
    expect(err?.stack).toContain(`${path.join(dir, 'thrower.ts')}:3:9`);
  });

  it('runs a module whose compiled form would misname its own URL through tsx instead', async () => {
    const main = write('self.ts', `import { parentPort, workerData } from 'node:worker_threads';
parentPort!.postMessage({ type: 'done', result: new URL(import.meta.url).pathname.endsWith('/self.ts') ? workerData.n : -1 });
`);
    expect(compiledWorker(main)).toBeNull();
    expect(await runWorker(pathToFileURL(main), { n: 5 })).toBe(5);
  });

  it('the apply worker compiles with its whole graph', () => {
    const file = compiledWorker(fileURLToPath(new URL('../sync/apply-worker.ts', import.meta.url)));
    expect(file).toMatch(/\.mjs$/);
    const manifest = JSON.parse(fs.readFileSync(path.join(workerCacheDir(), 'sync-apply-worker.json'), 'utf8')) as { inputs: string[] };
    expect(manifest.inputs).toEqual(expect.arrayContaining(['sync/apply-worker.ts', 'sync/apply.ts', 'lookup/filters.ts', 'lookup/normalize.ts']));
    // Packages stay imports resolved from the project's node_modules, not copies.
    const text = fs.readFileSync(file!, 'utf8');
    expect(text).toMatch(/from "better-sqlite3"/);
    expect(text).toMatch(/from "tldts"/);
  });

  it('worker threads run at nice 10 under SCHED_IDLE by default, and with OUTPOST_WORKER_PRIORITY=nice under SCHED_OTHER', async () => {
    // Field 19 of /proc/thread-self/stat is the nice value, field 41 the policy (0 SCHED_OTHER, 5 SCHED_IDLE).
    const main = write('sched.ts', `import fs from 'node:fs';
import { parentPort } from 'node:worker_threads';
const st = fs.readFileSync('/proc/thread-self/stat', 'utf8');
const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
parentPort!.postMessage({ type: 'done', result: { nice: Number(f[16]), policy: Number(f[38]) } });
`);
    await withPolicy(undefined, async () => expect(await runWorker(pathToFileURL(main), {})).toEqual({ nice: 10, policy: 5 }));
    await withPolicy('idle', async () => expect(await runWorker(pathToFileURL(main), {})).toEqual({ nice: 10, policy: 5 }));
    await withPolicy('nice', async () => expect(await runWorker(pathToFileURL(main), {})).toEqual({ nice: 10, policy: 0 }));
  });

  it('a long job pins its thread to the last core this process may use (pinThisThread), still under SCHED_IDLE; the others stay free', async () => {
    const status = (field: string) => `(/^${field}:\\s*(.+)$/m.exec(fs.readFileSync('/proc/thread-self/status', 'utf8'))?.[1] ?? '')`;
    const main = write('pinned.ts', `import fs from 'node:fs';
import { parentPort } from 'node:worker_threads';
import { pinThisThread } from ${JSON.stringify(path.relative(dir, path.join(ROOT, 'appliance', 'worker-priority.ts')))};
const before = ${status('Cpus_allowed_list')};
pinThisThread();
const t0 = Date.now();
let cpus = before;
while (cpus === before && Date.now() - t0 < 5000) { await new Promise((r) => setTimeout(r, 5)); cpus = ${status('Cpus_allowed_list')}; }
const st = fs.readFileSync('/proc/thread-self/stat', 'utf8');
parentPort!.postMessage({ type: 'done', result: { before, cpus, policy: Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[38]) } });
`);
    const free = write('free.ts', `import fs from 'node:fs';
import { parentPort } from 'node:worker_threads';
await new Promise((r) => setTimeout(r, 200));
parentPort!.postMessage({ type: 'done', result: ${status('Cpus_allowed_list')} });
`);
    const mine = /^Cpus_allowed_list:\s*(.+)$/m.exec(fs.readFileSync('/proc/self/status', 'utf8'))![1];
    const cpu = backgroundCpu();
    const r = await withPolicy(undefined, () => runWorker<{ before: string; cpus: string; policy: number }>(pathToFileURL(main), {}));
    expect(r.before).toBe(mine);
    if (os.availableParallelism() >= 2) {
      expect(cpu).toBe(Number(mine.split(/[-,]/).pop()));
      expect(r.cpus).toBe(String(cpu));
    } else {
      expect(r.cpus).toBe(mine); // one core: nothing to pin
    }
    expect(r.policy).toBe(5);
    expect(await withPolicy(undefined, () => runWorker<string>(pathToFileURL(free), {}))).toBe(mine);
  });

  it('an idle-class worker thread starved by busy cores is put back to SCHED_OTHER at nice 10, to SCHED_IDLE once the cores are free again, and is still watched', async () => {
    // The worker spins until its policy changes (or 20 s), then sleeps in 50 ms steps until it is back to
    // SCHED_IDLE (or 40 s more), and reports both with the times they took.
    const main = write('starved.ts', `import fs from 'node:fs';
import { parentPort } from 'node:worker_threads';
const sched = () => { const st = fs.readFileSync('/proc/thread-self/stat', 'utf8'); const f = st.slice(st.lastIndexOf(')') + 2).split(' '); return { nice: Number(f[16]), policy: Number(f[38]) }; };
const t0 = Date.now();
let s = sched();
while (Date.now() - t0 < 200 || s.policy === 5) { if (Date.now() - t0 > 20_000) break; for (let i = 0; i < 1e5; i++); s = sched(); }
const promotedMs = Date.now() - t0;
const sleeper = new Int32Array(new SharedArrayBuffer(4));
let back = sched();
while (back.policy !== 5 && Date.now() - t0 < promotedMs + 40_000) { Atomics.wait(sleeper, 0, 0, 50); back = sched(); }
const backMs = Date.now() - t0 - promotedMs;
// Starved again (the test restarts the busy processes once it sees the demotion): promoted again.
let again = sched();
const t1 = Date.now();
while (again.policy === 5 && back.policy === 5 && Date.now() - t1 < 20_000) { for (let i = 0; i < 1e5; i++); again = sched(); }
const tid = Number(fs.readlinkSync('/proc/thread-self').split('/').pop());
parentPort!.postMessage({ type: 'done', result: { ...s, ms: promotedMs, back, backMs, again, tid } });
`);
    // Every core busy with normal-priority work: an idle-class thread gets almost no CPU. They stop as soon
    // as the guard reports the promotion, and the cores have room again.
    let busy: ReturnType<typeof spawn>[] = [];
    const startBusy = () => {
      busy = Array.from({ length: os.availableParallelism() + 1 }, () => spawn(process.execPath, ['-e', 'for (;;);'], { stdio: 'ignore' }));
    };
    const stopBusy = () => {
      for (const b of busy) b.kill('SIGKILL');
      busy = [];
    };
    const demotedBefore = idleDemotions();
    // Busy again once the guard has handed the thread back: it must still be watched and promoted again.
    const rebusy = setInterval(() => {
      if (idleDemotions() > demotedBefore && busy.length === 0) {
        clearInterval(rebusy);
        startBusy();
      }
    }, 50);
    startBusy();
    try {
      const before = idlePromotions();
      const told: number[] = [];
      onIdlePromotion((tid) => {
        told.push(tid); // serve logs it
        stopBusy();
      });
      type Sched = { nice: number; policy: number };
      type Report = Sched & { ms: number; back: Sched; backMs: number; again: Sched; tid: number };
      const r = await withPolicy(undefined, () => runWorker<Report>(pathToFileURL(main), {}));
      expect({ nice: r.nice, policy: r.policy }).toEqual({ nice: 10, policy: 0 });
      // Two starved one-second windows, then the switch (the worker's first look is at 200 ms, still idle-class).
      expect(r.ms).toBeGreaterThanOrEqual(200);
      // Five calm windows after the busy processes stopped: back to idle-class, nice unchanged.
      expect(r.back).toEqual({ nice: 10, policy: 5 });
      expect(r.backMs).toBeGreaterThanOrEqual(4000);
      expect(idleDemotions()).toBe(demotedBefore + 1);
      // Starved once more: promoted once more, and each promotion reported.
      expect(r.again).toEqual({ nice: 10, policy: 0 });
      expect(told).toEqual([r.tid, r.tid]);
      expect(idlePromotions()).toBe(before + 2);
      // Each change ran chrt from the one setter process: started once, never this process forking itself.
      // (Other processes of this file, runInProcess above, have setters of their own.)
      const calls = fs.readFileSync(chrtLog, 'utf8').trim().split('\n').map((l) => l.split(' ')).filter((c) => c.at(-1) === String(r.tid));
      expect(calls.map((c) => c[1])).toEqual(['--idle', '--other', '--idle', '--other']);
      expect(new Set(calls.map((c) => c[0])).size).toBe(1);
      expect(calls[0][0]).not.toBe(String(process.pid));
      expect(priorityForks()).toBe(1);
    } finally {
      clearInterval(rebusy);
      onIdlePromotion(null);
      stopBusy();
    }
  }, 90_000);
});

/** Runs `fn` with OUTPOST_WORKER_PRIORITY set to `value` (unset for undefined), restoring it after. */
async function withPolicy<T>(value: string | undefined, fn: () => Promise<T>): Promise<T> {
  const before = process.env.OUTPOST_WORKER_PRIORITY;
  try {
    if (value === undefined) delete process.env.OUTPOST_WORKER_PRIORITY;
    else process.env.OUTPOST_WORKER_PRIORITY = value;
    return await fn();
  } finally {
    if (before === undefined) delete process.env.OUTPOST_WORKER_PRIORITY;
    else process.env.OUTPOST_WORKER_PRIORITY = before;
  }
}
