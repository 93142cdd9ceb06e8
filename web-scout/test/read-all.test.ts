// readAll against js-libp2p's own in-memory stream pair (@libp2p/utils streamPair): a request whose
// sender closed before the handler started reading, as a rust-libp2p V1Lazy dialer's does.
import { streamPair } from '@libp2p/utils'
import { describe, expect, it } from 'vitest'
import { readAll } from '../src/net'
import { MessageError } from '../src/messages'

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s)
const text = (b: Uint8Array): string => new TextDecoder().decode(b)
const until = async (ok: () => boolean): Promise<void> => {
  while (!ok()) await new Promise(resolve => setTimeout(resolve, 5))
}

describe('readAll', () => {
  it('reads a request that ended before the handler ran and was pushed back into the stream', async () => {
    const [out, inb] = await streamPair()
    // What multistream-select does on a lazy dialer's stream: it reads ahead (the request too)...
    const seen: Uint8Array[] = []
    const readAhead = (evt: any): void => { seen.push(evt.data instanceof Uint8Array ? evt.data : evt.data.subarray()) }
    inb.addEventListener('message', readAhead)
    out.send(bytes('{"work":1}'))
    await until(() => seen.length > 0)
    await out.close()
    await until(() => inb.readableEnded) // ...the sender's close ends the stream meanwhile...
    inb.removeEventListener('message', readAhead)
    inb.unshift(seen[0]) // ...and it pushes back what was not its own before the handler runs
    expect(text(await readAll(inb, 1000))).toBe('{"work":1}')
  })

  it('reads a request whose close came before any listener', async () => {
    const [out, inb] = await streamPair()
    out.send(bytes('{"work":2}'))
    await out.close()
    await until(() => inb.remoteWriteStatus === 'closed')
    expect(text(await readAll(inb, 1000))).toBe('{"work":2}')
  })

  it('refuses a request over its limit and aborts the stream', async () => {
    const [out, inb] = await streamPair()
    out.send(new Uint8Array(64))
    out.send(new Uint8Array(64))
    await out.close()
    await expect(readAll(inb, 100)).rejects.toThrow(MessageError)
    expect(inb.status).toBe('aborted')
  })
})
