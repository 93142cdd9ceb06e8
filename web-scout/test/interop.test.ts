// js-libp2p (this scout's own network code, src/net.ts) against a real rust-libp2p shard-daemon
// over a plain WebSocket on loopback: handshake both ways, work direct and by gossip, a result
// published on gossip seen at the daemon with our peer id as `from`, and a verify request answered
// through the daemon's control API. Skipped when the daemon is not built (SHARD_DAEMON or
// ~/.cache/shard/cargo-target/release/shard-daemon).
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { homedir, tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { WebSocket as WS } from 'ws'
import { ScoutNet, PROTO_VERIFY, type Via } from '../src/net'
import type { HandshakeInfo, Work } from '../src/messages'

// Node 20 lacks what js-libp2p 3 expects of its runtime (browsers and Node 22 have both)
if (typeof globalThis.WebSocket === 'undefined') (globalThis as any).WebSocket = WS
if (typeof (Promise as any).withResolvers !== 'function') {
  (Promise as any).withResolvers = () => {
    let resolve: any, reject: any
    const promise = new Promise((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}

const DAEMON = process.env.SHARD_DAEMON ?? join(process.env.CARGO_TARGET_DIR ?? join(homedir(), '.cache/shard/cargo-target'), 'release/shard-daemon')
const TOKEN = 'interop-test-token'

interface Ready { control_port: number, peer_id: string, listen_addrs: string[], ws_port: number, webrtc_port: number | null }

/** A shard-daemon on loopback, its ready line read. */
async function startDaemon (...extra: string[]): Promise<{ daemon: ChildProcess, ready: Ready }> {
  const daemon = spawn(DAEMON, ['--control-port', '0', '--tcp-port', '0', '--listen-host', '127.0.0.1', '--no-mdns', '--exit-with-stdin', ...extra],
    { env: { ...process.env, SHARD_CONTROL_TOKEN: TOKEN }, stdio: ['pipe', 'pipe', 'inherit'] })
  const lines = createInterface({ input: daemon.stdout! })
  const ready = await new Promise<Ready>((resolve, reject) => {
    lines.on('line', (l) => { if (l.startsWith('SHARD_SIDECAR_READY ')) resolve(JSON.parse(l.slice(20))) })
    daemon.on('exit', (code) => reject(new Error(`shard-daemon exited with ${code}`)))
  })
  return { daemon, ready }
}

async function stopDaemon (daemon: ChildProcess | undefined): Promise<void> {
  if (daemon === undefined || daemon.exitCode !== null) return
  const exited = new Promise(resolve => daemon.once('exit', resolve))
  daemon.stdin?.end()
  daemon.kill('SIGTERM')
  await exited
}

const scoutInfo = (): HandshakeInfo => ({ protocol_version: 1, roles: ['scout'], models: ['lookup'], capacity: 1, load: 0, agent: 'shard-web-scout/test' })

async function until<T> (check: () => Promise<T | undefined | null | false> | T | undefined | null | false, what: string, ms = 15_000): Promise<T> {
  const end = Date.now() + ms
  for (;;) {
    const v = await check()
    if (v) return v
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise(r => setTimeout(r, 100))
  }
}

describe.skipIf(!existsSync(DAEMON))('js-libp2p scout <-> rust shard-daemon', () => {
  let daemon: ChildProcess
  let ready: Ready
  let net: ScoutNet
  const events: any[] = []
  const works: Array<{ from: string, work: Work, via: Via }> = []
  const handshakes: Array<{ from: string, info: HandshakeInfo }> = []
  let sse: AbortController
  const api = async (method: string, path: string, body?: unknown): Promise<any> => {
    const res = await fetch(`http://127.0.0.1:${ready.control_port}${path}`, {
      method, headers: { Authorization: `Bearer ${TOKEN}` }, body: body === undefined ? undefined : JSON.stringify(body)
    })
    const json = await res.json()
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`)
    return json
  }

  beforeAll(async () => {
    ;({ daemon, ready } = await startDaemon())
    await api('PUT', '/local-info', { roles: ['oracle'], models: ['m'], capacity: 1, load: 0, agent: 'interop-test' })
    sse = new AbortController()
    void (async () => {
      const res = await fetch(`http://127.0.0.1:${ready.control_port}/events`, { headers: { Authorization: `Bearer ${TOKEN}` }, signal: sse.signal })
      const decoder = new TextDecoder()
      let buf = ''
      for await (const chunk of res.body as any) {
        buf += decoder.decode(chunk, { stream: true })
        let i
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i); buf = buf.slice(i + 1)
          if (line.startsWith('data: ')) events.push(JSON.parse(line.slice(6)))
        }
      }
    })().catch(() => {})
    net = new ScoutNet({
      info: scoutInfo,
      events: { onWork: (from, work, via) => works.push({ from, work, via }), onHandshake: (from, info) => handshakes.push({ from, info }) }
    })
    await net.start()
  }, 30_000)

  afterAll(async () => {
    sse?.abort()
    await net?.stop()
    await stopDaemon(daemon)
  })

  it('dials the ws address and exchanges handshakes both ways', async () => {
    const ws = ready.listen_addrs.find(a => a.includes('/ws/'))!
    expect(ws).toMatch(/^\/ip4\/127\.0\.0\.1\/tcp\/\d+\/ws\/p2p\//)
    expect(await net.dial(ws)).toBe(ready.peer_id)
    // theirs reached us (sent by the daemon on the new connection, or as the answer to ours)
    await until(() => handshakes.find(h => h.from === ready.peer_id && h.info.roles.includes('oracle')), 'the daemon\'s handshake')
    // ours reached the daemon: it lists us as a local scout
    const me = await until(async () => (await api('GET', '/peers')).peers.find((p: any) => p.peer_id === net.peerId && p.handshake), 'our handshake at the daemon')
    expect(me.roles).toEqual(['scout'])
    expect(me.local).toBe(true)
    expect(me.agent).toBe('shard-web-scout/test')
  }, 20_000)

  const work = (id: string): Work => ({ v: 1, work_id: id, model: 'm', context: 'a b c a b', position: 5, max_draft: 4, deadline_ms: Date.now() + 5000, vocab: '', tokens: null })

  it('takes work sent directly over /shard/work/1.0.0', async () => {
    const res = await api('POST', '/broadcast-work', { work: work('direct.1'), peers: [net.peerId] })
    expect(res.delivered_to).toEqual([net.peerId])
    const got = await until(() => works.find(w => w.work.work_id === 'direct.1'), 'the direct work')
    expect(got.via).toBe('direct')
    expect(got.from).toBe(ready.peer_id)
    expect(got.work.context).toBe('a b c a b')
  })

  it('takes work gossiped on shard-work', async () => {
    await until(async () => (await api('POST', '/broadcast-work', { work: work('gossip.1') })).delivered_to?.includes(net.peerId), 'the daemon to see our subscription')
    const got = await until(() => works.find(w => w.work.work_id === 'gossip.1'), 'the gossiped work')
    expect(got.via).toBe('gossip')
    expect(got.from).toBe(ready.peer_id)
  })

  it('publishes a result on shard-work-result that the daemon attributes to our peer id', async () => {
    const result = { v: 1, work_id: 'gossip.1', position: 5, text: ' c a' }
    await until(async () => {
      await net.publishResult(result)
      return events.find(e => e.type === 'result' && e.work_id === 'gossip.1')
    }, 'the result at the daemon\'s /events')
    const ev = events.find(e => e.type === 'result' && e.work_id === 'gossip.1')
    expect(ev.from).toBe(net.peerId)
    expect(ev.result).toEqual(result)
  })

  it('sends a draft over /shard/oracle/verify/1.0.0 and gets the answer relayed by /verify-response', async () => {
    const draft = { v: 1, work_id: 'direct.1', position: 5, text: ' c a' }
    const verdict = { v: 1, work_id: 'direct.1', outcome: 'verified', proposed: 2, accepted: 2, reason: '' }
    const answering = (async () => {
      const req = await until(() => events.find(e => e.type === 'verify_request' && e.request?.work_id === 'direct.1'), 'the verify request')
      expect(req.from).toBe(net.peerId)
      expect(req.request).toEqual(draft)
      await api('POST', '/verify-response', { request_id: req.request_id, response: verdict })
    })()
    const answer = await net.request(ready.peer_id, PROTO_VERIFY, draft)
    await answering
    expect(answer).toEqual(verdict)
  })

  it('gets the daemon\'s timeout answer when nobody answers a verify request', async () => {
    const answer = await net.request(ready.peer_id, PROTO_VERIFY, { v: 1, work_id: 'nobody.1', position: 1, text: 'x' })
    expect(answer).toEqual({ error: 'timeout' })
  }, 15_000)
})

// The same scout code over WebRTC-direct (issue 15: a page that may not open ws://). In Node.js,
// @libp2p/webrtc dials through node-datachannel (libdatachannel), a browser through its own
// RTCPeerConnection: the daemon side, rust-libp2p's libp2p-webrtc, is the same.
describe.skipIf(!existsSync(DAEMON))('js-libp2p scout <-> rust shard-daemon over WebRTC-direct', () => {
  let dir: string
  const daemons: ChildProcess[] = []
  let net: ScoutNet
  const works: Work[] = []
  const handshakes: HandshakeInfo[] = []
  let first: Ready

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'shard-webrtc-'))
    net = new ScoutNet({ info: scoutInfo, webrtcDirect: true, events: { onWork: (_f, w) => works.push(w), onHandshake: (_f, i) => handshakes.push(i) } })
    await net.start()
  })

  afterAll(async () => {
    await net?.stop()
    for (const d of daemons) await stopDaemon(d)
    rmSync(dir, { recursive: true, force: true })
  })

  it('dials only the webrtc-direct address, exchanges handshakes and takes direct work', async () => {
    const { daemon, ready } = await startDaemon('--data-dir', dir)
    daemons.push(daemon)
    first = ready
    const addr = ready.listen_addrs.find(a => a.includes('/webrtc-direct/'))!
    expect(addr).toMatch(new RegExp(`^/ip4/127\\.0\\.0\\.1/udp/${ready.webrtc_port}/webrtc-direct/certhash/[^/]+/p2p/${ready.peer_id}$`))
    expect(await net.dial(addr)).toBe(ready.peer_id)
    const conns = net.node.getConnections().filter(c => c.remotePeer.toString() === ready.peer_id)
    expect(conns.map(c => c.remoteAddr.toString()).every(a => a.includes('/webrtc-direct/'))).toBe(true)
    await until(() => handshakes.find(h => h.roles.includes('oracle') || h.agent.startsWith('shard-daemon')), 'the daemon\'s handshake')
    const api = async (method: string, path: string, body?: unknown): Promise<any> =>
      await (await fetch(`http://127.0.0.1:${ready.control_port}${path}`, { method, headers: { Authorization: `Bearer ${TOKEN}` }, body: body === undefined ? undefined : JSON.stringify(body) })).json()
    const me = await until(async () => (await api('GET', '/peers')).peers.find((p: any) => p.peer_id === net.peerId && p.handshake), 'our handshake at the daemon')
    expect(me.roles).toEqual(['scout'])
    expect(me.addrs.every((a: string) => a.includes('/webrtc-direct'))).toBe(true)
    await api('PUT', '/local-info', { roles: ['oracle'], models: ['m'], capacity: 1, load: 0, agent: 'interop-test' })
    const res = await api('POST', '/broadcast-work', { work: { v: 1, work_id: 'rtc.1', model: 'm', context: 'a b c a b', position: 5, max_draft: 4, deadline_ms: Date.now() + 5000, vocab: '', tokens: null }, peers: [net.peerId] })
    expect(res.delivered_to, JSON.stringify(res)).toEqual([net.peerId])
    await until(() => works.find(w => w.work_id === 'rtc.1'), 'the work over webrtc-direct')
    const topo = await api('GET', '/topology')
    expect(topo.webrtc_addrs).toEqual([addr])
    expect(topo.webrtc_port).toBe(ready.webrtc_port)
  }, 40_000)

  it('keeps its certificate (so its address) across a restart with the same data dir', async () => {
    const certhash = (r: Ready): string | undefined => r.listen_addrs.find(a => a.includes('/webrtc-direct/'))?.match(/\/certhash\/([^/]+)/)?.[1]
    await stopDaemon(daemons.pop())
    const again = await startDaemon('--data-dir', dir)
    daemons.push(again.daemon)
    const other = await startDaemon('--data-dir', join(dir, 'other'))
    daemons.push(other.daemon)
    const off = await startDaemon('--no-webrtc')
    daemons.push(off.daemon)
    expect(certhash(again.ready)).toBeDefined()
    expect(certhash(again.ready)).toBe(certhash(first))
    expect(certhash(other.ready)).not.toBe(certhash(again.ready))
    expect(off.ready.webrtc_port).toBeNull()
    expect(off.ready.listen_addrs.some(a => a.includes('webrtc'))).toBe(false)
  }, 40_000)
})
