/**
 * Limits a topology must stay within so that everything compiled from it is accepted downstream:
 * by the Kubernetes API server, by Flux and Argo CD, and by the compiler's own resources. Each
 * limit is named here once and explained; checks and messages quote these constants.
 */

/** Kubernetes: a DNS-1123 label (namespaces, Service names, label values) is at most 63 characters. */
export const DNS1123_LABEL_MAX = 63;
/** Kubernetes: a DNS-1123 subdomain (most object names, node names, label key prefixes) is at most 253. */
export const DNS1123_SUBDOMAIN_MAX = 253;
/** Kubernetes: a label key's name part and a label value are at most 63 characters. */
export const LABEL_NAME_MAX = 63;
export const LABEL_VALUE_MAX = 63;

/**
 * Kubernetes: the annotations of one object, keys plus values, take at most 256 KiB
 * (`TotalAnnotationSizeLimitB` in apimachinery's ValidateAnnotations).
 */
export const MAX_ANNOTATIONS_BYTES = 256 * 1024;

/**
 * Kubernetes: the API server refuses a request body above etcd's default `--max-request-bytes`,
 * 1.5 MiB. Any one object we generate must fit.
 */
export const MAX_OBJECT_BYTES = 1.5 * 1024 * 1024;

/**
 * Cluster names: the longest name derived from one is Flux's Kustomization `raven-<cluster>-gateways`,
 * which Flux also writes into a label value (`kustomize.toolkit.fluxcd.io/name`, at most 63):
 * 63 − "raven-".length − "-gateways".length = 48. Argo CD's `raven-<cluster>` Application (tracked by
 * the `app.kubernetes.io/instance` label) fits a fortiori.
 */
export const MAX_CLUSTER_NAME_LENGTH = 48;

/**
 * The bytes of all topology files read in one run. A 1,000-region topology is ~0.5 MiB, so 32 MiB is
 * far above real use, and keeps a run within memory (12 files of 7.9 MiB each ran out of it).
 */
export const MAX_TOTAL_INPUT_BYTES = 32 * 1024 * 1024;

/**
 * The bytes of all files one `synth` writes. A 1,000-region topology compiles to ~5 MiB; 64 MiB is
 * ten times that, and rendering stops as soon as it is passed, so a hostile file fails in bounded time.
 */
export const MAX_OUTPUT_BYTES = 64 * 1024 * 1024;
