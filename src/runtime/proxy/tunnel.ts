/**
 * The L7 proxy's reverse tunnel: edge proxy clients dial out (they may sit behind NAT) to the cloud
 * proxy server over mutual TLS, and the server then opens streams *to* them. Over each connection
 * the roles of HTTP/2 are reversed: the cloud side is the HTTP/2 client, the edge side the server,
 * so the cloud can open a stream per request: an HTTP/2 CONNECT to `<node>:<port>`, which the edge
 * answers by dialling that node of its own region (name resolved on the edge, so regions whose
 * node addresses collide are told apart by name) and then carries bytes both ways. One TCP
 * connection multiplexes every request, with HTTP/2 flow control per stream.
 *
 * Handshake: after TLS the edge writes one line `RAVEN-TUNNEL/1 <gateway>\n`; the cloud checks the
 * name against the certificate's CN when the CA issued per-gateway certificates (CN = gateway).
 */
import { connect as h2connect, createServer as h2server, type ClientHttp2Session, constants, type ServerHttp2Stream } from 'node:http2';
import { connect as netConnect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect, createServer as tlsServer, type Server as TlsServer, type TLSSocket } from 'node:tls';

export interface TlsFiles {
  readonly ca: string | Buffer;
  readonly cert: string | Buffer;
  readonly key: string | Buffer;
}

const HELLO = 'RAVEN-TUNNEL/1';
const GATEWAY_NAME = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

/** A failed dial with the HTTP status the front end should answer. */
export class DialError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

/** Cloud side: accepts edge connections and dials through them. */
export class TunnelHub {
  private readonly sessions = new Map<string, ClientHttp2Session>();
  private server?: TlsServer;
  port = 0;

  constructor(private readonly tls: TlsFiles, private readonly log: (msg: string) => void = () => undefined) {}

  async listen(port: number, host = '0.0.0.0'): Promise<number> {
    this.server = tlsServer({ ...this.tls, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2', ALPNProtocols: ['raven-tunnel'] }, (socket) => this.accept(socket));
    this.server.on('tlsClientError', (err) => this.log(`tunnel: refused a TLS client: ${err.message}`));
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(port, host, () => resolve());
    });
    this.port = (this.server.address() as { port: number }).port;
    return this.port;
  }

  /** Gateways with a connected proxy client. */
  connected(): string[] {
    return [...this.sessions.keys()].sort();
  }

  private accept(socket: TLSSocket): void {
    let buf = '';
    const onData = (chunk: Buffer): void => {
      buf += chunk.toString('latin1');
      const nl = buf.indexOf('\n');
      if (nl < 0) {
        if (buf.length > 256) socket.destroy();
        return;
      }
      socket.off('data', onData);
      socket.pause();
      const [proto, gateway] = buf.slice(0, nl).trim().split(' ');
      const rest = Buffer.from(buf.slice(nl + 1), 'latin1');
      const cn = (socket.getPeerCertificate()?.subject as { CN?: string } | undefined)?.CN;
      if (proto !== HELLO || !gateway || !GATEWAY_NAME.test(gateway) || (cn?.startsWith('gw-') && cn !== gateway)) {
        this.log(`tunnel: refused a client announcing ${JSON.stringify(gateway)} (certificate ${cn ?? 'without CN'})`);
        socket.destroy();
        return;
      }
      if (rest.length) socket.unshift(rest);
      // The cloud is the HTTP/2 *client* over the edge's connection.
      const session = h2connect(`http://${gateway}`, { createConnection: () => socket as unknown as Duplex });
      session.on('error', () => undefined);
      const previous = this.sessions.get(gateway);
      this.sessions.set(gateway, session);
      previous?.close();
      session.once('close', () => {
        if (this.sessions.get(gateway) === session) this.sessions.delete(gateway);
        this.log(`tunnel: ${gateway} disconnected`);
      });
      this.log(`tunnel: ${gateway} connected`);
      socket.resume();
    };
    socket.on('data', onData);
    socket.on('error', () => undefined);
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
        const why = String(headers['x-raven-reason'] ?? '');
        stream.close();
        reject(new DialError(status === 403 || status === 404 ? status : 502, why || `${gateway} answered ${status} for ${node}:${port}`));
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
    const socket = tlsConnect({ host, port, servername: servername ?? host, ...this.o.tls, minVersion: 'TLSv1.2', ALPNProtocols: ['raven-tunnel'] });
    this.socket = socket;
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
    const authority = String(headers[constants.HTTP2_HEADER_AUTHORITY] ?? '');
    const m = /^(.+):(\d+)$/.exec(authority);
    if (headers[constants.HTTP2_HEADER_METHOD] !== 'CONNECT' || !m) {
      stream.respond({ [constants.HTTP2_HEADER_STATUS]: 400, 'x-raven-reason': 'only CONNECT node:port' }, { endStream: true });
      return;
    }
    const [node, port] = [m[1]!, Number(m[2])];
    const target = this.o.resolve(node, port);
    if (!target || 'refuse' in target) {
      const status = target ? 403 : 404;
      const reason = target ? target.refuse : `node ${node} is not in ${this.o.gateway}`;
      stream.respond({ [constants.HTTP2_HEADER_STATUS]: status, 'x-raven-reason': reason }, { endStream: true });
      return;
    }
    const upstream: Socket = netConnect({ host: target.ip, port });
    upstream.once('connect', () => {
      stream.respond({ [constants.HTTP2_HEADER_STATUS]: 200 });
      upstream.pipe(stream);
      stream.pipe(upstream);
    });
    upstream.once('error', (err) => {
      if (!stream.headersSent) stream.respond({ [constants.HTTP2_HEADER_STATUS]: 502, 'x-raven-reason': `${node}:${port}: ${err.message}` }, { endStream: true });
      else stream.close(constants.NGHTTP2_CONNECT_ERROR);
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
