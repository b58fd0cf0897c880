/**
 * A deadline for API requests. client-node sends with no timeout, so a request to an API server
 * that took the connection and then went silent (a paused or overloaded server, a WAN cut that
 * drops packets rather than refusing them) is pending forever, and whatever waits for it (the next
 * heartbeat, a leader's renewal) waits too. Here the requests of one attempt are aborted `ms` after
 * it began, on the caller's clock. Aborting destroys the request's socket, so a dead keep-alive
 * connection is not handed to the next request (kubelet closes its connections for the same reason).
 */
import * as k8s from '@kubernetes/client-node';
import type { Clock } from './timers.js';

/** The error an attempt ends with when its deadline passed first. */
export class DeadlineExceeded extends Error {
  constructor(what: string, readonly ms: number) {
    super(`${what}: no answer from the API server within ${ms} ms`);
    this.name = 'DeadlineExceeded';
  }
}

/**
 * Runs `attempt`, whose requests are each given `options`, and aborts those still in flight `ms`
 * after it began; the attempt then rejects with `DeadlineExceeded`.
 */
export async function withDeadline<T>(clock: Clock, ms: number, what: string, attempt: (options: k8s.ConfigurationOptions) => Promise<T>): Promise<T> {
  const controller = new AbortController();
  const timer = clock.setTimeout(() => controller.abort(), ms);
  // The object API takes observable middleware (client-node's own small Observable).
  const middleware: k8s.ObservableMiddleware = {
    pre: (ctx) => (ctx.setSignal(controller.signal), new k8s.Observable(Promise.resolve(ctx))),
    post: (ctx) => new k8s.Observable(Promise.resolve(ctx)),
  };
  const options: k8s.ConfigurationOptions = { middleware: [middleware], middlewareMergeStrategy: 'append' };
  try {
    return await attempt(options);
  } catch (err) {
    if (controller.signal.aborted) throw new DeadlineExceeded(what, ms);
    throw err;
  } finally {
    clock.clearTimeout(timer);
  }
}
