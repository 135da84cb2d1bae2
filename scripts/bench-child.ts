// The bench's measured phases that run in a fresh process of their own (scripts/bench-import.ts,
// scripts/bench-inproc.ts): the parent forks the script with one JSON input file, the child answers with
// one message. A fresh process measures what a user's process would do — its memory and its speed are not
// those of the bench process, which holds the generated data set (GiBs at 10M).
import { fork } from 'node:child_process';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';

/** Parent side: forks `script` (a .ts file, run via tsx) on `inputFile`; resolves with its result. */
export function runChild<T>(script: URL, inputFile: string, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const child = fork(fileURLToPath(script), [inputFile], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    let settled = false;
    child.once('message', (m: { result?: T; error?: string }) => {
      settled = true;
      if (m.result) resolve(m.result);
      else reject(new Error(`${what}: ${m.error}`));
    });
    child.once('exit', (code) => {
      if (!settled) reject(new Error(`${what}: process exited with ${code}`));
    });
  });
}

/**
 * Child side: when `moduleUrl` is the script this process was forked with, reads the input file named by
 * argv[2], runs `fn` on it and sends its result (or its error) to the parent, then exits.
 */
export function childMain<I, T>(moduleUrl: string, fn: (input: I) => T | Promise<T>): void {
  if (!process.send || !process.argv[1] || fs.realpathSync(process.argv[1]) !== fs.realpathSync(fileURLToPath(moduleUrl))) return;
  void (async () => {
    try {
      const input = JSON.parse(fs.readFileSync(process.argv[2], 'utf8')) as I;
      const result = await fn(input);
      process.send!({ result }, () => process.exit(0));
    } catch (e) {
      process.send!({ error: String((e as Error)?.stack ?? e) }, () => process.exit(1));
    }
  })();
}
