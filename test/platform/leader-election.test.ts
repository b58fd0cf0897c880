/**
 * Leader election against an API server that takes requests and never answers: the leader must
 * stop leading before its lease could be taken over, not sit in a renewal that never returns.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { LeaderElector, RENEW_DEADLINE } from '../../src/platform/leader-election.ts';
import { startLab, waitFor } from '../support/apiserver-support.ts';

const NS = 'raven-system';
const LEASE_SECONDS = 6;

test('a leader whose renewals hang steps down within the renew deadline, before another replica could take the lease', async () => {
  const lab = await startLab();
  await lab.core.createNamespace({ body: { metadata: { name: NS } } });
  const events: string[] = [];
  let stoppedAt = 0;
  const elector = new LeaderElector(lab.kc, {
    namespace: NS, name: 'raven-controller', identity: 'ctl-a', leaseDurationSeconds: LEASE_SECONDS, retryPeriodMs: 200,
    onStartedLeading: () => events.push('started'),
    onStoppedLeading: () => (events.push('stopped'), (stoppedAt = Date.now())),
    log: (m) => events.push(m),
  });
  elector.start();
  try {
    await waitFor('leading', () => elector.isLeader);
    const hungFrom = Date.now();
    lab.api.faults.setLatency(60_000, { path: /\/leases\// });
    await waitFor('the leader to step down', () => stoppedAt > 0, LEASE_SECONDS * 1000 + 2000);
    // Another replica takes over once the record has not changed for a lease duration; the last
    // renewal that landed was before the hang began.
    assert.ok(stoppedAt - hungFrom < LEASE_SECONDS * 1000, `stepped down ${stoppedAt - hungFrom} ms into the hang`);
    assert.ok(stoppedAt - hungFrom >= LEASE_SECONDS * 1000 * RENEW_DEADLINE - 400, 'not before the renew deadline');
    assert.ok(events.some((e) => e.includes('no answer from the API server within 200 ms')), events.join('\n'));
    assert.ok(events.includes('lost leadership: could not renew within the renew deadline'), events.join('\n'));
    lab.api.faults.clear();
    await waitFor('leading again once the API answers', () => elector.isLeader, 3000);
  } finally {
    await elector.stop();
    await lab.api.close();
  }
});

test.run();
