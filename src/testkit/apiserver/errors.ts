/**
 * Kubernetes `Status` errors. Every failure the embedded API server reports is an ApiError, rendered
 * as a `Status` object (kind Status, apiVersion v1, status Failure) with the HTTP code as `code`.
 */

export type StatusReason =
  | 'BadRequest'
  | 'NotFound'
  | 'AlreadyExists'
  | 'Conflict'
  | 'Invalid'
  | 'Gone'
  | 'Expired'
  | 'MethodNotAllowed'
  | 'UnsupportedMediaType'
  | 'NotAcceptable'
  | 'RequestEntityTooLarge'
  | 'InternalError'
  | 'ServiceUnavailable'
  | 'Timeout'
  | 'TooManyRequests'
  | 'Unauthorized'
  | 'Forbidden'
  | '';

export interface StatusCause {
  reason?: string;
  message?: string;
  field?: string;
}

export interface StatusDetails {
  name?: string;
  group?: string;
  kind?: string;
  uid?: string;
  causes?: StatusCause[];
  retryAfterSeconds?: number;
}

export interface StatusObject {
  kind: 'Status';
  apiVersion: 'v1';
  metadata: Record<string, never>;
  status: 'Success' | 'Failure';
  message?: string;
  reason?: StatusReason;
  details?: StatusDetails;
  code: number;
}

export class ApiError extends Error {
  constructor(
    readonly code: number,
    readonly reason: StatusReason,
    message: string,
    readonly details?: StatusDetails,
  ) {
    super(message);
  }

  toStatus(): StatusObject {
    const s: StatusObject = { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: this.message, reason: this.reason, code: this.code };
    if (this.details) s.details = this.details;
    return s;
  }
}

/** "configmaps" in the core group, "gateways.raven.openyurt.io" otherwise: how kube-apiserver names a resource in messages. */
export function qualifiedResource(group: string, resource: string): string {
  return group ? `${resource}.${group}` : resource;
}

export const errors = {
  notFound: (group: string, resource: string, name: string): ApiError =>
    new ApiError(404, 'NotFound', `${qualifiedResource(group, resource)} "${name}" not found`, { name, group: group || undefined, kind: resource }),
  alreadyExists: (group: string, resource: string, name: string): ApiError =>
    new ApiError(409, 'AlreadyExists', `${qualifiedResource(group, resource)} "${name}" already exists`, { name, group: group || undefined, kind: resource }),
  conflict: (group: string, resource: string, name: string, why: string, causes?: StatusCause[]): ApiError =>
    new ApiError(409, 'Conflict', `Operation cannot be fulfilled on ${qualifiedResource(group, resource)} "${name}": ${why}`, {
      name,
      group: group || undefined,
      kind: resource,
      ...(causes ? { causes } : {}),
    }),
  /** 422 with kube-apiserver's message shape: `Kind.group "name" is invalid: field: Invalid value: ...`. */
  invalid: (group: string, kind: string, name: string, causes: StatusCause[]): ApiError => {
    const what = group ? `${kind}.${group}` : kind;
    const list = causes.map((c) => (c.field ? `${c.field}: ${c.message}` : c.message ?? '')).join(', ');
    const message = `${what} "${name}" is invalid: ${causes.length > 1 ? `[${list}]` : list}`;
    return new ApiError(422, 'Invalid', message, { name, group: group || undefined, kind, causes });
  },
  badRequest: (message: string): ApiError => new ApiError(400, 'BadRequest', message),
  methodNotAllowed: (message = 'the server does not allow this method on the requested resource'): ApiError => new ApiError(405, 'MethodNotAllowed', message),
  unsupportedMediaType: (contentType: string, accepted: readonly string[]): ApiError =>
    new ApiError(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: ${accepted.join(', ')}`, {
      causes: [{ reason: 'UnexpectedServerResponse', message: contentType }],
    }),
  expired: (message: string): ApiError => new ApiError(410, 'Expired', message),
  gone: (message: string): ApiError => new ApiError(410, 'Gone', message),
  pathNotFound: (path: string): ApiError => new ApiError(404, 'NotFound', `the server could not find the requested resource`, { causes: [{ reason: 'UnexpectedServerResponse', message: `404 page not found: ${path}` }] }),
  internal: (message: string): ApiError => new ApiError(500, 'InternalError', `Internal error occurred: ${message}`, { causes: [{ message }] }),
};

/** Reason kube-apiserver uses for a status code, for injected faults. */
export function reasonForCode(code: number): StatusReason {
  switch (code) {
    case 400:
      return 'BadRequest';
    case 401:
      return 'Unauthorized';
    case 403:
      return 'Forbidden';
    case 404:
      return 'NotFound';
    case 405:
      return 'MethodNotAllowed';
    case 409:
      return 'Conflict';
    case 410:
      return 'Expired';
    case 415:
      return 'UnsupportedMediaType';
    case 422:
      return 'Invalid';
    case 429:
      return 'TooManyRequests';
    case 503:
      return 'ServiceUnavailable';
    case 504:
      return 'Timeout';
    default:
      return code >= 500 ? 'InternalError' : '';
  }
}
