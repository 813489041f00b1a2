/**
 * The sessions a listener is running, as plain callbacks (Session.ts) rather than fibers: what the
 * drain waits for and what shutdown cancels.
 */

/** Starts a task; calls `onEnd` once when it ends by itself; returns what cancels it. */
export type StartTask<A> = (onEnd: (outcome: A) => void) => () => void

export class LiveSessions {
  private readonly cancels = new Set<() => void>()
  private emptyWaiters: Array<() => void> = []

  get size(): number {
    return this.cancels.size
  }

  /** Run a task, tracked until it ends (`onEnd`) or is cancelled (`onCancel`). */
  run<A>(start: StartTask<A>, onEnd: (outcome: A) => void, onCancel: () => void): void {
    let ended = false
    let cancel: (() => void) | undefined
    const stop = () => {
      cancel?.()
      onCancel()
    }
    cancel = start((outcome) => {
      ended = true
      this.cancels.delete(stop)
      if (this.cancels.size === 0) this.wakeEmptyWaiters()
      onEnd(outcome)
    })
    if (!ended) this.cancels.add(stop)
  }

  /** Resolves once no session is running. */
  whenEmpty(): Promise<void> {
    if (this.cancels.size === 0) return Promise.resolve()
    return new Promise((resolve) => this.emptyWaiters.push(resolve))
  }

  /** Cancel every running session. */
  cancelAll(): void {
    const all = [...this.cancels]
    this.cancels.clear()
    for (const stop of all) stop()
    this.wakeEmptyWaiters()
  }

  private wakeEmptyWaiters() {
    const waiters = this.emptyWaiters
    this.emptyWaiters = []
    for (const wake of waiters) wake()
  }
}
