// The scout: takes work from the node's sidecar (direct or gossip), keeps only the newest work of
// each request, skips work past its deadline, drafts in the worker, and sends each draft to the
// Oracle that sent the work over /shard/oracle/verify/1.0.0; the verdict says how many tokens were
// accepted (each one a unit of credit at that Oracle). Mirrors app/shard/coop/scout.py.

import type { Multiaddr } from '@multiformats/multiaddr'
import type { DrafterConfig, DraftResult } from './drafters'
import { makeDraft, pairProof, parseVerdict, receiptCredit, requestKey, type HandshakeInfo, type Verdict, type Work } from './messages'
import { PROTO_VERIFY, ScoutNet, type Via } from './net'
import { verifyPeerSignature } from './signature'

export const AGENT = 'shard-web-scout/0.1.0'
const MAX_REQUESTS = 64 // newest work kept for at most this many requests
const MAX_IN_FLIGHT = 8 // drafts awaiting a verdict
// The model drafter runs only when it can keep ahead of the Oracle: a draft the Oracle has already
// passed is stale, and on the Oracle's own machine the model's CPU time slows the Oracle down.
// The Oracle's pace comes from the work stream (position gained per second of the same request).
const PACE_MARGIN = 1.0 // model tokens/s must exceed the Oracle's tokens/s times this
const PROBE_EVERY_MS = 30_000 // a model draft now and then, to measure its speed again

export interface ScoutState {
  status: string // 'starting' | 'finding the node' | 'connecting' | 'connected' | 'disconnected' | error text
  sameOrigin: string // the node that served this page
  peerId: string | null
  connected: boolean
  nodePeer: string | null
  nodeAddr: string | null
  nodeInfo: HandshakeInfo | null
  drafter: { name: string, kind: string, loaded: boolean, loadMs: number, progress: number, notes: string[], tokensPerSecond: number | null, modelTokens: number, modelMs: number, modelInUse: boolean, why: string }
  oracleTokensPerSecond: number | null // the Oracle's decoding pace, seen from its work stream
  work: { received: number, direct: number, gossip: number, stale: number, superseded: number }
  drafts: { sent: number, bySource: Record<string, number>, failed: number, lastMs: number | null }
  verdicts: Record<string, number>
  proposed: number
  accepted: number
  credit: number // accepted tokens backed by the Oracle's signed receipt, one unit each (like app/shard/coop/scout.py)
  last: { work_id: string, text: string, source: string, outcome: string, accepted: number, proposed: number } | null
  log: string[]
}

type Listener = (s: ScoutState) => void

interface DraftReply extends DraftResult { id: number, error?: string }

export class Scout {
  readonly state: ScoutState
  private readonly latest = new Map<string, { from: string, work: Work }>()
  private readonly seen = new Map<string, { position: number, at: number }>() // per request: the newest work's position and arrival
  private lastProbe = 0
  private net!: ScoutNet
  private worker!: Worker
  private drafting = false
  private inFlight = 0
  private nextId = 1
  private readonly pending = new Map<number, (r: DraftReply) => void>()
  private readonly listeners: Listener[] = []

  constructor (private readonly config: DrafterConfig, private readonly models: string[]) {
    this.state = {
      status: 'starting',
      sameOrigin: location.origin,
      peerId: null,
      connected: false,
      nodePeer: null,
      nodeAddr: null,
      nodeInfo: null,
      drafter: { name: 'none', kind: 'none', loaded: false, loadMs: 0, progress: 0, notes: [], tokensPerSecond: null, modelTokens: 0, modelMs: 0, modelInUse: true, why: '' },
      oracleTokensPerSecond: null,
      work: { received: 0, direct: 0, gossip: 0, stale: 0, superseded: 0 },
      drafts: { sent: 0, bySource: {}, failed: 0, lastMs: null },
      verdicts: {},
      proposed: 0,
      accepted: 0,
      credit: 0,
      last: null,
      log: []
    }
  }

  onChange (fn: Listener): void { this.listeners.push(fn) }
  private changed (): void { for (const fn of this.listeners) fn(this.state) }
  log (line: string): void {
    this.state.log.push(`${new Date().toISOString().slice(11, 19)} ${line}`)
    if (this.state.log.length > 50) this.state.log.shift()
    this.changed()
  }

  /** The node's pairing key (from /scout/node.json or the page's #pair=): proves this tab is the user's. */
  pairKey: string | null = null

  async info (peer?: string): Promise<HandshakeInfo> {
    const info: HandshakeInfo = {
      protocol_version: 1,
      roles: ['scout'],
      models: this.models,
      capacity: 1,
      load: this.latest.size,
      agent: AGENT
    }
    if (this.pairKey !== null && peer !== undefined && this.state.peerId !== null) {
      info.pair = await pairProof(this.pairKey, this.state.peerId, peer)
    }
    return info
  }

  startDrafter (): void {
    this.worker = new Worker(new URL('./drafter-worker.ts', import.meta.url), { type: 'module' })
    this.worker.onmessage = (e: MessageEvent) => {
      const m = e.data
      if (m.type === 'progress') {
        this.state.drafter.kind = m.what
        this.state.drafter.progress = m.total > 0 ? m.loaded / m.total : 0
        this.changed()
      } else if (m.type === 'ready') {
        Object.assign(this.state.drafter, { name: m.name, kind: m.kind, loaded: true, loadMs: Math.round(m.loadMs), notes: m.notes, progress: 1 })
        for (const n of m.notes as string[]) this.log(n)
        this.log(`drafter ready: ${m.name as string} (${Math.round(m.loadMs)} ms)`)
        void this.pump()
      } else if (m.type === 'draft') {
        const done = this.pending.get(m.id)
        this.pending.delete(m.id)
        done?.(m as DraftReply)
      }
    }
    this.worker.onerror = (e) => this.log(`drafter worker error: ${e.message}`)
    this.worker.postMessage({ type: 'init', config: this.config })
  }

  async startNet (allowDial: (ma: Multiaddr) => boolean): Promise<void> {
    this.net = new ScoutNet({
      info: async (peer) => await this.info(peer),
      allowDial,
      events: {
        onWork: (from, work, via) => this.onWork(from, work, via),
        onHandshake: (from, info) => {
          if (from === this.state.nodePeer) { this.state.nodeInfo = info; this.changed() }
        },
        onPeer: (peer, connected) => {
          if (peer === this.state.nodePeer && !connected) {
            this.state.connected = false
            this.state.status = 'disconnected'
            this.log(`disconnected from ${peer}`)
          }
        },
        onLog: (line) => this.log(line)
      }
    })
    await this.net.start()
    this.state.peerId = this.net.peerId
    this.changed()
  }

  async connect (addr: string): Promise<void> {
    this.state.status = 'connecting'
    this.state.nodeAddr = addr
    this.changed()
    const peer = await this.net.dial(addr)
    this.state.nodePeer = peer
    this.state.connected = true
    this.state.status = 'connected'
    this.log(`connected to ${peer}`)
  }

  private onWork (from: string, work: Work, via: Via): void {
    const st = this.state.work
    st.received++
    st[via]++
    const key = requestKey(work.work_id)
    this.notePace(key, work.position)
    const old = this.latest.get(key)
    if (old !== undefined) {
      if (old.work.position > work.position) return // an older work arriving late
      st.superseded++
    }
    this.latest.set(key, { from, work })
    while (this.latest.size > MAX_REQUESTS) this.latest.delete(this.latest.keys().next().value as string)
    this.changed()
    void this.pump()
  }

  private notePace (key: string, position: number): void {
    const at = performance.now()
    const prev = this.seen.get(key)
    if (prev !== undefined && position > prev.position && at - prev.at > 20) {
      const pace = (position - prev.position) / ((at - prev.at) / 1000)
      const cur = this.state.oracleTokensPerSecond
      this.state.oracleTokensPerSecond = Math.round((cur === null ? pace : 0.7 * cur + 0.3 * pace) * 10) / 10
    }
    if (prev === undefined || position >= prev.position) this.seen.set(key, { position, at })
    while (this.seen.size > MAX_REQUESTS) this.seen.delete(this.seen.keys().next().value as string)
  }

  /** Whether the model drafter may run for the next work (prompt lookup always may). */
  private modelAllowed (): boolean {
    const d = this.state.drafter
    if (d.kind === 'lookup') return false
    if (!this.config.paceModel) return true
    const model = d.tokensPerSecond
    const oracle = this.state.oracleTokensPerSecond
    if (model === null || oracle === null) { d.modelInUse = true; d.why = 'measuring'; return true }
    if (model > oracle * PACE_MARGIN) {
      d.modelInUse = true
      d.why = `${d.kind} ${model} tok/s keeps ahead of the Oracle's ${oracle} tok/s`
      return true
    }
    d.modelInUse = false
    d.why = `${d.kind} ${model} tok/s is slower than the Oracle's ${oracle} tok/s: its drafts would be stale, so prompt lookup drafts alone and the model rests (a probe every ${PROBE_EVERY_MS / 1000} s)`
    if (performance.now() - this.lastProbe > PROBE_EVERY_MS) {
      this.lastProbe = performance.now()
      return true
    }
    return false
  }

  /** Draft the newest work of each request in turn, one at a time. */
  private async pump (): Promise<void> {
    if (this.drafting || !this.state.drafter.loaded) return
    this.drafting = true
    try {
      while (this.latest.size > 0) {
        const key = this.latest.keys().next().value as string
        const { from, work } = this.latest.get(key)!
        this.latest.delete(key)
        if (work.deadline_ms < Date.now()) {
          this.state.work.stale++
          continue
        }
        const reply = await this.draftInWorker(work)
        if (reply.error !== undefined) {
          this.log(`draft failed: ${reply.error}`)
          continue
        }
        this.noteSpeed(reply)
        const draft = makeDraft(work, reply.text)
        if (draft === null) continue
        if (this.inFlight >= MAX_IN_FLIGHT) continue
        void this.send(from, draft, reply.source, work.max_draft)
      }
    } finally {
      this.drafting = false
    }
  }

  private async draftInWorker (work: Work): Promise<DraftReply> {
    return await this.draftText(work.context, work.max_draft, this.modelAllowed())
  }

  /** A draft of `context` by the loaded drafter (also window.shardScoutDraft, for tests and the bench). */
  draftText (context: string, maxTokens: number, modelAllowed = true): Promise<DraftReply> {
    const id = this.nextId++
    return new Promise((resolve) => {
      this.pending.set(id, resolve)
      this.worker.postMessage({ type: 'draft', id, context, maxTokens, modelAllowed })
    })
  }

  private noteSpeed (r: DraftReply): void {
    this.state.drafts.lastMs = Math.round(r.ms)
    if (r.source !== 'lookup' && r.tokens > 0) {
      const d = this.state.drafter
      d.modelTokens += r.tokens
      d.modelMs += r.ms
      d.tokensPerSecond = Math.round((d.modelTokens / d.modelMs) * 1000 * 10) / 10
    }
  }

  private async send (oracle: string, draft: ReturnType<typeof makeDraft> & object, source: string, offered: number): Promise<void> {
    this.inFlight++
    this.state.drafts.sent++
    this.state.drafts.bySource[source] = (this.state.drafts.bySource[source] ?? 0) + 1
    this.changed()
    try {
      // Drafts go direct only: on the open result topic any peer could copy one and send it first for
      // the pay, so Oracles ignore drafts there (docs/security.md). No connection: not delivered.
      const verdict: Verdict = parseVerdict(await this.net.request(oracle, PROTO_VERIFY, draft, 10_000))
      // Credit only with the Oracle's signed receipt for these tokens: a verdict alone proves nothing.
      const want = { oracle, self: this.net.peerId, workId: draft.work_id, offered }
      const credit = verdict.accepted > 0 ? await receiptCredit(verdict.receipt, want, verifyPeerSignature) : 0
      if (verdict.accepted > 0 && credit === 0) this.log(`the verdict for ${draft.work_id} has no valid receipt: not counted`)
      this.state.verdicts[verdict.outcome] = (this.state.verdicts[verdict.outcome] ?? 0) + 1
      this.state.proposed += verdict.proposed
      this.state.accepted += verdict.accepted
      this.state.credit += credit
      this.state.last = { work_id: draft.work_id, text: draft.text ?? '', source, outcome: verdict.outcome, accepted: verdict.accepted, proposed: verdict.proposed }
      if (verdict.outcome === 'ignored') this.log(`draft ${draft.work_id} ignored: ${verdict.reason}`)
    } catch (err) {
      this.state.drafts.failed++
      this.log(`draft ${draft.work_id} not delivered: ${(err as Error).message}`)
    } finally {
      this.inFlight--
      this.changed()
    }
  }
}
