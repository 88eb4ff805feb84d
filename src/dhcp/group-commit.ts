/**
 * Group commit for a lease backend: work committed during one turn of the event loop is flushed together,
 * after that turn, by one flush at a time. Each backend brings its own flush (fdatasync, a SQL statement).
 */
export class GroupCommit {
  private scheduled = false;
  private flushing: Promise<void> | undefined;

  constructor(
    private readonly hasPending: () => boolean,
    /** Flushes until nothing is pending; never rejects (each backend settles its own waiters). */
    private readonly flushLoop: () => Promise<void>,
  ) {}

  schedule(): void {
    if (this.scheduled || this.flushing) return;
    this.scheduled = true;
    // setImmediate runs after the poll phase: every datagram read in this turn has been handled by then.
    setImmediate(() => {
      this.scheduled = false;
      this.flushing = this.flushLoop().finally(() => {
        this.flushing = undefined;
        if (this.hasPending()) this.schedule();
      });
    });
  }

  /** Resolves once everything committed so far has been flushed. */
  async settled(): Promise<void> {
    while (this.hasPending() || this.flushing || this.scheduled) {
      if (this.flushing) await this.flushing;
      else await new Promise<void>((r) => setImmediate(r));
    }
  }
}
