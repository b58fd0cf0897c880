/** Helpers for the embedded API server tests. */
import * as k8s from '@kubernetes/client-node';
import { loadCrds, startApiServer, type ApiServer, type ApiServerOptions } from '../../src/testkit/apiserver/index.ts';

export const SEED = 'dist/seed';
export const GATEWAY = { group: 'raven.openyurt.io', version: 'v1beta1', plural: 'gateways' } as const;

export interface Lab {
  api: ApiServer;
  kc: k8s.KubeConfig;
  core: k8s.CoreV1Api;
  custom: k8s.CustomObjectsApi;
}

export async function startLab(options: ApiServerOptions & { seedCrds?: boolean } = {}): Promise<Lab> {
  const { seedCrds, ...rest } = options;
  const api = await startApiServer({ ...rest, ...(seedCrds ? { crds: loadCrds([`${SEED}/crds`]) } : {}) });
  const kc = new k8s.KubeConfig();
  kc.loadFromString(api.kubeconfigYaml());
  return { api, kc, core: kc.makeApiClient(k8s.CoreV1Api), custom: kc.makeApiClient(k8s.CustomObjectsApi) };
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls until `check` returns a truthy value; fails with `what` after `ms`. */
export async function waitFor<T>(what: string, check: () => T | undefined | false, ms = 5000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = check();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** The Status body of a failed typed call, with its HTTP code. */
export async function failure(p: Promise<unknown>): Promise<{ code: number; status: any }> {
  try {
    await p;
  } catch (e) {
    const err = e as { code?: number; body?: unknown };
    if (typeof err.code !== 'number') throw e;
    return { code: err.code, status: typeof err.body === 'string' ? JSON.parse(err.body) : err.body };
  }
  throw new Error('expected the call to fail');
}

/** Raw HTTP against the server (for paths and content types the typed clients do not expose). */
export async function http(api: ApiServer, method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<{ status: number; json: any; text: string; headers: Headers }> {
  const res = await fetch(api.url + path, {
    method,
    headers: body === undefined ? {} : { 'Content-Type': contentType },
    ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
  });
  const text = await res.text();
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, json, text, headers: res.headers };
}

/** Reads a watch stream's events until `until` says stop (or the stream ends). */
export async function watchEvents(api: ApiServer, path: string, until: (events: any[]) => boolean, ms = 5000): Promise<any[]> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), ms);
  const events: any[] = [];
  try {
    const res = await fetch(api.url + path, { signal: controller.signal });
    if (res.status !== 200) throw new Error(`watch ${path}: HTTP ${res.status} ${await res.text()}`);
    const decoder = new TextDecoder();
    let buf = '';
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buf += decoder.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.trim()) events.push(JSON.parse(line));
      }
      if (until(events)) break;
    }
  } catch (e) {
    if ((e as Error).name !== 'AbortError') throw e;
  } finally {
    clearTimeout(timer);
    controller.abort();
  }
  return events;
}
