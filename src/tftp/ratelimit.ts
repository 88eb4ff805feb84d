/** Lets at most `limit` events through per `intervalMs`, and reports how many were suppressed. */
export class RateLimiter {
  private windowStart = 0;
  private count = 0;
  private suppressed = 0;

  constructor(
    private readonly limit: number,
    private readonly intervalMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Returns null when the event must be suppressed, else the number suppressed since the last pass. */
  take(): number | null {
    const t = this.now();
    if (t - this.windowStart >= this.intervalMs) {
      this.windowStart = t;
      this.count = 0;
    }
    if (this.count >= this.limit) {
      this.suppressed++;
      return null;
    }
    this.count++;
    const s = this.suppressed;
    this.suppressed = 0;
    return s;
  }
}
