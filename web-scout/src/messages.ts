// The cooperative-generation messages (docs/protocol.md, "Cooperative generation"), with the same
// limits as the node's own codec (app/shard/network/messages.py, credit/receipts.py). The sidecar
// carries them as opaque JSON; who sent one is the libp2p peer, never a field. The examples in
// protocol/fixtures/ are read by this file's test (test/fixtures.test.ts), pytest and cargo test alike.

export const VERSION = 1
export const MAX_WORK_ID = 128
export const MAX_CONTEXT_CHARS = 64_000
export const MAX_CONTEXT_TOKENS = 32_768
export const MAX_DRAFT_TOKENS = 16
export const MAX_SESSION_DRAFT_TOKENS = 2 * MAX_DRAFT_TOKENS // a drafting session's draft: the Oracle's lead plus one check (app/shard/limits.py)
export const MAX_DRAFT_CHARS = 512
export const MAX_MESSAGE_BYTES = 256 * 1024 // the sidecar's limit on a work / verify object
export const MAX_PROGRESS_TOKENS = 64
export const MAX_PROGRESS_CHARS = 2048
export const MAX_DRAFT_SEQ = 1 << 20

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
  /** the draft's number in a drafting session (1, 2, ...): its receipt is about `<work_id>#<seq>` */
  seq?: number
  /** with `tokens`: each one's probability under the scout's model, a whole percent (the Oracle measures what it is worth) */
  confidence?: number[]
}

/** The tokens an Oracle decided for a request, streamed to its scouts (a drafting session's news). */
export interface Progress {
  v: number
  type: 'progress'
  work_id: string
  position: number
  tokens: number[]
  text: string
  /** the Oracle's model (routes it to the model's gossip topic); '' from Oracles that predate it */
  model: string
}

export type Outcome = 'verified' | 'stale' | 'finished' | 'ignored' | string

export interface Verdict {
  v: number
  work_id: string
  outcome: Outcome
  proposed: number
  accepted: number
  reason: string
  /** the Oracle's signed receipt when tokens were accepted (unchecked here: see `parseReceipt`,
   * `checkReceipt`); only a receipt that checks out counts as credit */
  receipt: unknown
}

export const RECEIPT_KINDS = ['draft', 'served'] as const
export const MAX_RECEIPT_AMOUNT: Record<string, number> = { draft: MAX_DRAFT_TOKENS, served: 65536 }
const MAX_ID_CHARS = 128
const MAX_REF_CHARS = 160
const MAX_SIGNATURE_CHARS = 256

/** What one node owes another, signed by the issuer's libp2p key (app/shard/credit/receipts.py). */
export interface Receipt {
  kind: 'draft' | 'served'
  issuer: string
  subject: string
  ref: string
  amount: number
  ts: number
}

export interface SignedReceipt {
  receipt: Receipt
  signature_b64: string
}

export interface DraftModelInfo {
  name: string
  size: number
  sha256: string
  vocab: string
}

export interface HandshakeInfo {
  protocol_version: number
  roles: string[]
  models: string[]
  capacity: number
  load: number
  agent: string
  draft_model?: DraftModelInfo
  /** pairing proof for the peer it is sent to: hex HMAC-SHA256 of "<scout id>/<that peer's id>" (docs/security.md) */
  pair?: string
}

type Obj = Record<string, unknown>

function object (d: unknown): Obj {
  if (d === null || typeof d !== 'object' || Array.isArray(d)) throw new MessageError('the payload must be a JSON object')
  const o = d as Obj
  const v = o.v === undefined ? VERSION : o.v
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
  else draft.tokens = tokenList(o, 'tokens', MAX_SESSION_DRAFT_TOKENS) ?? undefined
  if (o.seq !== undefined) draft.seq = int(o, 'seq', 0, MAX_DRAFT_SEQ)
  if (o.confidence !== undefined && o.confidence !== null) {
    const c = o.confidence
    if (draft.tokens === undefined || !Array.isArray(c) || c.length !== draft.tokens.length ||
        !c.every(p => typeof p === 'number' && Number.isInteger(p) && p >= 0 && p <= 100)) {
      throw new MessageError("'confidence' must give each of the draft's 'tokens' one percent")
    }
    draft.confidence = c as number[]
  }
  return draft
}

/** Whether a payload on the work channel is a `Progress` (its `type` tells it from a `Work`). */
export function isProgress (d: unknown): boolean {
  return typeof d === 'object' && d !== null && !Array.isArray(d) && (d as { type?: unknown }).type === 'progress'
}

export function parseProgress (d: unknown): Progress {
  const o = object(d)
  if (o.type !== 'progress') throw new MessageError("'type' must be 'progress'")
  const tokens = tokenList(o, 'tokens', MAX_PROGRESS_TOKENS)
  if (tokens === null) throw new MessageError(`'tokens' must be a non-empty list of at most ${MAX_PROGRESS_TOKENS} token ids`)
  return {
    v: VERSION,
    type: 'progress',
    work_id: str(o, 'work_id', MAX_WORK_ID),
    position: int(o, 'position', 1, 2 ** 30),
    tokens,
    text: o.text === undefined ? '' : str(o, 'text', MAX_PROGRESS_CHARS, true),
    model: o.model === undefined ? '' : str(o, 'model', 256, true)
  }
}

/** What a draft's receipt and ledger entry are about: the work, and the draft within it. */
export function draftRef (draft: Draft): string {
  return draft.seq !== undefined && draft.seq > 0 ? `${draft.work_id}#${draft.seq}` : draft.work_id
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
    reason: typeof o.reason === 'string' ? o.reason : '',
    receipt: o.receipt !== null && typeof o.receipt === 'object' && !Array.isArray(o.receipt) ? o.receipt : null
  }
}

/** A peer's `{"receipt": {...}, "signature_b64"}`: exactly the six receipt fields with their types
 * and bounds (an amount is a number within its kind's bound, never a string), or MessageError. */
export function parseReceipt (d: unknown): SignedReceipt {
  if (d === null || typeof d !== 'object' || Array.isArray(d)) throw new MessageError('a receipt must be a JSON object')
  const signed = d as Obj
  const r = signed.receipt
  if (r === null || typeof r !== 'object' || Array.isArray(r)) throw new MessageError("'receipt' must be an object")
  const o = r as Obj
  const keys = Object.keys(o).sort().join(',')
  if (keys !== 'amount,issuer,kind,ref,subject,ts') throw new MessageError('a receipt has exactly kind, issuer, subject, ref, amount and ts')
  const kind = o.kind
  if (kind !== 'draft' && kind !== 'served') throw new MessageError("'kind' must be 'draft' or 'served'")
  const amount = o.amount
  if (typeof amount !== 'number' || !Number.isFinite(amount) || amount < 0 || amount > MAX_RECEIPT_AMOUNT[kind]) {
    throw new MessageError(`'amount' must be a number from 0 to ${MAX_RECEIPT_AMOUNT[kind]}`)
  }
  const sig = signed.signature_b64
  if (typeof sig !== 'string' || sig.length === 0 || sig.length > MAX_SIGNATURE_CHARS) {
    throw new MessageError(`'signature_b64' must be a string of 1 to ${MAX_SIGNATURE_CHARS} characters`)
  }
  return {
    receipt: {
      kind,
      issuer: str(o, 'issuer', MAX_ID_CHARS),
      subject: str(o, 'subject', MAX_ID_CHARS),
      ref: str(o, 'ref', MAX_REF_CHARS),
      amount,
      ts: int(o, 'ts', 0, 2 ** 40 - 1)
    },
    signature_b64: sig
  }
}

/** The bytes the issuer signed: canonical JSON as Python's `json.dumps(sort_keys=True,
 * separators=(",", ":"))` writes it (the amount always a float, non-ASCII escaped). */
export function receiptPayload (r: Receipt): Uint8Array {
  const s = (v: string): string => JSON.stringify(v).replace(/[\u0080-\uffff]/g, c => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'))
  const amount = Number.isInteger(r.amount) ? r.amount.toFixed(1) : String(r.amount)
  return new TextEncoder().encode(
    `{"amount":${amount},"issuer":${s(r.issuer)},"kind":${s(r.kind)},"ref":${s(r.ref)},"subject":${s(r.subject)},"ts":${r.ts}}`
  )
}

/** Verifies an Ed25519 signature by `issuer` (a libp2p peer id that embeds its public key). */
export type SignatureCheck = (issuer: string, payload: Uint8Array, signature: Uint8Array) => Promise<boolean>

/** The credit a verdict's receipt backs: its amount if it is well formed, about this exchange
 * (kind "draft", from `oracle`, for `self`, about `ref`: the draft's `draftRef`), for at most `offered` tokens and signed
 * by the Oracle; else 0. Mirrors app/shard/coop/scout.py (receipts.check). */
export async function receiptCredit (
  receipt: unknown, want: { oracle: string, self: string, ref: string, offered: number }, verify: SignatureCheck
): Promise<number> {
  let signed: SignedReceipt
  try {
    signed = parseReceipt(receipt)
  } catch {
    return 0
  }
  const r = signed.receipt
  if (r.kind !== 'draft' || r.issuer !== want.oracle || r.subject !== want.self || r.ref !== want.ref || r.amount > want.offered) return 0
  let sig: Uint8Array
  try {
    sig = Uint8Array.from(atob(signed.signature_b64), c => c.charCodeAt(0))
  } catch {
    return 0
  }
  try {
    return (await verify(r.issuer, receiptPayload(r), sig)) ? r.amount : 0
  } catch {
    return 0
  }
}

const chars = (s: string): number => [...s].length
const HEX = /^[0-9a-fA-F]+$/

/** A peer's handshake, checked as the sidecar checks it (sidecar/src/util.rs, `LocalInfo::parse`). */
export function parseHandshake (d: unknown): HandshakeInfo {
  if (d === null || typeof d !== 'object' || Array.isArray(d)) throw new MessageError('the handshake must be a JSON object')
  const o = d as Obj
  const strings = (key: string, each: number, count: number): string[] => {
    const v = o[key] === undefined ? [] : o[key]
    if (!Array.isArray(v) || v.length > count || !v.every(s => typeof s === 'string' && s.length > 0 && chars(s) <= each)) {
      throw new MessageError(`'${key}' must be a list of at most ${count} strings of 1 to ${each} characters`)
    }
    return v as string[]
  }
  const hex = (v: unknown, key: string, max: number): string => {
    if (typeof v !== 'string' || v.length === 0 || v.length > max || !HEX.test(v)) throw new MessageError(`'${key}' must be 1 to ${max} hex digits`)
    return v
  }
  if (o.agent !== undefined && (typeof o.agent !== 'string' || chars(o.agent) > 256)) {
    throw new MessageError("'agent' must be a string of at most 256 characters")
  }
  const info: HandshakeInfo = {
    protocol_version: int(o, 'protocol_version', 0, Number.MAX_SAFE_INTEGER),
    roles: strings('roles', 64, 16),
    models: strings('models', 256, 64),
    capacity: o.capacity === undefined ? 0 : int(o, 'capacity', 0, 2 ** 32 - 1),
    load: o.load === undefined ? 0 : int(o, 'load', 0, 2 ** 32 - 1),
    agent: typeof o.agent === 'string' ? o.agent : ''
  }
  const dm = o.draft_model
  if (dm !== undefined && dm !== null) {
    if (typeof dm !== 'object' || Array.isArray(dm)) throw new MessageError("'draft_model' must be an object")
    const m = dm as Obj
    const name = m.name
    if (typeof name !== 'string' || name.length === 0 || chars(name) > 256 || /[/\\]/.test(name) || name === '.' || name === '..') {
      throw new MessageError("'draft_model.name' must be a file name")
    }
    const sha256 = hex(m.sha256, 'draft_model.sha256', 64)
    if (sha256.length !== 64) throw new MessageError("'draft_model.sha256' must be 64 hex digits")
    info.draft_model = { name, size: int(m, 'size', 0, Number.MAX_SAFE_INTEGER), sha256, vocab: hex(m.vocab, 'draft_model.vocab', 64) }
  }
  if (o.pair !== undefined) info.pair = hex(o.pair, 'pair', 64)
  return info
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
