/**
 * A minimal Prometheus registry (text exposition format 0.0.4): counters, gauges and histograms
 * with labels. Series can be pre-initialised so dashboards see zeros instead of gaps.
 */

type Labels = Readonly<Record<string, string>>;

interface Family {
  readonly name: string;
  readonly help: string;
  readonly type: 'counter' | 'gauge' | 'histogram';
  render(): string[];
}

const labelText = (l: Labels, extra: Labels = {}): string => {
  const all = { ...l, ...extra };
  const keys = Object.keys(all).sort();
  return keys.length ? `{${keys.map((k) => `${k}="${all[k]!.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`).join(',')}}` : '';
};

/** Labelled series of single values: what counters and gauges share. */
abstract class Scalar {
  protected readonly values = new Map<string, { labels: Labels; value: number }>();
  constructor(readonly name: string, readonly help: string) {}
  get(labels: Labels = {}): number {
    return this.values.get(labelText(labels))?.value ?? 0;
  }
  render(): string[] {
    return [...this.values.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([, v]) => `${this.name}${labelText(v.labels)} ${v.value}`);
  }
}

export class Counter extends Scalar implements Family {
  readonly type = 'counter' as const;
  inc(labels: Labels = {}, by = 1): void {
    const k = labelText(labels);
    const cur = this.values.get(k);
    if (cur) cur.value += by;
    else this.values.set(k, { labels, value: by });
  }
  /** Creates the series at 0 if absent. */
  init(labels: Labels = {}): void {
    const k = labelText(labels);
    if (!this.values.has(k)) this.values.set(k, { labels, value: 0 });
  }
}

export class Gauge extends Scalar implements Family {
  readonly type = 'gauge' as const;
  set(value: number, labels: Labels = {}): void {
    this.values.set(labelText(labels), { labels, value });
  }
  /** Drops the series `keep` rejects (e.g. peers that left), so stale values are not exported. */
  retain(keep: (labels: Labels) => boolean): void {
    for (const [k, v] of [...this.values]) if (!keep(v.labels)) this.values.delete(k);
  }
}

export class Histogram implements Family {
  readonly type = 'histogram' as const;
  private readonly series = new Map<string, { labels: Labels; counts: number[]; sum: number; count: number }>();
  constructor(readonly name: string, readonly help: string, readonly buckets: readonly number[]) {}
  observe(value: number, labels: Labels = {}): void {
    const k = labelText(labels);
    let s = this.series.get(k);
    if (!s) this.series.set(k, (s = { labels, counts: this.buckets.map(() => 0), sum: 0, count: 0 }));
    this.buckets.forEach((b, i) => {
      if (value <= b) s!.counts[i]!++;
    });
    s.sum += value;
    s.count++;
  }
  count(labels: Labels = {}): number {
    return this.series.get(labelText(labels))?.count ?? 0;
  }
  render(): string[] {
    const out: string[] = [];
    for (const [, s] of [...this.series.entries()].sort(([a], [b]) => (a < b ? -1 : 1))) {
      this.buckets.forEach((b, i) => out.push(`${this.name}_bucket${labelText(s.labels, { le: String(b) })} ${s.counts[i]}`));
      out.push(`${this.name}_bucket${labelText(s.labels, { le: '+Inf' })} ${s.count}`);
      out.push(`${this.name}_sum${labelText(s.labels)} ${s.sum}`);
      out.push(`${this.name}_count${labelText(s.labels)} ${s.count}`);
    }
    return out;
  }
}

/** A gauge read at scrape time (process figures), never stored. */
export class CollectedGauge implements Family {
  readonly type = 'gauge' as const;
  constructor(readonly name: string, readonly help: string, private readonly read: () => number) {}
  render(): string[] {
    return [`${this.name} ${this.read()}`];
  }
}

/**
 * Memory of this process, as Prometheus' Node.js clients name it: RSS alone cannot tell a heap that
 * is still warming up from one that leaks, so soaks and dashboards get the heap too.
 */
export function registerProcessMetrics(r: Registry): void {
  r.register(new CollectedGauge('process_resident_memory_bytes', 'Resident memory size in bytes.', () => process.memoryUsage.rss()));
  r.register(new CollectedGauge('nodejs_heap_size_used_bytes', 'V8 heap in use, in bytes.', () => process.memoryUsage().heapUsed));
  r.register(new CollectedGauge('nodejs_heap_size_total_bytes', 'V8 heap allocated, in bytes.', () => process.memoryUsage().heapTotal));
  r.register(new CollectedGauge('nodejs_external_memory_bytes', 'Memory of C++ objects bound to JavaScript (buffers included), in bytes.', () => process.memoryUsage().external));
}

export class Registry {
  private readonly families: Family[] = [];
  register<F extends Family>(f: F): F {
    this.families.push(f);
    return f;
  }
  render(): string {
    return this.families.map((f) => [`# HELP ${f.name} ${f.help}`, `# TYPE ${f.name} ${f.type}`, ...f.render()].join('\n')).join('\n') + '\n';
  }
}
