/**
 * The L7 proxy's reverse tunnel: edge proxy clients dial out (they may sit behind NAT) to the cloud
 * proxy server over mutual TLS, and the server then opens streams *to* them. Over each connection
 * the roles of HTTP/2 are reversed: the cloud side is the HTTP/2 client, the edge side the server,
 * so the cloud can open a stream per request: an HTTP/2 CONNECT to `<node>:<port>`, which the edge
 * answers by dialling that node of its own region (name resolved on the edge, so regions whose
 * node addresses collide are told apart by name) and then carries bytes both ways. One TCP
 * connection multiplexes every request, with HTTP/2 flow control per stream.
 *
 * Handshake: after TLS the edge writes one line `RAVEN-TUNNEL/1 <gateway>\n`. The hub accepts it
 * only when the gateway is `gw-<region>`, the client certificate names exactly that gateway (CN
 * or a DNS SAN), and that gateway has no live session yet (a second one is refused, not "last
 * wins"). The public port is bounded: TLS handshake and hello timeouts, caps on unauthenticated and
 * total connections, HTTP/2 pings that find dead sessions, and an idle timeout per stream.
 */
import { connect as h2connect, createServer as h2server, type ClientHttp2Session, constants, type ServerHttp2Stream } from 'node:http2';
import { isIP, connect as netConnect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect, createServer as tlsServer, type PeerCertificate, type Server as TlsServer, type TLSSocket } from 'node:tls';
import { canonicalPort, objectName } from '../platform/canonical.js';

export interface TlsFiles {
  readonly ca: string | Buffer;
  readonly cert: string | Buffer;
  readonly key: string | Buffer;
}

const HELLO = 'RAVEN-TUNNEL/1';
/** Gateway names are `gw-<region>`, the region a DNS-1123 label. */
export const GATEWAY_NAME = /^gw-[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/** Bounds of the public tunnel port. */
export interface HubLimits {
  /** TCP accept to finished TLS handshake. @default 10_000 */
  readonly handshakeTimeoutMs: number;
  /** Finished TLS handshake to the hello line. @default 5_000 */
  readonly helloTimeoutMs: number;
  /** Connections not (yet) authenticated as a gateway; more are closed at once. @default 64 */
  readonly maxPending: number;
  /** All connections, authenticated or not. @default 1024 */
  readonly maxConnections: number;
  /** A stream with no bytes either way for this long is cancelled. @default 3_600_000 (kubelet streams idle up to 4 h; 1 h is ours) */
  readonly streamIdleMs: number;
  /** HTTP/2 ping interval; a session that misses a ping is closed, so its gateway can reconnect. @default 15_000 */
  readonly pingIntervalMs: number;
}

export const DEFAULT_HUB_LIMITS: HubLimits = Object.freeze({ handshakeTimeoutMs: 10_000, helloTimeoutMs: 5_000, maxPending: 64, maxConnections: 1024, streamIdleMs: 3_600_000, pingIntervalMs: 15_000 });

/** Header-safe text: printable ASCII only, bounded (reasons carry node names and error messages). */
export function headerText(text: string, max = 200): string {
  const clean = text.replace(/[^\x20-\x7e]/g, '?');
  return clean.length > max ? `${clean.slice(0, max)}...` : clean;
}

/** The gateway names a client certificate vouches for: its CN and its DNS SANs. */
export function certificateNames(cert: PeerCertificate | undefined): string[] {
  if (!cert) return [];
  const cn = (cert.subject as { CN?: unknown } | undefined)?.CN;
  const sans = (cert.subjectaltname ?? '').split(/,\s*/).filter((s) => s.startsWith('DNS:')).map((s) => s.slice(4));
  return [...new Set([...(typeof cn === 'string' ? [cn] : []), ...sans])];
}

/** Why a hello is refused, or null: the announced gateway must be exactly a name of the certificate. */
export function helloRefusal(line: string, names: readonly string[]): string | null {
  const parts = line.split(' ');
  if (parts.length !== 2 || parts[0] !== HELLO) return 'not a RAVEN-TUNNEL/1 hello';
  const gateway = parts[1]!;
  if (!GATEWAY_NAME.test(gateway) || gateway.length > 63) return 'the announced gateway is not gw-<region>';
  if (!names.includes(gateway)) return `the certificate (${names.join(', ') || 'no CN'}) is not for ${gateway}`;
  return null;
}

/** A failed dial with the HTTP status the front end should answer. */
export class DialError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

/** Cloud side: accepts edge connections and dials through them. */
export class TunnelHub {
  private readonly sessions = new Map<string, ClientHttp2Session>();
  private readonly authenticated = new Set<TLSSocket>();
  private readonly limits: HubLimits;
  private server?: TlsServer;
  private open = 0;
  port = 0;
  /** Connections closed at once because a cap was reached. */
  refusedOverCap = 0;

  constructor(private readonly tls: TlsFiles, private readonly log: (msg: string) => void = () => undefined, limits: Partial<HubLimits> = {}) {
    this.limits = { ...DEFAULT_HUB_LIMITS, ...limits };
  }

  /** On all addresses by default: edges must reach it. */
  async listen(port: number, host = '0.0.0.0'): Promise<number> {
    const server = tlsServer({ ...this.tls, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2', ALPNProtocols: ['raven-tunnel'], handshakeTimeout: this.limits.handshakeTimeoutMs }, (socket) => this.accept(socket));
    this.server = server;
    server.on('connection', (raw: Socket) => this.admit(raw));
    // A failed or timed-out handshake only reports the error: the connection must be closed here.
    server.on('tlsClientError', (err, socket) => {
      socket.destroy();
      this.log(`tunnel: refused a TLS client: ${headerText(err.message)}`);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    this.port = (server.address() as { port: number }).port;
    return this.port;
  }

  /** Gateways with a connected proxy client. */
  connected(): string[] {
    return [...this.sessions.keys()].sort();
  }

  /** Connections open now, and how many of them are not authenticated yet. */
  counts(): { open: number; pending: number } {
    return { open: this.open, pending: this.open - this.authenticated.size };
  }

  private admit(raw: Socket): void {
    const pending = this.open - this.authenticated.size;
    if (this.open >= this.limits.maxConnections || pending >= this.limits.maxPending) {
      if (this.refusedOverCap++ % 100 === 0) this.log(`tunnel: connection cap reached (${this.open} open, ${pending} unauthenticated); closing new connections`);
      raw.destroy();
      return;
    }
    this.open++;
    raw.once('close', () => this.open--);
  }

  private accept(socket: TLSSocket): void {
    let buf = '';
    socket.on('error', () => undefined);
    const hello = setTimeout(() => {
      this.log('tunnel: a client sent no hello in time');
      socket.destroy();
    }, this.limits.helloTimeoutMs);
    socket.once('close', () => clearTimeout(hello));
    const onData = (chunk: Buffer): void => {
      buf += chunk.toString('latin1');
      const nl = buf.indexOf('\n');
      if (nl < 0) {
        if (buf.length > 256) socket.destroy();
        return;
      }
      clearTimeout(hello);
      socket.off('data', onData);
      socket.pause();
      const line = buf.slice(0, nl).replace(/\r$/, '');
      const rest = Buffer.from(buf.slice(nl + 1), 'latin1');
      const names = certificateNames(socket.getPeerCertificate());
      const refused = helloRefusal(line, names);
      const gateway = line.split(' ')[1] ?? '';
      const live = this.sessions.get(gateway);
      const why = refused ?? (live && !live.closed && !live.destroyed ? `${gateway} already has a live session` : null);
      if (why) {
        this.log(`tunnel: refused a client announcing ${JSON.stringify(headerText(gateway, 80))}: ${headerText(why)}`);
        socket.destroy();
        return;
      }
      if (rest.length) socket.unshift(rest);
      this.authenticated.add(socket);
      socket.once('close', () => this.authenticated.delete(socket));
      // The cloud is the HTTP/2 *client* over the edge's connection.
      const session = h2connect(`http://${gateway}`, { createConnection: () => socket as unknown as Duplex });
      session.on('error', () => undefined);
      this.sessions.set(gateway, session);
      let awaitingPing = false;
      const ping = setInterval(() => {
        if (awaitingPing) {
          this.log(`tunnel: ${gateway} missed a ping; closing its session`);
          session.destroy();
          return;
        }
        awaitingPing = true;
        if (!session.ping((err) => (awaitingPing = err ? awaitingPing : false))) session.destroy();
      }, this.limits.pingIntervalMs);
      session.once('close', () => {
        clearInterval(ping);
        socket.destroy();
        if (this.sessions.get(gateway) === session) this.sessions.delete(gateway);
        this.log(`tunnel: ${gateway} disconnected`);
      });
      this.log(`tunnel: ${gateway} connected`);
      socket.resume();
    };
    socket.on('data', onData);
  }

  /** A byte stream to `node:port` of `gateway`'s region, through its proxy client. */
  dial(gateway: string, node: string, port: number, timeoutMs = 10_000): Promise<Duplex> {
    const session = this.sessions.get(gateway);
    if (!session || session.closed || session.destroyed) return Promise.reject(new DialError(503, `no proxy client of ${gateway} is connected`));
    return new Promise((resolve, reject) => {
      const stream = session.request({ [constants.HTTP2_HEADER_METHOD]: 'CONNECT', [constants.HTTP2_HEADER_AUTHORITY]: `${node}:${port}` });
      const timer = setTimeout(() => {
        stream.close(constants.NGHTTP2_CANCEL);
        reject(new DialError(504, `${gateway} did not connect to ${node}:${port} within ${timeoutMs} ms`));
      }, timeoutMs);
      stream.setTimeout(this.limits.streamIdleMs, () => stream.close(constants.NGHTTP2_CANCEL));
      stream.once('response', (headers) => {
        clearTimeout(timer);
        const status = Number(headers[constants.HTTP2_HEADER_STATUS]);
        if (status === 200) {
          // When the edge has finished, finish our side too: the stream then closes cleanly. One
          // reset by the HTTP client's destroy() instead, per request, trips nghttp2's rapid-reset
          // guard after ~1,000 requests and the whole session is torn down.
          stream.once('end', () => stream.end());
          return resolve(stream);
        }
        const why = headerText(String(headers['x-raven-reason'] ?? ''));
        stream.close();
        reject(new DialError(status === 400 || status === 403 || status === 404 ? status : 502, why || `${gateway} answered ${status} for ${node}:${port}`));
      });
      stream.once('error', (err) => {
        clearTimeout(timer);
        reject(new DialError(502, `tunnel to ${gateway}: ${err.message}`));
      });
    });
  }

  async close(): Promise<void> {
    for (const s of this.sessions.values()) s.destroy();
    this.sessions.clear();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

export interface TunnelClientOptions {
  /** This region's Gateway name. */
  readonly gateway: string;
  /** The cloud proxy server's tunnel address. */
  readonly server: { readonly host: string; readonly port: number; readonly servername?: string };
  readonly tls: TlsFiles;
  /** Where a node of this region is, or why it may not be reached (undefined: unknown node). */
  readonly resolve: (node: string, port: number) => { ip: string } | { refuse: string } | undefined;
  readonly log?: (msg: string) => void;
  /** Reconnect backoff bounds. */
  readonly minBackoffMs?: number;
  readonly maxBackoffMs?: number;
  /** A stream to a node with no bytes either way for this long is closed. @default DEFAULT_HUB_LIMITS.streamIdleMs */
  readonly streamIdleMs?: number;
}

/** Edge side: keeps one connection to the cloud, reconnecting with backoff, and serves its dials. */
export class TunnelClient {
  private socket?: TLSSocket;
  private stopped = false;
  private backoff: number;
  private timer?: NodeJS.Timeout;
  private readonly h2 = h2server();
  /** Connections made so far, and whether one is up now. */
  connects = 0;
  connected = false;

  constructor(private readonly o: TunnelClientOptions) {
    this.backoff = o.minBackoffMs ?? 200;
    this.h2.on('stream', (stream, headers) => this.serve(stream, headers));
    this.h2.on('sessionError', () => undefined);
  }

  start(): void {
    this.stopped = false;
    this.connect();
  }

  private log(msg: string): void {
    this.o.log?.(msg);
  }

  private connect(): void {
    const { host, port, servername } = this.o.server;
    const sni = servername ?? (isIP(host) ? undefined : host);
    const socket = tlsConnect({ host, port, ...(sni && { servername: sni }), ...this.o.tls, minVersion: 'TLSv1.2', ALPNProtocols: ['raven-tunnel'] });
    this.socket = socket;
    socket.setKeepAlive(true, 15_000);
    socket.once('secureConnect', () => {
      // HTTP/2 takes the socket over only once our hello has been written: a write still in
      // flight when it does trips an assertion inside Node's http2.
      socket.write(`${HELLO} ${this.o.gateway}\n`, () => {
        if (socket.destroyed) return;
        this.backoff = this.o.minBackoffMs ?? 200;
        this.connects++;
        this.connected = true;
        this.log(`tunnel: connected to ${host}:${port}`);
        this.h2.emit('connection', socket);
      });
    });
    socket.once('error', (err) => this.log(`tunnel: ${host}:${port}: ${err.message}`));
    socket.once('close', () => {
      this.connected = false;
      if (this.stopped) return;
      const wait = this.backoff;
      this.backoff = Math.min(this.backoff * 2, this.o.maxBackoffMs ?? 10_000);
      this.timer = setTimeout(() => this.connect(), wait);
    });
  }

  private serve(stream: ServerHttp2Stream, headers: Record<string, string | string[] | undefined>): void {
    stream.on('error', () => undefined);
    const answer = (status: number, reason: string): void => {
      if (!stream.destroyed && !stream.headersSent) stream.respond({ [constants.HTTP2_HEADER_STATUS]: status, 'x-raven-reason': headerText(reason) }, { endStream: true });
    };
    const m = /^([^:]+):(\d{1,5})$/.exec(String(headers[constants.HTTP2_HEADER_AUTHORITY] ?? ''));
    const name = objectName(m?.[1]);
    const port = canonicalPort(Number(m?.[2]));
    if (headers[constants.HTTP2_HEADER_METHOD] !== 'CONNECT' || !name.ok || !port.ok) return answer(400, 'only CONNECT <node>:<port>, a node name and a port 1-65535');
    const [node, p] = [name.value, port.value];
    const target = this.o.resolve(node, p);
    if (!target || 'refuse' in target) return answer(target ? 403 : 404, target ? target.refuse : `node ${node} is not in ${this.o.gateway}`);
    const upstream: Socket = netConnect({ host: target.ip, port: p });
    upstream.setTimeout(this.o.streamIdleMs ?? DEFAULT_HUB_LIMITS.streamIdleMs, () => {
      upstream.destroy();
      if (!stream.closed) stream.close(constants.NGHTTP2_CANCEL);
    });
    upstream.once('connect', () => {
      stream.respond({ [constants.HTTP2_HEADER_STATUS]: 200 });
      upstream.pipe(stream);
      stream.pipe(upstream);
    });
    upstream.once('error', (err) => {
      if (!stream.headersSent) answer(502, `${node}:${p}: ${err.message}`);
      else if (!stream.closed) stream.close(constants.NGHTTP2_CONNECT_ERROR);
    });
    stream.once('close', () => upstream.destroy());
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.socket?.destroy();
    this.h2.close();
  }
}
