// Scheduling of our worker threads (applies, filter builds, export regeneration, purges, filter loads, the
// hit-log writer): background work yields the CPU to the threads that answer lookups, which matters on a
// small machine (2 cores) during a large apply. Linux only: the policy is per thread (the thread id from
// /proc/thread-self); elsewhere, or when refused, a thread runs at normal priority.
//
// - `nice` (OUTPOST_WORKER_PRIORITY=nice): nice 10.
// - `idle` (the default): nice 10 and the SCHED_IDLE policy (`chrt --idle`, util-linux). The kernel then
//   counts a core that runs only such threads as idle and wakes a lookup thread there at once; at nice 10
//   alone it could leave both HTTP workers of a 2-core machine on one core for ~10 ms while the other ran
//   an apply. Lookups at half load during a 1M-change delta on the 10M store: p99 median 4.29 ms (4.02–6.03)
//   against 5.04 ms (3.99–8.36) at nice 10, eight and seven alternating runs (docs/performance.md).
//   An idle-class thread gets almost no CPU while the cores are busy with normal work, so under sustained
//   full load a sync would wait indefinitely: the starvation guard below puts a thread that has spent most
//   of two seconds in a row waiting for a CPU back to SCHED_OTHER at nice 10, and hands it back to
//   SCHED_IDLE once the cores have had room for it for five seconds in a row (idle time plus what the
//   promoted threads ran themselves, at least 30 % of the cores). Without the way back, a burst of full
//   load left the loader threads at nice 10 for the process's life, and the next delta apply met lookups
//   at that policy (session 8's 10M bench: delta p99 6.53 ms, against 4.48 in session 7's with none).
//
// The policy is set by `chrt`, which means a fork. Forking a serving process (200+ MiB resident at 10M:
// its page tables are copied and every page it writes next faults once) held its event loop 4–9 ms per
// call, and the guard changed several threads at once. So each process starts one small shell at its
// start (policySetter: forked while the process is small) and hands it `<policy> <tid>` lines; the shell
// forks chrt, itself a few MiB. A new thread asks for its policy through a BroadcastChannel and waits
// (at most 250 ms) until it has it, so it runs its job under its policy as before.
//
// A long background job (the export regeneration: minutes at 10M indicators) also asks to be pinned to one
// core, the last this process may use (pinThisThread; `taskset` from the same shell). Left free to move, an
// idle-class thread that runs for minutes is preempted by each lookup that wakes on its core and moved to
// the other one, and the lookups on both cores pay for it: on the 10M store at 20k lookups/s, p99 3.6–5.5 ms
// while the exports were rewritten, 1.6–2.4 ms with the same thread pinned to one core, in alternating 8 s
// rounds (docs/performance.md). The apply (sync/apply-worker.ts: staging, verification, the transaction)
// is pinned the same way: on the 10M store its 1M-change delta gave the lookups at half load p99 2.79 ms
// (the bare server beside it 2.49), against 5.58–6.61 (bare 7.83–9.64) free to move, while the apply took
// 37 s instead of 27–30 (docs/performance.md, session 15). Session 11 had found pinning the apply worse, with
// a load generator that stalled itself and counted its own pauses as latency.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { BroadcastChannel } from 'node:worker_threads';

const WORKER_NICE = 10;
/** What serve logs (warn) when the guard puts a thread back to normal scheduling. */
export const STARVED_MESSAGE = 'a background worker thread waited for a CPU for 2 s under SCHED_IDLE: it runs at normal scheduling, nice 10, until the cores have idle time again (the cores are busy; OUTPOST_WORKER_PRIORITY)';
export const WORKER_PRIORITY_ENV = 'OUTPOST_WORKER_PRIORITY';

/** The policy new worker threads take: `idle` unless the environment says `nice` (serve exports its config). */
export function workerPolicy(env: NodeJS.ProcessEnv = process.env): 'nice' | 'idle' {
  return env[WORKER_PRIORITY_ENV] === 'nice' ? 'nice' : 'idle';
}

/**
 * For a worker thread about to start: decides its policy once (workerPolicy), starts this process's
 * starvation guard when that is `idle`, and returns the code the thread runs first (an eval'd prefix of its
 * bootstrap, see appliance/worker.ts) to take that policy, so the thread and the guard never disagree.
 */
export function backgroundPriority(): string {
  const idle = workerPolicy() === 'idle' && policySetter() !== null;
  if (idle) startIdleGuard();
  // nice in the thread itself (setpriority takes a thread id, no fork); SCHED_IDLE from the setter.
  return `Promise.all([import('node:fs'), import('node:os'), import('node:worker_threads')]).then(async ([fs, os, wt]) => { try { const tid = Number(fs.readlinkSync('/proc/thread-self').split('/').pop()); os.setPriority(tid, ${WORKER_NICE}); if (${idle}) { const ch = new wt.BroadcastChannel(${JSON.stringify(CHANNEL)}); ch.postMessage(tid); ch.close(); const policy = () => { const st = fs.readFileSync('/proc/thread-self/stat', 'utf8'); return Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[38]); }; const t0 = Date.now(); while (policy() !== ${SCHED_IDLE} && Date.now() - t0 < ${APPLY_WAIT_MS}) await new Promise((r) => setTimeout(r, 2)); } } catch {} })`;
}

/** Where a new thread asks this process's setter for SCHED_IDLE (a BroadcastChannel reaches every thread of the process). */
const CHANNEL = 'outpost-worker-priority';
/** How long a new thread waits for its policy before it runs its job anyway (the setter takes ~2–5 ms). */
const APPLY_WAIT_MS = 250;

type PolicySetter = { set(policy: 'idle' | 'other', tid: number | string): void };
let setter: (PolicySetter & { child: ChildProcess }) | null | undefined;
/** Setter shells this process has started (tests: one, however many threads it changed). */
let forks = 0;

/**
 * This process's policy setter (started on the first call; null where there is none: not Linux, no `sh`,
 * or it ended). Serving processes call it at their start, while they are small. It writes nothing back:
 * callers see the result in /proc.
 */
export function policySetter(): PolicySetter | null {
  if (setter === undefined) {
    setter = null;
    if (process.platform !== 'linux') return null;
    try {
      // `command -v` first: without chrt the setter ends at once and threads stay at nice 10 without waiting.
      const child = spawn('sh', ['-c', 'command -v chrt >/dev/null || exit 3; while read -r p t c; do if [ "$p" = pin ]; then taskset -pc "$c" "$t" >/dev/null 2>&1; else chrt "--$p" --pid 0 "$t"; fi; done'], { stdio: ['pipe', 'ignore', 'ignore'] });
      forks++;
      const set: PolicySetter['set'] = (policy, tid) => child.stdin!.write(`${policy} ${tid}\n`);
      const channel = new BroadcastChannel(CHANNEL);
      channel.onmessage = (e: unknown) => {
        const data = (e as { data: unknown }).data;
        if (typeof data === 'number') set('idle', data);
        else if (data && typeof data === 'object' && typeof (data as { pin?: unknown }).pin === 'number') {
          const cpu = backgroundCpu();
          if (cpu !== null) child.stdin!.write(`pin ${(data as { pin: number }).pin} ${cpu}\n`);
        }
      };
      channel.unref();
      const ended = () => {
        if (setter?.child === child) setter = null;
        channel.close();
      };
      child.on('error', ended).on('exit', ended);
      child.stdin!.on('error', () => {}); // EPIPE once it ended: 'exit' follows
      child.unref();
      (child.stdin as unknown as { unref(): void }).unref();
      setter = { child, set };
    } catch {
      setter = null;
    }
  }
  return setter;
}

/**
 * Called by a worker thread that runs a long job (lookup/exports/worker.ts): asks this process's setter to
 * pin the calling thread to one core (backgroundCpu). Asynchronous and best effort: without a setter (not
 * Linux, OUTPOST_WORKER_PRIORITY=nice, no `sh`), without `taskset`, or with one core, the thread stays free.
 */
export function pinThisThread(): void {
  try {
    const tid = Number(fs.readlinkSync('/proc/thread-self').split('/').pop());
    const ch = new BroadcastChannel(CHANNEL);
    ch.postMessage({ pin: tid });
    ch.close();
  } catch {
    /* not Linux: nothing to pin */
  }
}

/** The core long background jobs are pinned to: the last one this process may run on; null with fewer than two. */
export function backgroundCpu(): number | null {
  try {
    const line = /^Cpus_allowed_list:\s*(.+)$/m.exec(fs.readFileSync('/proc/self/status', 'utf8'))?.[1] ?? '';
    const cpus = line.split(',').flatMap((r) => {
      const [a, b = a] = r.split('-').map(Number);
      return Number.isInteger(a) && Number.isInteger(b) ? Array.from({ length: b - a + 1 }, (_, i) => a + i) : [];
    });
    return cpus.length >= 2 ? cpus[cpus.length - 1] : null;
  } catch {
    return null;
  }
}

/** Processes this process has forked to set policies (the setter: one, however many threads it changed). */
export function priorityForks(): number {
  return forks;
}

/** Policy number of SCHED_IDLE in /proc/<pid>/task/<tid>/stat (field 41). */
const SCHED_IDLE = 5;
/** How often the guard looks at this process's idle-class threads. */
const GUARD_MS = 1000;
/** A window counts as starved when the thread spent more than this share of it runnable but not running. */
const STARVED_SHARE = 0.8;
/** Starved windows in a row before the thread is put back to SCHED_OTHER. */
const STARVED_WINDOWS = 2;
/** Share of all cores idle or running the promoted threads that makes a window calm. */
const CALM_SHARE = 0.3;
/** Calm windows in a row before the promoted threads go back to SCHED_IDLE. */
const CALM_WINDOWS = 5;

interface Sched {
  policy: number;
  /** Nanoseconds on a CPU and waiting on a run queue (schedstat), since the thread started. */
  run: number;
  wait: number;
}

/** Nanoseconds thread `tid` of this process has run and waited on a run queue since it started (throws once it ended). */
function schedstat(tid: string): { run: number; wait: number } {
  const [run, wait] = fs.readFileSync(`/proc/self/task/${tid}/schedstat`, 'utf8').split(' ').map(Number);
  return { run, wait };
}

function readSched(tid: string): Sched | null {
  try {
    const st = fs.readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
    const policy = Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[38]);
    if (policy !== SCHED_IDLE) return { policy, run: 0, wait: 0 };
    return { policy, ...schedstat(tid) };
  } catch {
    return null; // the thread ended, or no /proc
  }
}

let timer: NodeJS.Timeout | null = null;
let onPromote: ((tid: number) => void) | null = null;
const watched = new Map<string, { run: number; wait: number; starved: number }>();
/** Threads put back to SCHED_OTHER by the guard in this process, and back to SCHED_IDLE after that. */
let promotions = 0;
let demotions = 0;
/** Threads the guard promoted that have not gone back to SCHED_IDLE yet. */
const promoted = new Set<string>();
let calm = 0;
/** Until then (ms) the guard keeps running after a demotion, so the threads' new policy is seen and watched. */
let watchUntil = 0;
/** The cores' idle and total time (/proc/stat, clock ticks) and the promoted threads' run time (ns) at the last tick. */
let cores: { idle: number; total: number; ran: number } | null = null;

/** Share of the cores' time since the last call that was idle or ran a promoted thread; null on the first call. */
function roomShare(): number | null {
  let idle: number;
  let total: number;
  try {
    const n = fs.readFileSync('/proc/stat', 'utf8').slice(0, 200).split('\n')[0].trim().split(/\s+/).slice(1, 9).map(Number);
    idle = n[3] + n[4]; // idle, iowait
    total = n.reduce((a, b) => a + b, 0);
  } catch {
    return null;
  }
  let ran = 0;
  for (const tid of promoted) {
    try {
      ran += schedstat(tid).run;
    } catch {
      promoted.delete(tid); // the thread ended
    }
  }
  const prev = cores;
  cores = { idle, total, ran };
  if (prev === null || total <= prev.total) return null;
  // /proc/stat counts USER_HZ (100 per second) ticks over all cores; schedstat nanoseconds.
  const ranTicks = Math.max(0, ran - prev.ran) / 1e7;
  return Math.min(1, (idle - prev.idle + ranTicks) / (total - prev.total));
}

/** Every this many ticks the guard lists all of the process's threads; in between it reads only those it watches. */
const RESCAN_TICKS = 5;
let tick = 0;

/**
 * One look at the idle-class threads of this process (~100 µs for a full scan of 16 threads, a few µs per
 * watched thread otherwise); stops the guard when there is none.
 */
function guardTick(): void {
  let tids: string[];
  if (tick++ % RESCAN_TICKS === 0 || watched.size === 0) {
    try {
      tids = fs.readdirSync('/proc/self/task');
    } catch {
      tids = [];
    }
  } else tids = [...watched.keys()];
  const live = new Set<string>();
  for (const tid of tids) {
    const s = readSched(tid);
    if (s === null || s.policy !== SCHED_IDLE) continue;
    live.add(tid);
    const prev = watched.get(tid);
    if (!prev) {
      watched.set(tid, { run: s.run, wait: s.wait, starved: 0 });
      continue;
    }
    const run = s.run - prev.run;
    const wait = s.wait - prev.wait;
    prev.starved = wait > STARVED_SHARE * (run + wait) && wait > 0.5 * GUARD_MS * 1e6 ? prev.starved + 1 : 0;
    prev.run = s.run;
    prev.wait = s.wait;
    if (prev.starved >= STARVED_WINDOWS) {
      live.delete(tid);
      promotions++;
      promoted.add(tid);
      calm = 0;
      // SCHED_OTHER keeps the thread's nice value (10). Asynchronous: a lookup thread never waits for it.
      policySetter()?.set('other', tid);
      onPromote?.(Number(tid));
    }
  }
  for (const tid of watched.keys()) if (!live.has(tid)) watched.delete(tid);
  if (promoted.size > 0) {
    const share = roomShare();
    calm = share !== null && share >= CALM_SHARE ? calm + 1 : 0;
    if (calm >= CALM_WINDOWS) {
      // Back to idle-class (nice stays 10); the next full scan watches them again.
      const set = policySetter();
      for (const tid of promoted) set?.set('idle', tid);
      demotions += promoted.size;
      promoted.clear();
      calm = 0;
      cores = null;
      tick = 0; // full scans until they are watched again (chrt is asynchronous)
      watchUntil = Date.now() + RESCAN_TICKS * GUARD_MS;
    }
  } else cores = null;
  if (watched.size === 0 && promoted.size === 0 && Date.now() >= watchUntil) stopIdleGuard();
}

/** Starts the starvation guard of this process (idempotent; called whenever an idle-class thread starts). */
function startIdleGuard(): void {
  if (timer !== null || process.platform !== 'linux') return;
  timer = setInterval(guardTick, GUARD_MS);
  timer.unref();
}

function stopIdleGuard(): void {
  if (timer !== null) clearInterval(timer);
  timer = null;
  watched.clear();
  tick = 0;
}

/**
 * For a serving process at its start: `fn` (its log) hears of every thread the guard promotes, and the
 * policy setter starts now, while the process is small (see policySetter).
 */
export function prepareWorkerPriority(fn: (tid: number) => void): void {
  onIdlePromotion(fn);
  if (workerPolicy() === 'idle') policySetter();
}

/** Tells `fn` (serve's log) about every thread the guard puts back to SCHED_OTHER in this process. */
export function onIdlePromotion(fn: ((tid: number) => void) | null): void {
  onPromote = fn;
}

/** Threads the guard has put back to SCHED_OTHER in this process (tests, diagnostics). */
export function idlePromotions(): number {
  return promotions;
}

/** Promoted threads the guard has handed back to SCHED_IDLE in this process (tests, diagnostics). */
export function idleDemotions(): number {
  return demotions;
}
