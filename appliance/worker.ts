// Starts a worker_thread from one of our TypeScript modules. The project runs from source through tsx,
// so a worker needs tsx's loader too — under `node bin/outpost.js` and under vitest alike.
import { Worker, type WorkerOptions } from 'node:worker_threads';

let tsxLoader: string | undefined;

function loaderArgs(): string[] {
  tsxLoader ??= import.meta.resolve('tsx');
  return ['--import', tsxLoader];
}

export function startWorker(moduleUrl: URL, options: WorkerOptions = {}): Worker {
  const execArgv = moduleUrl.pathname.endsWith('.ts') ? [...(options.execArgv ?? []), ...loaderArgs()] : options.execArgv;
  return new Worker(moduleUrl, { ...options, execArgv });
}

/**
 * Runs a worker to completion: resolves with the payload of its `{type:'done'}` message, rejects with
 * its `{type:'error'}` payload, forwards `{type:'progress'}` messages.
 */
export function runWorker<T>(moduleUrl: URL, workerData: unknown, onProgress?: (p: any) => void, transferList?: any[]): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const w = startWorker(moduleUrl, { workerData, transferList });
    let settled = false;
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
