/**
 * Which nodes belong to which Gateway: the Gateway's nodeSelector, or the node being named in the
 * `raven-gitops.io/member-nodes` annotation (the compiler writes explicit node names there, because
 * one LabelSelector cannot express "these labels OR these names"). Pure.
 */
import { MEMBER_NODES_ANNOTATION } from '../contract/names.js';
import type { Gateway, LabelSelector, NodeLike } from '../contract/gateway.js';

export function matchesSelector(selector: LabelSelector | undefined, labels: Readonly<Record<string, string>> = {}): boolean {
  if (!selector) return false;
  const exprs = selector.matchExpressions ?? [];
  const pairs = Object.entries(selector.matchLabels ?? {});
  // An empty selector would match every node: treat it as "no selector", never as "everything".
  if (pairs.length === 0 && exprs.length === 0) return false;
  if (!pairs.every(([k, v]) => labels[k] === v)) return false;
  return exprs.every((e) => {
    const has = Object.prototype.hasOwnProperty.call(labels, e.key);
    const values = e.values ?? [];
    switch (e.operator) {
      case 'In':
        return has && values.includes(labels[e.key]!);
      case 'NotIn':
        return !has || !values.includes(labels[e.key]!);
      case 'Exists':
        return has;
      case 'DoesNotExist':
        return !has;
      default:
        return false;
    }
  });
}

export function memberNames(gw: Gateway): ReadonlySet<string> {
  const raw = gw.metadata.annotations?.[MEMBER_NODES_ANNOTATION] ?? '';
  return new Set(raw.split(',').map((s) => s.trim()).filter(Boolean));
}

/** What membership reads of a Gateway: equal keys, equal members (tolerant of malformed cached objects). */
export function membershipKey(gw: Gateway): string {
  return JSON.stringify([gw?.metadata?.annotations?.[MEMBER_NODES_ANNOTATION] ?? null, gw?.spec?.nodeSelector ?? null]);
}

export function isMember(gw: Gateway, node: NodeLike, names: ReadonlySet<string> = memberNames(gw)): boolean {
  return names.has(node.metadata.name) || matchesSelector(gw.spec?.nodeSelector, node.metadata.labels);
}

/**
 * The Gateway each node belongs to. A node matching several Gateways goes to the first by name, and
 * the conflict is reported, so a selector overlap is visible instead of silently flapping.
 *
 * Gateways are indexed by their explicit member names and by one `key=value` of their matchLabels,
 * so each node is checked only against Gateways that could match it: linear in nodes, not
 * nodes × Gateways (10,000 × 1,000 would be ten million checks per pass).
 */
export function assignNodes(gateways: readonly Gateway[], nodes: readonly NodeLike[]): { byNode: Map<string, string>; conflicts: { node: string; gateways: string[] }[] } {
  const index = new MembershipIndex(gateways);
  const byNode = new Map<string, string>();
  const conflicts: { node: string; gateways: string[] }[] = [];
  for (const node of [...nodes].sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : 1))) {
    const matching = index.matching(node);
    if (matching.length > 0) byNode.set(node.metadata.name, matching[0]!);
    if (matching.length > 1) conflicts.push({ node: node.metadata.name, gateways: matching });
  }
  return { byNode, conflicts };
}

/**
 * The Gateways indexed for membership checks (see `assignNodes`): built once per set of Gateways,
 * so the controller asks for one node's Gateway on every event without re-indexing all of them.
 */
export class MembershipIndex {
  private readonly names = new Map<string, ReadonlySet<string>>();
  private readonly byName = new Map<string, Gateway[]>();
  private readonly byLabel = new Map<string, Gateway[]>();
  private readonly unindexed: Gateway[] = [];

  constructor(gateways: readonly Gateway[]) {
    const sorted = [...gateways].sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : 1));
    const push = (m: Map<string, Gateway[]>, k: string, g: Gateway): void => void (m.get(k) ?? m.set(k, []).get(k)!).push(g);
    for (const g of sorted) {
      const names = memberNames(g);
      this.names.set(g.metadata.name, names);
      for (const n of names) push(this.byName, n, g);
      const sel = g.spec?.nodeSelector;
      const first = Object.entries(sel?.matchLabels ?? {}).sort(([a], [b]) => (a < b ? -1 : 1))[0];
      if (first) push(this.byLabel, `${first[0]}=${first[1]}`, g);
      else if (sel?.matchExpressions?.length) this.unindexed.push(g);
    }
  }

  /** Every Gateway `node` belongs to, sorted by name (the first is its Gateway; more is a conflict). */
  matching(node: NodeLike): string[] {
    const candidates = new Set<Gateway>([...(this.byName.get(node.metadata.name) ?? []), ...this.unindexed]);
    for (const [k, v] of Object.entries(node.metadata.labels ?? {})) for (const g of this.byLabel.get(`${k}=${v}`) ?? []) candidates.add(g);
    return [...candidates]
      .filter((g) => isMember(g, node, this.names.get(g.metadata.name)!))
      .map((g) => g.metadata.name)
      .sort();
  }
}
