// The scout's libp2p side: js-libp2p over a plain WebSocket (or WebRTC-direct, where a page may
// not open ws://: served over https, or from another machine's node) to the node's shard-daemon, speaking
// the daemon's protocols (docs/protocol.md, "Sidecar (shard-daemon)" > "libp2p"):
//   /shard/1.0.0/handshake      request-response: our info for theirs (role "scout")
//   /shard/work/1.0.0           request-response: work pushed to us, answered {"ok":true}
//   /shard/oracle/verify/1.0.0  request-response: our draft out, the Oracle's verdict back
//   gossipsub shard-work/<model> (the work of the model the tab drafts for; shard-work until its
//   node's handshake names the model), shard-work-result
// rust-libp2p's JSON request-response codec: one JSON value per stream, no length prefix, the
// writer closes its side after the message, the reader reads to the end.

import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { gossipsub } from '@libp2p/gossipsub'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { webRTCDirect } from '@libp2p/webrtc'
import { webSockets } from '@libp2p/websockets'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { createLibp2p, type Libp2p } from 'libp2p'
import type { Connection, PeerId, Stream, StreamCloseEvent, StreamMessageEvent } from '@libp2p/interface'
import { decodeJson, encodeJson, isProgress, MessageError, parseHandshake, parseProgress, parseWork, type HandshakeInfo, type Progress, type Work } from './messages'

export const PROTO_HANDSHAKE = '/shard/1.0.0/handshake'
export const PROTO_WORK = '/shard/work/1.0.0'
export const PROTO_VERIFY = '/shard/oracle/verify/1.0.0'
export const TOPIC_WORK = 'shard-work'
export const TOPIC_RESULT = 'shard-work-result'
export const WORK_TOPIC_PREFIX = 'shard-work/'
export const MAX_WORK_TOPICS = 8 // as the sidecar's PUT /work-topics
const MAX_MODEL_CHARS = 256

/** The gossip work topic of `model` (sidecar/src/topics.rs). */
export function workTopic (model: string): string { return WORK_TOPIC_PREFIX + model }

/** The work topics to be on for `models` (the models drafted for): theirs, else the shared topic.
 * Model ids as the sidecar takes them (1 to 256 characters, none a control character). */
export function workTopics (models: string[]): string[] {
  // eslint-disable-next-line no-control-regex
  const ok = [...new Set(models)].filter(m => m.length > 0 && [...m].length <= MAX_MODEL_CHARS && !/[\u0000-\u001f\u007f-\u009f]/.test(m))
  return ok.length === 0 ? [TOPIC_WORK] : ok.slice(0, MAX_WORK_TOPICS).map(workTopic)
}

/** Whether a message on `topic` is work (or progress) for a node on `topics`: on a model's topic,
 * only that model's (the sidecar refuses to relay another's there too). */
export function takesWork (topics: string[], topic: string, payload: unknown): boolean {
  if (!topics.includes(topic)) return false
  if (!topic.startsWith(WORK_TOPIC_PREFIX)) return true
  const model = (payload as { model?: unknown } | null)?.model
  return model === topic.slice(WORK_TOPIC_PREFIX.length)
}
export const MAX_REQUEST_BYTES = 1024 * 1024 // the codec's limits
export const MAX_RESPONSE_BYTES = 10 * 1024 * 1024

export type Via = 'direct' | 'gossip'

export interface NetEvents {
  onWork?: (from: string, work: Work, via: Via) => void
  onProgress?: (from: string, progress: Progress, via: Via) => void
  onHandshake?: (from: string, info: HandshakeInfo) => void
  onPeer?: (peer: string, connected: boolean) => void
  onLog?: (line: string) => void
}

function concat (chunks: Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total)
  let at = 0
  for (const c of chunks) { out.set(c, at); at += c.length }
  return out
}

/** Everything the remote writes until it closes its side, at most `limit` bytes.
 * Not js-libp2p's async iterator: a dialer that sends its protocol, request and close in one go
 * (rust-libp2p's multistream-select V1Lazy) can close before our handler runs; the stream has then
 * already ended (`readableEnded`) while the request still waits in its buffer, pushed back by the
 * protocol negotiation, and the iterator waits for an end that already passed. */
export async function readAll (stream: Stream, limit: number): Promise<Uint8Array> {
  const chunks: Uint8Array[] = []
  let total = 0
  const drained = (): boolean => stream.readableEnded && stream.readBufferLength === 0
  return await new Promise((resolve, reject) => {
    const finish = (err?: Error): void => {
      stream.removeEventListener('message', onMessage)
      stream.removeEventListener('end', onEnd)
      stream.removeEventListener('close', onClose)
      if (err != null) reject(err)
      else resolve(concat(chunks, total))
    }
    const onMessage = (evt: StreamMessageEvent): void => {
      const bytes = evt.data instanceof Uint8Array ? evt.data : evt.data.subarray()
      total += bytes.length
      if (total > limit) {
        finish(new MessageError(`message over ${limit} bytes`))
        stream.abort(new Error('message too large'))
        return
      }
      chunks.push(bytes)
      if (drained()) finish()
    }
    const onEnd = (): void => finish()
    const onClose = (evt: StreamCloseEvent): void => finish(evt.error)
    if (drained()) { finish(); return }
    stream.addEventListener('message', onMessage)
    stream.addEventListener('end', onEnd)
    stream.addEventListener('close', onClose)
  })
}

async function writeAndClose (stream: Stream, bytes: Uint8Array): Promise<void> {
  if (!stream.send(bytes)) await stream.onDrain()
  await stream.close()
}

export interface ScoutNetOptions {
  /** our handshake for `peer` (it may carry a pairing proof made for that peer) */
  info: (peer: string) => HandshakeInfo | Promise<HandshakeInfo>
  events: NetEvents
  /** addresses this page may dial (the node's own): plain ws and loopback are refused by default in browsers */
  allowDial?: (ma: Multiaddr) => boolean
  /** dial WebRTC-direct addresses too; default: where the runtime has RTCPeerConnection (a
   *  page, not a worker). Node.js has it through @libp2p/webrtc's node-datachannel. */
  webrtcDirect?: boolean
}

/** Where RTCPeerConnection exists (a page's main thread; workers have none). */
export function hasWebRTC (): boolean {
  return typeof (globalThis as { RTCPeerConnection?: unknown }).RTCPeerConnection === 'function'
}

export class ScoutNet {
  node!: Libp2p<{ pubsub: ReturnType<ReturnType<typeof gossipsub>>, identify: unknown, ping: unknown }>
  readonly peerInfo = new Map<string, HandshakeInfo>()
  /** the gossip work topics this tab is on */
  topics: string[] = [TOPIC_WORK]
  constructor (private readonly opts: ScoutNetOptions) {}

  private log (line: string): void { this.opts.events.onLog?.(line) }

  async start (): Promise<void> {
    const allow = this.opts.allowDial ?? (() => true)
    this.node = await createLibp2p({
      transports: (this.opts.webrtcDirect ?? hasWebRTC()) ? [webSockets(), webRTCDirect()] : [webSockets()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      connectionGater: { denyDialMultiaddr: (ma: Multiaddr) => !allow(ma) },
      services: {
        identify: identify(),
        ping: ping(),
        pubsub: gossipsub({ allowPublishToZeroTopicPeers: true, emitSelf: false, fallbackToFloodsub: false })
      }
    }) as unknown as ScoutNet['node']
    await this.node.handle(PROTO_HANDSHAKE, (s, c) => this.onHandshakeStream(s, c))
    await this.node.handle(PROTO_WORK, (s, c) => this.onWorkStream(s, c))
    const pubsub = this.node.services.pubsub
    for (const t of this.topics) pubsub.subscribe(t)
    pubsub.subscribe(TOPIC_RESULT)
    pubsub.addEventListener('message', (evt) => {
      const msg = evt.detail
      if (!this.topics.includes(msg.topic) || msg.type !== 'signed') return
      try {
        const payload = decodeJson(msg.data, MAX_REQUEST_BYTES)
        if (!takesWork(this.topics, msg.topic, payload)) throw new MessageError(`not work for ${msg.topic}`)
        this.deliver(msg.from.toString(), payload, 'gossip')
      } catch (err) {
        this.log(`bad gossip work from ${msg.from.toString()}: ${(err as Error).message}`)
      }
    })
    this.node.addEventListener('peer:connect', (evt) => this.opts.events.onPeer?.(evt.detail.toString(), true))
    this.node.addEventListener('peer:disconnect', (evt) => {
      this.peerInfo.delete(evt.detail.toString())
      this.opts.events.onPeer?.(evt.detail.toString(), false)
    })
  }

  get peerId (): string { return this.node.peerId.toString() }

  /** Be on the work topics of `models` (the models this tab drafts for; none: the shared topic),
   * as a headless scout's sidecar is after `PUT /work-topics`. */
  setWorkTopics (models: string[]): string[] {
    const next = workTopics(models)
    const pubsub = this.node.services.pubsub
    for (const t of this.topics) if (!next.includes(t)) pubsub.unsubscribe(t)
    for (const t of next) if (!this.topics.includes(t)) pubsub.subscribe(t)
    this.topics = next
    return next
  }

  /** A work or a progress message (both come on the work channel). */
  private deliver (from: string, payload: unknown, via: Via): void {
    if (isProgress(payload)) this.opts.events.onProgress?.(from, parseProgress(payload), via)
    else this.opts.events.onWork?.(from, parseWork(payload), via)
  }

  /** Dial the node's sidecar and exchange handshakes; returns its peer id. */
  async dial (addr: string): Promise<string> {
    const conn = await this.node.dial(multiaddr(addr))
    const peer = conn.remotePeer.toString()
    // The daemon sends its handshake on a new connection; send ours too, so it knows our role at once.
    void this.sendHandshake(conn.remotePeer).catch((err) => this.log(`handshake to ${peer} failed: ${(err as Error).message}`))
    return peer
  }

  async sendHandshake (peer: PeerId): Promise<void> {
    const answer = await this.request(peer, PROTO_HANDSHAKE, await this.opts.info(peer.toString()))
    const info = parseHandshake(answer)
    this.peerInfo.set(peer.toString(), info)
    this.opts.events.onHandshake?.(peer.toString(), info)
  }

  /** One request-response exchange: write the JSON, close our side, read the answer to the end. */
  async request (peer: PeerId | string, protocol: string, body: unknown, timeoutMs = 15_000): Promise<unknown> {
    const target = typeof peer === 'string' ? this.connectedPeer(peer) : peer
    const signal = AbortSignal.timeout(timeoutMs)
    const stream = await this.node.dialProtocol(target, protocol, { signal })
    try {
      await writeAndClose(stream, encodeJson(body))
      return decodeJson(await readAll(stream, MAX_RESPONSE_BYTES))
    } catch (err) {
      stream.abort(err as Error)
      throw err
    }
  }

  private connectedPeer (id: string): PeerId {
    const conn = this.node.getConnections().find(c => c.remotePeer.toString() === id)
    if (conn === undefined) throw new Error(`not connected to ${id}`)
    return conn.remotePeer
  }

  private async onHandshakeStream (stream: Stream, conn: Connection): Promise<void> {
    const peer = conn.remotePeer.toString()
    try {
      const info = parseHandshake(decodeJson(await readAll(stream, MAX_REQUEST_BYTES)))
      this.peerInfo.set(peer, info)
      await writeAndClose(stream, encodeJson(await this.opts.info(peer)))
      this.opts.events.onHandshake?.(peer, info)
    } catch (err) {
      this.log(`handshake from ${peer}: ${(err as Error).message}`)
      stream.abort(err as Error)
    }
  }

  private async onWorkStream (stream: Stream, conn: Connection): Promise<void> {
    const peer = conn.remotePeer.toString()
    let work: Work | Progress | null = null
    let answer: Record<string, unknown>
    try {
      const payload = decodeJson(await readAll(stream, MAX_REQUEST_BYTES))
      work = isProgress(payload) ? parseProgress(payload) : parseWork(payload)
      answer = { ok: true }
    } catch (err) {
      answer = { ok: false, error: `invalid work: ${(err as Error).message}` }
    }
    try {
      await writeAndClose(stream, encodeJson(answer))
    } catch (err) {
      stream.abort(err as Error)
    }
    if (work === null) return
    if ('type' in work) this.opts.events.onProgress?.(peer, work, 'direct')
    else this.opts.events.onWork?.(peer, work, 'direct')
  }

  async publishResult (result: unknown): Promise<number> {
    const res = await this.node.services.pubsub.publish(TOPIC_RESULT, encodeJson(result))
    return res.recipients.length
  }

  async stop (): Promise<void> { await this.node?.stop() }
}
