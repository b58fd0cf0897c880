/** Runs a started service until SIGTERM or SIGINT, then stops it; resolves once it has stopped. */
import type { Logger } from './log.js';

export function runUntilSignal(stop: () => Promise<void>, log: Logger, message = 'shutting down'): Promise<void> {
  return new Promise<void>((resolve) => {
    const onSignal = (signal: string): void => {
      log.info(message, { signal });
      void stop().then(resolve);
    };
    process.once('SIGTERM', () => onSignal('SIGTERM'));
    process.once('SIGINT', () => onSignal('SIGINT'));
  });
}
