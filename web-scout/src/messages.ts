// The cooperative-generation messages (docs/protocol.md, "Cooperative generation"), with the same
// limits as the node's own codec (app/shard/network/messages.py). The sidecar carries them as
// opaque JSON; who sent one is the libp2p peer, never a field.

export const VERSION = 1
export const MAX_WORK_ID = 128
export const MAX_CONTEXT_CHARS = 64_000
export const MAX_CONTEXT_TOKENS = 32_768
export const MAX_DRAFT_TOKENS = 16
export const MAX_DRAFT_CHARS = 512
export const MAX_MESSAGE_BYTES = 256 * 1024 // the sidecar's limit on a work / verify object

export class MessageError extends Error {}

export interface Work {
  v: number
  work_id: string
  model: string
  context: string
  position: number
  max_draft: number
  deadline_ms: number
  vocab: string
  tokens: number[] | null
}

export interface Draft {
  v: number
  work_id: string
  position: number
  text?: string
  tokens?: number[]
}

export type Outcome = 'verified' | 'stale' | 'finished' | 'ignored' | string

export interface Verdict {
  v: number
  work_id: string
  outcome: Outcome
  proposed: number
  accepted: number
  reason: string
}

export interface HandshakeInfo {
  protocol_version: number
  roles: string[]
  models: string[]
  capacity: number
  load: number
  agent: string
  /** pairing proof for the peer it is sent to: hex HMAC-SHA256 of "<scout id>/<that peer's id>" (docs/security.md) */
  pair?: string
}

type Obj = Record<string, unknown>

function object (d: unknown): Obj {
  if (d === null || typeof d !== 'object' || Array.isArray(d)) throw new MessageError('the payload must be a JSON object')
  const o = d as Obj
  const v = o.v ?? VERSION
  if (v !== VERSION) throw new MessageError(`unsupported message version ${JSON.stringify(o.v)} (this scout speaks ${VERSION})`)
  return o
}

function str (d: Obj, key: string, limit: number, allowEmpty = false): string {
  const v = d[key]
  if (typeof v !== 'string' || (v.length === 0 && !allowEmpty) || v.length > limit) {
    throw new MessageError(`'${key}' must be a ${allowEmpty ? '' : 'non-empty '}string of at most ${limit} characters`)
  }
  return v
}

function int (d: Obj, key: string, lo: number, hi: number): number {
  const v = d[key]
  if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) {
    throw new MessageError(`'${key}' must be an integer between ${lo} and ${hi}`)
  }
  return v
}

function tokenList (d: Obj, key: string, limit: number): number[] | null {
  const v = d[key]
  if (v === undefined || v === null) return null
  if (!Array.isArray(v) || v.length === 0 || v.length > limit ||
      !v.every(t => typeof t === 'number' && Number.isInteger(t) && t >= 0 && t < (1 << 24))) {
    throw new MessageError(`'${key}' must be a non-empty list of at most ${limit} token ids`)
  }
  return v as number[]
}

export function parseWork (d: unknown): Work {
  const o = object(d)
  return {
    v: VERSION,
    work_id: str(o, 'work_id', MAX_WORK_ID),
    model: str(o, 'model', 256, true),
    context: str(o, 'context', MAX_CONTEXT_CHARS),
    position: int(o, 'position', 1, 2 ** 30),
    max_draft: int(o, 'max_draft', 1, MAX_DRAFT_TOKENS),
    deadline_ms: int(o, 'deadline_ms', 0, 2 ** 53),
    vocab: 'vocab' in o ? str(o, 'vocab', 64, true) : '',
    tokens: tokenList(o, 'tokens', MAX_CONTEXT_TOKENS)
  }
}

export function parseDraft (d: unknown): Draft {
  const o = object(d)
  const hasText = o.text !== undefined && o.text !== null
  const hasTokens = o.tokens !== undefined && o.tokens !== null
  if (hasText === hasTokens) throw new MessageError("give exactly one of 'text' or 'tokens'")
  const draft: Draft = { v: VERSION, work_id: str(o, 'work_id', MAX_WORK_ID), position: int(o, 'position', 1, 2 ** 30) }
  if (hasText) draft.text = str(o, 'text', MAX_DRAFT_CHARS)
  else draft.tokens = tokenList(o, 'tokens', MAX_DRAFT_TOKENS) ?? undefined
  return draft
}

/** A draft for `work` from `text`: null when there is nothing to send. Cut to the wire limit
 * without splitting a UTF-16 surrogate pair. */
export function makeDraft (work: Work, text: string): Draft | null {
  if (text.length === 0) return null
  let t = text.length > MAX_DRAFT_CHARS ? text.slice(0, MAX_DRAFT_CHARS) : text
  const last = t.charCodeAt(t.length - 1)
  if (last >= 0xd800 && last <= 0xdbff) t = t.slice(0, -1)
  if (t.length === 0) return null
  return { v: VERSION, work_id: work.work_id, position: work.position, text: t }
}

export function parseVerdict (d: unknown): Verdict {
  const o = object(d)
  if (typeof o.error === 'string' && o.outcome === undefined) {
    // the sidecar's own answers: {"error":"timeout"|"busy"|"rate limited"|...}
    throw new MessageError(`the Oracle's sidecar answered: ${o.error}`)
  }
  return {
    v: VERSION,
    work_id: str(o, 'work_id', MAX_WORK_ID),
    outcome: str(o, 'outcome', 32),
    proposed: int(o, 'proposed', 0, 1 << 20),
    accepted: int(o, 'accepted', 0, 1 << 20),
    reason: typeof o.reason === 'string' ? o.reason : ''
  }
}

export function parseHandshake (d: unknown): HandshakeInfo {
  if (d === null || typeof d !== 'object' || Array.isArray(d)) throw new MessageError('the handshake must be a JSON object')
  const o = d as Obj
  const strings = (key: string, each: number, count: number): string[] => {
    const v = o[key] ?? []
    if (!Array.isArray(v) || v.length > count || !v.every(s => typeof s === 'string' && s.length <= each)) {
      throw new MessageError(`'${key}' must be a list of at most ${count} strings of at most ${each} characters`)
    }
    return v as string[]
  }
  return {
    protocol_version: int(o, 'protocol_version', 0, 2 ** 31),
    roles: strings('roles', 64, 16),
    models: strings('models', 256, 64),
    capacity: o.capacity === undefined || o.capacity === null ? 0 : int(o, 'capacity', 0, 2 ** 32 - 1),
    load: o.load === undefined || o.load === null ? 0 : int(o, 'load', 0, 2 ** 32 - 1),
    agent: typeof o.agent === 'string' ? o.agent.slice(0, 256) : ''
  }
}

const encoder = new TextEncoder()
const decoder = new TextDecoder('utf-8', { fatal: true })

export function encodeJson (value: unknown): Uint8Array {
  const bytes = encoder.encode(JSON.stringify(value))
  if (bytes.length > MAX_MESSAGE_BYTES) throw new MessageError(`message of ${bytes.length} bytes is over the ${MAX_MESSAGE_BYTES}-byte limit`)
  return bytes
}

export function decodeJson (bytes: Uint8Array, limit = 10 * 1024 * 1024): unknown {
  if (bytes.length > limit) throw new MessageError(`message of ${bytes.length} bytes is over the ${limit}-byte limit`)
  try {
    return JSON.parse(decoder.decode(bytes))
  } catch (err) {
    throw new MessageError(`not UTF-8 JSON: ${(err as Error).message}`)
  }
}

/** The key of the request a work belongs to: `<request key>.<seq>` -> `<request key>`. */
export function requestKey (workId: string): string {
  const dot = workId.indexOf('.')
  return dot < 0 ? workId : workId.slice(0, dot)
}

/** HMAC-SHA256 of "<scout>/<oracle>" under the pairing key, hex: the same as the sidecar's `pair_proof`. */
export async function pairProof (key: string, scout: string, oracle: string): Promise<string> {
  const k = await crypto.subtle.importKey('raw', new TextEncoder().encode(key), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign'])
  const mac = new Uint8Array(await crypto.subtle.sign('HMAC', k, new TextEncoder().encode(`${scout}/${oracle}`)))
  return Array.from(mac, b => b.toString(16).padStart(2, '0')).join('')
}
