/**
 * Errors of the executors: "failed to <verb> <object>: <why>", with the underlying error as `cause`,
 * so a log line names what could not be done and keeps what the kernel or the tool said.
 */

/** `failed to <what>: <the cause's message>`, the cause attached. */
export function failure(what: string, cause: unknown): Error {
  return new Error(`failed to ${what}: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
}

/** Runs `fn`; whatever it throws is rethrown as `failure(what, err)`. */
export async function attempt<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw failure(what, err);
  }
}
