// Signature checks against a libp2p peer id (an Ed25519 peer id embeds its public key): how the
// scout checks the receipts Oracles sign for its accepted drafts (messages.ts, `receiptCredit`).

import { peerIdFromString } from '@libp2p/peer-id'

export async function verifyPeerSignature (peer: string, payload: Uint8Array, signature: Uint8Array): Promise<boolean> {
  const key = peerIdFromString(peer).publicKey
  if (key === undefined) return false // an RSA peer id carries only a hash of its key
  return await key.verify(payload, signature)
}
