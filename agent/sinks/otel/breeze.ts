import { createRequire } from 'node:module';
import { hostname } from 'node:os';
import { SDK_INFO } from '@opentelemetry/core';
import type { Resource } from '@opentelemetry/resources';
import type { ReadableLogRecord } from '@opentelemetry/sdk-logs';
import { registerSecret } from '../../config/redact.js';
import { RunwatchError, type ErrorLocation } from '../../errors.js';
import type { FailedSend, ItemOutcome, SendResult } from '../../pipeline/spool-drainer.js';

/**
 * The Application Insights ingestion ("Breeze") protocol as `@azure/monitor-opentelemetry-exporter@1.0.0-beta.42`
 * speaks it: connection strings, the custom-event envelope and the track response. The envelope mapping is
 * checked field by field against what the real exporter sends (test/unit/sinks/otel/breeze.test.ts).
 */

export const DEFAULT_INGESTION_ENDPOINT = 'https://dc.services.visualstudio.com';
/** Item statuses worth sending again (Breeze's transient ones). */
export const RETRIABLE_ITEM_STATUS: ReadonlySet<number> = new Set([408, 429, 500, 502, 503, 504]);
/** A whole request answered 401/403 is retried too: credentials get fixed, and the bounded spool holds the records meanwhile. */
const RETRIABLE_REQUEST_STATUS: ReadonlySet<number> = new Set([...RETRIABLE_ITEM_STATUS, 401, 403]);
const INSTRUMENTATION_KEY = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const MAX_PROPERTY_BYTES = 8192;

export interface AzureConnection {
  instrumentationKey: string;
  /** Base URL without a trailing slash; the track URL is `${ingestionEndpoint}/v2.1/track`. */
  ingestionEndpoint: string;
  /** True for an http:// loopback endpoint allowed by `allowHttpLoopback`. */
  insecureLoopback: boolean;
}

/**
 * Parses a connection string like the exporter does (keys case-insensitive, EndpointSuffix/Location, http
 * upgraded to https) except that http stays http for a loopback host when the operator allowed it. Errors
 * name the field, never the value; the key is registered as a secret so it is masked wherever it shows up.
 */
export function parseConnectionString(text: string, opts: { allowHttpLoopback: boolean; where?: ErrorLocation }): AzureConnection {
  registerSecret(text);
  const fields = new Map<string, string>();
  for (const part of text.split(';')) {
    if (part.trim() === '') continue;
    const eq = part.indexOf('=');
    if (eq <= 0) throw new RunwatchError('RW_CONFIG_INVALID', 'the connection string is not a list of Key=Value pairs separated by ";"', opts.where);
    fields.set(part.slice(0, eq).trim().toLowerCase(), part.slice(eq + 1).trim());
  }
  const key = fields.get('instrumentationkey') ?? '';
  registerSecret(key);
  if (!INSTRUMENTATION_KEY.test(key)) {
    throw new RunwatchError('RW_CONFIG_INVALID', 'the connection string has no valid InstrumentationKey (a lowercase GUID)', opts.where);
  }
  const suffix = fields.get('endpointsuffix');
  const location = fields.get('location');
  let endpoint = fields.get('ingestionendpoint') || (suffix ? `https://${location ? `${location}.` : ''}dc.${suffix}` : DEFAULT_INGESTION_ENDPOINT);
  endpoint = endpoint.replace(/\/+$/, '');
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw new RunwatchError('RW_CONFIG_INVALID', 'the connection string has an IngestionEndpoint that is not a URL', opts.where);
  }
  const loopback = ['127.0.0.1', '[::1]', 'localhost'].includes(url.hostname) || /^127\.\d+\.\d+\.\d+$/.test(url.hostname);
  const insecureLoopback = url.protocol === 'http:' && loopback && opts.allowHttpLoopback;
  if (url.protocol === 'http:' && !insecureLoopback) endpoint = endpoint.replace(/^http:/, 'https:');
  else if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new RunwatchError('RW_CONFIG_INVALID', 'the connection string has an IngestionEndpoint that is not http(s)', opts.where);
  }
  return { instrumentationKey: key, ingestionEndpoint: endpoint, insecureLoopback };
}

/** One item of the JSON array POSTed to /v2.1/track, as the exporter serializes it. */
export interface BreezeEnvelope {
  ver: 1;
  name: string;
  time: string;
  sampleRate: number;
  iKey: string;
  tags: Record<string, string>;
  data: { baseType: 'EventData'; baseData: { ver: 2; name: string; properties: Record<string, string>; measurements: Record<string, number> } };
}

const exporterVersion = (createRequire(import.meta.url)('@azure/monitor-opentelemetry-exporter/package.json') as { version: string }).version;
const tagsByResource = new WeakMap<Resource, Record<string, string>>();

/** The exporter's context tags for a resource (createTagsFromResource): SDK version, cloud role and instance, application version. */
export function envelopeTags(resource: Resource): Record<string, string> {
  let tags = tagsByResource.get(resource);
  if (tags) return tags;
  const a = resource.attributes;
  const name = a['service.name'] === undefined ? '' : String(a['service.name']);
  const ns = a['service.namespace'];
  tags = {
    'ai.internal.sdkVersion': `node${process.versions.node.split('.')[0]}:otel${SDK_INFO['telemetry.sdk.version']}:ext${exporterVersion}`,
    'ai.cloud.role': ns ? `${String(ns)}.${name}` : name,
    'ai.cloud.roleInstance': a['service.instance.id'] ? String(a['service.instance.id']) : hostname(),
  };
  if (a['service.version']) tags['ai.application.ver'] = String(a['service.version']);
  tagsByResource.set(resource, tags);
  return tags;
}

/** The exporter's logToEnvelope for a log record carrying `microsoft.custom_event.name`. */
export function customEventEnvelope(log: ReadableLogRecord, instrumentationKey: string): BreezeEnvelope {
  const properties: Record<string, string> = {};
  for (const [k, v] of Object.entries(log.attributes)) {
    if (k.startsWith('microsoft') || k.startsWith('_MS.') || v === undefined) continue;
    properties[k] = truncateUtf8(typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v), MAX_PROPERTY_BYTES);
  }
  return {
    ver: 1,
    name: 'Microsoft.ApplicationInsights.Event',
    time: new Date(log.hrTime[0] * 1000 + log.hrTime[1] / 1e6).toISOString(),
    sampleRate: 100,
    iKey: instrumentationKey,
    tags: envelopeTags(log.resource),
    data: { baseType: 'EventData', baseData: { ver: 2, name: String(log.attributes['microsoft.custom_event.name']), properties, measurements: {} } },
  };
}

function truncateUtf8(value: string, maxBytes: number): string {
  if (value.length * 3 <= maxBytes) return value;
  const bytes = Buffer.from(value, 'utf8');
  return bytes.length <= maxBytes ? value : bytes.subarray(0, maxBytes).toString('utf8');
}

interface TrackResponse {
  itemsReceived: number;
  itemsAccepted: number;
  errors: { index: number; statusCode: number; message?: string }[];
}

function parseTrackResponse(text: string): TrackResponse | undefined {
  try {
    const r = JSON.parse(text) as Partial<TrackResponse>;
    if (typeof r.itemsReceived !== 'number' || typeof r.itemsAccepted !== 'number' || !Array.isArray(r.errors)) return undefined;
    if (!r.errors.every((e) => Number.isInteger(e?.index) && Number.isInteger(e?.statusCode))) return undefined;
    return r as TrackResponse;
  } catch {
    return undefined;
  }
}

/**
 * What a track response means for each item sent. 200: all accepted. A response body that accounts for every
 * item (206 partial success, or a 4xx/5xx listing per-item errors): accepted unless listed; a listed item is
 * retried when its status is transient, otherwise rejected ("Telemetry sampled out." is never retried, like the
 * exporter). Anything else decides for the whole request by its status.
 */
export function interpretTrackResponse(status: number, body: string, itemCount: number, retryAfterMs?: number): SendResult {
  if (status === 200) return { kind: 'items', outcomes: new Array<ItemOutcome>(itemCount).fill('accepted'), status };
  const parsed = parseTrackResponse(body);
  const failedIndexes = new Set(parsed?.errors.map((e) => e.index));
  const consistent =
    parsed &&
    parsed.itemsReceived === itemCount &&
    parsed.itemsAccepted === itemCount - failedIndexes.size &&
    [...failedIndexes].every((i) => i >= 0 && i < itemCount);
  if (parsed && consistent && (status === 206 || status >= 400)) {
    const outcomes = new Array<ItemOutcome>(itemCount).fill('accepted');
    const codes = new Map<number, number>();
    for (const e of parsed.errors) {
      const retriable = RETRIABLE_ITEM_STATUS.has(e.statusCode) && e.message?.toLowerCase() !== 'telemetry sampled out.';
      outcomes[e.index] = retriable ? 'retry' : 'rejected';
      codes.set(e.statusCode, (codes.get(e.statusCode) ?? 0) + 1);
    }
    const detail = `HTTP ${status}: ${parsed.itemsAccepted}/${itemCount} accepted; ${[...codes].map(([c, n]) => `${n}×${c}`).join(', ')}`;
    return { kind: 'items', outcomes, status, retryAfterMs, detail };
  }
  if (status === 206) {
    // Some items went in, but the body does not say which: resend all, and count the overlap as possible duplicates.
    return { kind: 'failed', retriable: true, ambiguous: true, status, retryAfterMs, error: 'HTTP 206 without a usable per-item response' };
  }
  return { kind: 'failed', retriable: RETRIABLE_REQUEST_STATUS.has(status), ambiguous: false, status, retryAfterMs, error: `HTTP ${status}` };
}

/** Retry-After in seconds or as an HTTP date. */
export function parseRetryAfter(value: string | null): number | undefined {
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

const CONNECT_FAILURES = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'UND_ERR_CONNECT_TIMEOUT',
  'CERT_HAS_EXPIRED',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
]);

/**
 * A request that got no HTTP answer. When it failed before any byte was sent (refused, no route, TLS), a resend
 * cannot duplicate; after that (timeout, reset) the endpoint may have taken it.
 */
export function requestFailure(err: unknown): FailedSend {
  const e = err as { name?: unknown; code?: unknown; cause?: { code?: unknown; name?: unknown } };
  // DOMException (TimeoutError, AbortError) has a numeric legacy `code`: prefer string codes, then the name.
  const code = [e.cause?.code, e.code, e.cause?.name, e.name].find((c): c is string => typeof c === 'string' && c !== '') ?? 'error';
  return { kind: 'failed', retriable: true, ambiguous: !CONNECT_FAILURES.has(code), error: `request failed: ${code}` };
}
