// Runs the export-file regeneration (a worker, lookup/exports/worker.ts) one at a time: a request while a
// run is under way queues exactly one more run, which starts after it, so the files always end up
// reflecting the last change. Override changes come in bursts (a console session, a script adding many),
// so they are debounced: the run starts once no change came for `debounceMs`.
export class ExportRegenerator {
  private running: Promise<void> | null = null;
  private again = false;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private readonly stop = new AbortController();

  /** `regenerate` should stop when `signal` aborts (serve shutting down); its files are written by rename. */
  constructor(private readonly regenerate: (signal: AbortSignal) => Promise<unknown>, private readonly debounceMs = 1000) {}

  /** Regenerates now (or right after the run under way); resolves when the files reflect this call. */
  run(): Promise<void> {
    if (this.closed) return Promise.resolve();
    if (this.running) {
      this.again = true; // the loop below runs once more before `running` settles
      return this.running;
    }
    this.running = (async () => {
      do {
        this.again = false;
        await this.regenerate(this.stop.signal).catch(() => {}); // the caller's regenerate logs its own failures
      } while (this.again && !this.closed);
    })().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  /** Regenerates `debounceMs` after the last of a burst of requests. */
  request(): void {
    if (this.closed) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.run();
    }, this.debounceMs);
    this.timer.unref();
  }

  /** Drops a pending request and stops the run under way (a 10M-indicator export takes minutes). */
  async close(): Promise<void> {
    this.closed = true;
    this.stop.abort();
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.running;
  }
}
