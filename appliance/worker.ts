// Starts a worker_thread from one of our TypeScript modules. The project runs from source through tsx;
// on Node 20, loader hooks passed to a worker as `execArgv: ['--import', tsx]` are not applied to the
// worker's own imports ("Unknown file extension .ts"), so a .ts worker starts as a tiny eval'd script.
// That script imports the worker's module graph compiled once into one ES module (esbuild, which tsx
// itself runs on), cached under node_modules/.cache/outpost/workers and keyed by the content of every
// source file in the graph; when that is not possible it registers tsx's ESM API in its own thread and
// imports the .ts module. Registering tsx costs each thread a loader-hooks thread of its own and a
// message round trip per module: ~0.2 s of the ~0.35 s the apply worker took to start (docs/performance.md).
import crypto from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parentPort, Worker, type WorkerOptions } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { asOutpostError } from './errors.ts';
import { backgroundPriority } from './worker-priority.ts';

const require = createRequire(import.meta.url);
let tsxApi: string | undefined;

function tsxBootstrap(moduleUrl: URL, priority: string): string {
  if (!tsxApi) {
    const tsxDir = path.dirname(require.resolve('tsx/package.json'));
    tsxApi = pathToFileURL(path.join(tsxDir, 'dist', 'esm', 'api', 'index.mjs')).href;
  }
  return `${priority}.then(() => import(${JSON.stringify(tsxApi)})).then(({ register }) => { register(); return import(${JSON.stringify(moduleUrl.href)}); });`;
}

// Stack traces in the compiled module name the .ts files and lines (inline source map).
const compiledBootstrap = (compiled: string, priority: string) =>
  `${priority}.then(() => { process.setSourceMapsEnabled(true); return import(${JSON.stringify(pathToFileURL(compiled).href)}); });`;

/** The project root (this file is appliance/worker.ts): bare imports in a compiled module resolve from its node_modules. */
const projectRoot = () => path.dirname(path.dirname(fileURLToPath(import.meta.url)));
export const workerCacheDir = () => path.join(projectRoot(), 'node_modules', '.cache', 'outpost', 'workers');
/** Bump when the build options below change: part of every cache key. */
const COMPILE_FORMAT = 2;
const STDIN = 'outpost-worker-entry.js';
const compiled = new Map<string, string | null>();

function graphHash(root: string, inputs: string[], esbuildVersion: string): string {
  const h = crypto.createHash('sha256').update(`${COMPILE_FORMAT}\0${process.version}\0${esbuildVersion}\0`);
  for (const f of inputs) h.update(`${f}\0`).update(fs.readFileSync(path.join(root, f))).update('\0');
  return h.digest('hex');
}

function writeAtomic(file: string, text: string): void {
  const tmp = `${file}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

/**
 * The worker module `entry` (a .ts file) compiled with its project imports into one ES module (packages
 * stay imports), from the cache when every input is unchanged, else built now (~50–80 ms) and cached.
 * The entry is compiled as imported for its effects (a worker answers through messages, not exports),
 * so what it exports for the main thread, e.g. filters.ts's function that starts filters.ts itself as a
 * worker with `new URL(import.meta.url)`, is left out. Null when it cannot be used: esbuild missing,
 * cache not writable (the worker then runs through tsx), or the compiled code still uses `import.meta`
 * for anything but `createRequire(import.meta.url)`: it would name the cache file, not the module.
 */
export function compiledWorker(entry: string): string | null {
  let out = compiled.get(entry);
  if (out === undefined) {
    try {
      out = compile(entry);
    } catch {
      out = null;
    }
    compiled.set(entry, out); // once per process: its workers run the code of one moment, like its main thread
  }
  return out;
}

function compile(entry: string): string | null {
  const root = projectRoot();
  const dir = workerCacheDir();
  const rel = path.relative(root, entry);
  if (rel.startsWith('..') || path.isAbsolute(rel)) return null;
  const name = rel.replace(/\.ts$/, '').replace(/[^A-Za-z0-9]+/g, '-');
  const manifestFile = path.join(dir, `${name}.json`);
  const esbuildVersion = (JSON.parse(fs.readFileSync(require.resolve('esbuild/package.json'), 'utf8')) as { version: string }).version;
  try {
    const m = JSON.parse(fs.readFileSync(manifestFile, 'utf8')) as { inputs: string[]; hash: string; file: string };
    const file = path.join(dir, m.file);
    if (m.hash === graphHash(root, m.inputs, esbuildVersion) && fs.existsSync(file)) return file;
  } catch {
    /* no usable cache entry: build */
  }
  const esbuild = require('esbuild') as typeof import('esbuild');
  const started = Date.now();
  const r = esbuild.buildSync({
    stdin: { contents: `import ${JSON.stringify(`./${path.basename(entry)}`)};`, resolveDir: path.dirname(entry), sourcefile: STDIN, loader: 'js' },
    absWorkingDir: root,
    bundle: true,
    packages: 'external',
    platform: 'node',
    format: 'esm',
    target: `node${process.versions.node}`,
    sourcemap: 'inline',
    sourcesContent: false,
    metafile: true,
    write: false,
    outfile: path.join(dir, `${name}.mjs`),
    logLevel: 'silent',
  });
  const text = r.outputFiles[0]!.text;
  if (/import\.meta/.test(text.replace(/\bcreateRequire\d*\(import\.meta\.url\)/g, ''))) return null;
  const inputs = Object.keys(r.metafile.inputs).filter((f) => path.basename(f) !== STDIN).sort();
  // A source edited while esbuild read it: not cached under a key that may not match what was compiled.
  if (inputs.some((f) => fs.statSync(path.join(root, f)).mtimeMs >= started - 1000)) return null;
  const hash = graphHash(root, inputs, esbuildVersion);
  const file = `${name}-${hash.slice(0, 16)}.mjs`;
  fs.mkdirSync(dir, { recursive: true });
  writeAtomic(path.join(dir, file), text);
  writeAtomic(manifestFile, JSON.stringify({ inputs, hash, file }));
  // Earlier compilations of this entry: a running process may still start workers from one, so only
  // those untouched for a day go.
  for (const old of fs.readdirSync(dir)) {
    if (old === file || !/^[0-9a-f]{16}\.mjs$/.test(old.slice(name.length + 1)) || !old.startsWith(`${name}-`)) continue;
    const f = path.join(dir, old);
    if (fs.statSync(f).mtimeMs < Date.now() - 86_400_000) fs.rmSync(f, { force: true });
  }
  return path.join(dir, file);
}

/** Starts a worker thread at background priority (appliance/worker-priority.ts). */
export function startWorker(moduleUrl: URL, options: WorkerOptions = {}): Worker {
  if (moduleUrl.pathname.endsWith('.ts')) {
    const priority = backgroundPriority();
    const js = moduleUrl.protocol === 'file:' ? compiledWorker(fileURLToPath(moduleUrl)) : null;
    return new Worker(js ? compiledBootstrap(js, priority) : tsxBootstrap(moduleUrl, priority), { ...options, eval: true });
  }
  return new Worker(moduleUrl, options);
}

/**
 * Runs a worker to completion: resolves with the payload of its `{type:'done'}` message, rejects with
 * its `{type:'error'}` payload, forwards `{type:'progress'}` messages.
 */
export function runWorker<T>(moduleUrl: URL, workerData: unknown, onProgress?: (p: any) => void, transferList?: any[], signal?: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const w = startWorker(moduleUrl, { workerData, transferList });
    let settled = false;
    // Aborting stops the thread where it is: only for work that is safe to cut (e.g. files written by rename).
    signal?.addEventListener('abort', () => {
      if (settled) return;
      settled = true;
      reject(new Error('stopped'));
      void w.terminate();
    }, { once: true });
    w.on('message', (msg: { type: string; [k: string]: any }) => {
      if (msg.type === 'progress') onProgress?.(msg);
      else if (msg.type === 'done') {
        settled = true;
        resolve(msg.result as T);
      } else if (msg.type === 'error') {
        settled = true;
        reject(msg.error);
      }
    });
    w.on('error', (e) => {
      if (!settled) {
        settled = true;
        reject(e);
      }
    });
    w.on('exit', (code) => {
      if (!settled) {
        settled = true;
        reject(new Error(`worker exited with code ${code} before finishing`));
      }
    });
  });
}

/**
 * The body of a worker-thread entry that works on a SQLite connection of its own (so the thread that
 * answers lookups never waits on it): opens `dbPath` (WAL, 30 s busy timeout, plus `pragmas`), runs
 * `fn`, answers runWorker with `{type:'done', result}` or `{type:'error', error:{code, message}}` (a
 * catalog code), and closes the connection.
 */
export async function workOnOwnConnection(dbPath: string, opts: { readonly?: boolean; pragmas?: string[] }, fn: (db: Database.Database) => Promise<unknown> | unknown): Promise<void> {
  const port = parentPort!;
  const db = new Database(dbPath, opts.readonly ? { readonly: true } : {});
  db.pragma('busy_timeout = 30000');
  if (!opts.readonly) db.pragma('journal_mode = WAL');
  for (const p of opts.pragmas ?? []) db.pragma(p);
  try {
    port.postMessage({ type: 'done', result: await fn(db) });
  } catch (e) {
    const err = asOutpostError(e);
    port.postMessage({ type: 'error', error: { code: err.code, message: err.message } });
  } finally {
    db.close();
  }
}
