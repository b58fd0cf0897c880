/**
 * Kubernetes' rules for names, label keys and label values (apimachinery `validation.IsDNS1123Label`,
 * `IsDNS1123Subdomain`, `IsQualifiedName`, `IsValidLabelValue`), as predicates that explain themselves:
 * each returns why a string is not acceptable, or null when it is. Pure.
 */
import { DNS1123_LABEL_MAX, DNS1123_SUBDOMAIN_MAX, LABEL_NAME_MAX, LABEL_VALUE_MAX } from './limits.js';

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const QUALIFIED_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;

/** Source text of the patterns, for the JSON Schema (the same rules, one definition). */
export const DNS1123_LABEL_PATTERN = DNS1123_LABEL.source;
export const DNS1123_SUBDOMAIN_PATTERN = DNS1123_SUBDOMAIN.source;

export function dnsLabelProblem(name: string): string | null {
  if (name.length > DNS1123_LABEL_MAX) return `it is ${name.length} characters, above the ${DNS1123_LABEL_MAX} of a DNS-1123 label`;
  return DNS1123_LABEL.test(name) ? null : 'a DNS-1123 label is lower-case letters, digits and "-", starting and ending with a letter or digit';
}

export function dnsSubdomainProblem(name: string): string | null {
  if (name.length > DNS1123_SUBDOMAIN_MAX) return `it is ${name.length} characters, above the ${DNS1123_SUBDOMAIN_MAX} of a DNS-1123 subdomain`;
  return DNS1123_SUBDOMAIN.test(name) ? null : 'a DNS-1123 subdomain is dot-separated labels of lower-case letters, digits and "-", each starting and ending with a letter or digit';
}

/** A label (or annotation) key: an optional DNS-subdomain prefix and "/", then a name of at most 63. */
export function labelKeyProblem(key: string): string | null {
  const slash = key.lastIndexOf('/');
  const [prefix, name] = slash < 0 ? [undefined, key] : [key.slice(0, slash), key.slice(slash + 1)];
  if (prefix !== undefined) {
    if (prefix.length === 0) return 'the prefix before "/" is empty';
    if (prefix.length > DNS1123_SUBDOMAIN_MAX) return `the prefix before "/" is ${prefix.length} characters, above ${DNS1123_SUBDOMAIN_MAX}`;
    if (!DNS1123_SUBDOMAIN.test(prefix)) return 'the prefix before "/" must be a DNS subdomain such as apps.openyurt.io';
  }
  if (name.length === 0) return 'the name is empty';
  if (name.length > LABEL_NAME_MAX) return `the name${prefix === undefined ? '' : ' after "/"'} is ${name.length} characters, above ${LABEL_NAME_MAX}`;
  return QUALIFIED_NAME.test(name) ? null : 'the name must be letters, digits, "-", "_" and ".", starting and ending with a letter or digit';
}

export function labelValueProblem(value: string): string | null {
  if (value.length > LABEL_VALUE_MAX) return `it is ${value.length} characters, above the ${LABEL_VALUE_MAX} of a label value`;
  return value === '' || QUALIFIED_NAME.test(value) ? null : 'a label value is letters, digits, "-", "_" and ".", starting and ending with a letter or digit';
}
