import { describe, expect, it } from 'vitest'
import { MAX_DRAFT_CHARS, MAX_SESSION_DRAFT_TOKENS, MessageError, decodeJson, encodeJson, makeDraft, parseDraft, parseHandshake, parseVerdict, pairProof, parseWork, requestKey } from '../src/messages'

const work = { v: 1, work_id: 'abcd.3', model: 'smol', context: 'Hello', position: 7, max_draft: 8, deadline_ms: 1_700_000_000_000 }

describe('Work', () => {
  it('parses the node\'s work, with or without tokens', () => {
    expect(parseWork(work)).toMatchObject({ ...work, vocab: '', tokens: null })
    expect(parseWork({ ...work, vocab: 'v1', tokens: [1, 2, 3] }).tokens).toEqual([1, 2, 3])
    expect(parseWork({ ...work, v: undefined }).work_id).toBe('abcd.3')
  })
  it.each([
    ['not an object', [1]],
    ['version', { ...work, v: 2 }],
    ['empty work id', { ...work, work_id: '' }],
    ['long work id', { ...work, work_id: 'x'.repeat(129) }],
    ['empty context', { ...work, context: '' }],
    ['long context', { ...work, context: 'x'.repeat(64_001) }],
    ['position 0', { ...work, position: 0 }],
    ['position float', { ...work, position: 1.5 }],
    ['max_draft 0', { ...work, max_draft: 0 }],
    ['max_draft 17', { ...work, max_draft: 17 }],
    ['deadline string', { ...work, deadline_ms: '1' }],
    ['empty tokens', { ...work, tokens: [] }],
    ['negative token', { ...work, tokens: [-1] }],
    ['token too big', { ...work, tokens: [1 << 24] }],
    ['model not a string', { ...work, model: 3 }]
  ])('refuses %s', (_, bad) => {
    expect(() => parseWork(bad)).toThrow(MessageError)
  })
  it('keys works by request', () => {
    expect(requestKey('abcd.3')).toBe('abcd')
    expect(requestKey('plain')).toBe('plain')
  })
})

describe('Draft', () => {
  it('is made from text for the work\'s position', () => {
    const d = makeDraft(parseWork(work), ' world')
    expect(d).toEqual({ v: 1, work_id: 'abcd.3', position: 7, text: ' world' })
    expect(parseDraft(d)).toEqual(d)
  })
  it('is cut to the limit without splitting a surrogate pair, and empty text makes none', () => {
    expect(makeDraft(parseWork(work), '')).toBeNull()
    expect(makeDraft(parseWork(work), 'y'.repeat(600))!.text!.length).toBe(MAX_DRAFT_CHARS)
    const t = 'y'.repeat(MAX_DRAFT_CHARS - 1) + '😀'
    expect(makeDraft(parseWork(work), t)!.text).toBe('y'.repeat(MAX_DRAFT_CHARS - 1))
  })
  it('needs exactly one of text or tokens', () => {
    expect(() => parseDraft({ work_id: 'a', position: 1 })).toThrow(MessageError)
    expect(() => parseDraft({ work_id: 'a', position: 1, text: 'x', tokens: [1] })).toThrow(MessageError)
    expect(parseDraft({ work_id: 'a', position: 1, tokens: [1, 2] }).tokens).toEqual([1, 2])
    expect(parseDraft({ work_id: 'a', position: 1, tokens: new Array(MAX_SESSION_DRAFT_TOKENS).fill(1) }).tokens).toHaveLength(32)
    expect(() => parseDraft({ work_id: 'a', position: 1, tokens: new Array(MAX_SESSION_DRAFT_TOKENS + 1).fill(1) })).toThrow(MessageError)
    expect(() => parseDraft({ work_id: 'a', position: 1, text: 'x'.repeat(513) })).toThrow(MessageError)
  })
})

describe('Verdict', () => {
  it('parses the Oracle\'s answer', () => {
    expect(parseVerdict({ v: 1, work_id: 'a.1', outcome: 'verified', proposed: 5, accepted: 3, reason: '' }))
      .toEqual({ v: 1, work_id: 'a.1', outcome: 'verified', proposed: 5, accepted: 3, reason: '', receipt: null })
    expect(parseVerdict({ work_id: 'a.1', outcome: 'ignored', proposed: 0, accepted: 0, reason: 'duplicate' }).reason).toBe('duplicate')
    expect(parseVerdict({ work_id: 'a.1', outcome: 'stale', proposed: 0, accepted: 0, reason: 7 }).reason).toBe('')
  })
  it('turns the sidecar\'s errors and bad verdicts into errors', () => {
    expect(() => parseVerdict({ error: 'timeout' })).toThrow(/timeout/)
    expect(() => parseVerdict({ work_id: 'a.1', outcome: 'verified', proposed: -1, accepted: 0 })).toThrow(MessageError)
    expect(() => parseVerdict({ work_id: 'a.1', proposed: 1, accepted: 0 })).toThrow(MessageError)
  })
})

describe('handshake and JSON framing', () => {
  it('parses a handshake and refuses a bad one', () => {
    const h = { protocol_version: 1, roles: ['oracle'], models: ['m'], capacity: 4, load: 0, agent: 'shard/0.1' }
    expect(parseHandshake(h)).toEqual(h)
    expect(() => parseHandshake({ roles: [] })).toThrow(MessageError)
    expect(() => parseHandshake({ protocol_version: 1, roles: 'scout' })).toThrow(MessageError)
  })
  it('round-trips JSON and enforces the size limits', () => {
    expect(decodeJson(encodeJson({ a: 'é' }))).toEqual({ a: 'é' })
    expect(() => encodeJson({ a: 'x'.repeat(300 * 1024) })).toThrow(MessageError)
    expect(() => decodeJson(new Uint8Array([0xff, 0xfe]))).toThrow(MessageError)
    expect(() => decodeJson(new TextEncoder().encode('{"a":'))).toThrow(MessageError)
    expect(() => decodeJson(new Uint8Array(20), 10)).toThrow(MessageError)
  })
})

describe('pairProof', () => {
  it('is the HMAC-SHA256 the node checks (app/shard/network/pairing.py, the sidecar)', async () => {
    expect(await pairProof('00ff', '12D3KooWscout', '12D3KooWoracle')).toBe('b1751909bfe7c0e3b730344a2c844ba13f858e6f77ae559b6bbc95596ee821f6')
  })
})
