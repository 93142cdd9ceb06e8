// protocol/fixtures/: valid and invalid examples of every network message, read here, by pytest
// (tests/test_fixtures.py) and by cargo test (sidecar/tests/fixtures.rs): the same answers in all three.
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { describe, expect, it } from 'vitest'
import { MessageError, parseDraft, parseHandshake, parseProgress, parseReceipt, parseVerdict, parseWork, receiptCredit, receiptPayload, type Receipt } from '../src/messages'
import { verifyPeerSignature } from '../src/signature'

const ROOT = join(__dirname, '..', '..', 'protocol', 'fixtures')
// The messages this scout parses; infer_request is between nodes only (Python and the sidecar).
const PARSERS: Record<string, (d: unknown) => unknown> = {
  work: parseWork, draft: parseDraft, verdict: parseVerdict, handshake: parseHandshake, receipt: parseReceipt, progress: parseProgress
}
const read = (message: string, name: string): unknown => JSON.parse(readFileSync(join(ROOT, message, name), 'utf8'))

describe('protocol/fixtures', () => {
  for (const [message, parse] of Object.entries(PARSERS)) {
    const files = readdirSync(join(ROOT, message)).filter(f => f.endsWith('.json'))
    it(`has valid and invalid ${message} examples`, () => {
      expect(files.some(f => f.startsWith('valid-'))).toBe(true)
      expect(files.some(f => f.startsWith('invalid-'))).toBe(true)
    })
    it.each(files)(`${message}/%s`, (file) => {
      const body = read(message, file)
      if (file.startsWith('valid-')) expect(() => parse(body)).not.toThrow()
      else expect(() => parse(body)).toThrow(MessageError)
    })
  }
})

describe('receipts', () => {
  const fixture = read('verdict', 'valid-verified-with-receipt.json') as { work_id: string, receipt: { receipt: Receipt } }
  const { issuer, subject } = fixture.receipt.receipt
  const want = { oracle: issuer, self: subject, ref: fixture.work_id, offered: 8 }

  it('checks the signature Python made over its canonical JSON', async () => {
    expect(new TextDecoder().decode(receiptPayload(fixture.receipt.receipt))).toBe(
      `{"amount":3.0,"issuer":"${issuer}","kind":"draft","ref":"${fixture.work_id}","subject":"${subject}","ts":1764500000}`
    )
    expect(await receiptCredit(fixture.receipt, want, verifyPeerSignature)).toBe(3)
  })

  it('counts nothing a receipt does not back', async () => {
    const verdict = parseVerdict(fixture)
    const tampered = { ...fixture.receipt, receipt: { ...fixture.receipt.receipt, amount: 4 } }
    expect(await receiptCredit(verdict.receipt, want, verifyPeerSignature)).toBe(3)
    expect(await receiptCredit(parseVerdict({ ...fixture, receipt: undefined }).receipt, want, verifyPeerSignature)).toBe(0)
    expect(await receiptCredit(tampered, want, verifyPeerSignature)).toBe(0) // the signature no longer matches
    expect(await receiptCredit(fixture.receipt, { ...want, self: issuer }, verifyPeerSignature)).toBe(0) // for someone else
    expect(await receiptCredit(fixture.receipt, { ...want, ref: 'other.1' }, verifyPeerSignature)).toBe(0)
    expect(await receiptCredit(fixture.receipt, { ...want, offered: 2 }, verifyPeerSignature)).toBe(0) // more than was offered
    // Well formed and about this draft, but signed by another key than the Oracle's.
    const other = await generateKeyPair('Ed25519')
    const forged = { receipt: fixture.receipt.receipt, signature_b64: btoa(String.fromCharCode(...await other.sign(receiptPayload(fixture.receipt.receipt)))) }
    expect(await receiptCredit(forged, want, verifyPeerSignature)).toBe(0)
    // The same receipt signed by the key of the peer id it names does count.
    const oracle = peerIdFromPrivateKey(other).toString()
    const own = { receipt: { ...fixture.receipt.receipt, issuer: oracle }, signature_b64: '' }
    own.signature_b64 = btoa(String.fromCharCode(...await other.sign(receiptPayload(own.receipt))))
    expect(await receiptCredit(own, { ...want, oracle }, verifyPeerSignature)).toBe(3)
  })
})
