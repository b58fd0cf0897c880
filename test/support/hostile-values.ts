/** Hostile values for trust tests (issue 10): what a node or a status writer can put where the runtime reads addresses and ranges. */

/** InternalIPs a node can give itself: the kubelet writes them and the API does not check them. */
export const HOSTILE_INTERNAL_IPS = [
  '192.168.1.13\nnetns exec rgt sh -c "id > /tmp/raven-pwned"',
  '10.0.0.1 dev lo',
  '0.0.0.0/1',
  '10.0.0.010',
  'evil.example.com',
  '-f',
  '127.0.0.1',
  'fe80::1%eth0',
  '::ffff:10.0.0.1',
  '0.0.0.0',
  '',
];
/** Pod ranges as Nodes, Calico blocks and annotations can carry them. */
export const HOSTILE_CIDRS = ['0.0.0.0/0', '0.0.0.0/1', '128.0.0.0/1', '::/0', '10.99.0.0/24 table main', '10.99.1.0/24\nroute add default via 1.2.3.4', '169.254.0.0/16', '127.0.0.0/8', '224.0.0.0/4', 'fe80::/64', '10.99.2.5/24', '10.99.3.0/33', 'ten.zero/8'];
