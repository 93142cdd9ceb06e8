// The scout: takes work and progress from the node's sidecar (direct or gossip) and keeps a
// drafting session per request (session.ts): it drafts ahead of the Oracle in the worker, a few
// tokens at a time from the session's latest guess, and sends the guess to the Oracle that sent the
// work over /shard/oracle/verify/1.0.0 whenever it reaches further (numbered drafts, at most 2 on
// their way); the verdict says how many tokens were accepted (each one a unit of credit at that
// Oracle). Mirrors app/shard/scout/headless.py.

import type { Multiaddr } from '@multiformats/multiaddr'
import type { DrafterConfig, DraftResult } from './drafters'
import { draftRef, pairProof, parseVerdict, receiptCredit, requestKey, type Draft, type HandshakeInfo, type Progress, type Verdict, type Work } from './messages'
import { PROTO_VERIFY, ScoutNet, type Via } from './net'
import { Sessions, type DraftSession } from './session'
import { verifyPeerSignature } from './signature'

export const AGENT = 'shard-web-scout/0.1.0'
const MAX_REQUESTS = 64 // requests whose pace is followed
const TIMELINE = 400 // events kept in state.timeline
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
  /** drafting sessions: progress messages taken (used: moved a session), sessions started, the
   * highest draft number sent in one, and tokens accepted from a session's second draft on (drafts
   * that only drafting ahead makes) */
  workTopics: string[] // the gossip work topics this tab is on
  sessions: { progress: number, progressUsed: number, started: number, live: number, maxSeq: number, acceptedAfterFirst: number }
  drafts: { sent: number, bySource: Record<string, number>, failed: number, lastMs: number | null }
  verdicts: Record<string, number>
  proposed: number
  accepted: number
  credit: number // accepted tokens backed by the Oracle's signed receipt, one unit each (like app/shard/coop/scout.py)
  last: { work_id: string, text: string, source: string, outcome: string, accepted: number, proposed: number } | null
  /** where the tab's time goes (for bench/coop_tab.py): model calls (wall ms, and wllama's own
   * prompt/predicted counts and ms: prompt tokens are the ones it had to read again), draft round
   * trips (send to verdict), and the ms the drafter sat idle between calls */
  timing: { modelCalls: number, modelMs: number, promptTokens: number, promptMs: number, predictedTokens: number, predictedMs: number, roundTrips: number, roundTripMs: number, idleMs: number }
  /** the newest events, [ms since the page started, what, ...figures]: 'work' position,
   * 'progress' position tokens, 'model' ms promptTokens predictedTokens, 'send' seq position
   * chars lag, 'verdict' seq outcome accepted proposed ms */
  timeline: Array<Array<number | string>>
  log: string[]
}

type Listener = (s: ScoutState) => void

interface DraftReply extends DraftResult { id: number, error?: string }

export class Scout {
  readonly state: ScoutState
  private readonly sessions = new Sessions()
  private readonly seen = new Map<string, { position: number, at: number }>() // per request: the newest work's position and arrival
  private lastProbe = 0
  private net!: ScoutNet
  private worker!: Worker
  private drafting = false
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
      workTopics: ['shard-work'],
      sessions: { progress: 0, progressUsed: 0, started: 0, live: 0, maxSeq: 0, acceptedAfterFirst: 0 },
      drafts: { sent: 0, bySource: {}, failed: 0, lastMs: null },
      verdicts: {},
      proposed: 0,
      accepted: 0,
      credit: 0,
      last: null,
      timing: { modelCalls: 0, modelMs: 0, promptTokens: 0, promptMs: 0, predictedTokens: 0, predictedMs: 0, roundTrips: 0, roundTripMs: 0, idleMs: 0 },
      timeline: [],
      log: []
    }
  }

  onChange (fn: Listener): void { this.listeners.push(fn) }
  private event (...what: Array<number | string>): void {
    this.state.timeline.push([Math.round(performance.now()), ...what])
    if (this.state.timeline.length > TIMELINE) this.state.timeline.shift()
  }

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
      load: this.sessions.map.size,
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
        onProgress: (from, progress) => this.onProgress(from, progress),
        onHandshake: (from, info) => { if (from === this.state.nodePeer) this.adoptNode(info) },
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
    const info = this.net.peerInfo.get(peer)
    if (info !== undefined) this.adoptNode(info) // its handshake came first
    this.state.connected = true
    this.state.status = 'connected'
    this.log(`connected to ${peer}`)
  }

  /** The node's handshake: an Oracle's models are the ones this tab drafts for, so it takes
   * their gossip work topics (`shard-work/<model>`) rather than everyone's `shard-work`. */
  private adoptNode (info: HandshakeInfo): void {
    this.state.nodeInfo = info
    const topics = this.net.setWorkTopics(info.roles.includes('oracle') ? info.models : [])
    if (topics.join() !== this.state.workTopics.join()) this.log(`work topics: ${topics.join(', ')}`)
    this.state.workTopics = topics
    this.changed()
  }

  private onWork (from: string, work: Work, via: Via): void {
    const st = this.state.work
    st.received++
    st[via]++
    const key = requestKey(work.work_id)
    this.event('work', work.position)
    this.notePace(key, work.position)
    const old = this.sessions.map.get(key)
    if (old !== undefined && old.oracle === from) {
      if (old.work.position > work.position) return // an older work arriving late
      st.superseded++
    }
    if (this.sessions.onWork(from, work, performance.now()) === null) st.stale++
    this.noteSessions()
    void this.pump()
  }

  private onProgress (from: string, progress: Progress): void {
    this.state.sessions.progress++
    this.event('progress', progress.position, progress.tokens.length)
    this.notePace(requestKey(progress.work_id), progress.position + progress.tokens.length)
    if (this.sessions.onProgress(from, progress, performance.now())) this.state.sessions.progressUsed++
    this.noteSessions()
    void this.pump()
  }

  private noteSessions (): void {
    this.state.sessions.started = this.sessions.started
    this.state.sessions.live = this.sessions.map.size
    this.changed()
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

  /** Keep drafting for the newest session that wants more, one model call at a time, and send
   * each session's guess when it reaches further; returns when no session has anything to do
   * (the next work, progress or verdict wakes it). */
  private idleSince: number | null = null

  private async pump (): Promise<void> {
    if (this.drafting || !this.state.drafter.loaded) return
    this.drafting = true
    const chunk = this.config.chunk
    try {
      for (;;) {
        const s = this.sessions.next(chunk, performance.now())
        if (s === null) break
        s.pace = this.config.followPace ? this.state.oracleTokensPerSecond : null
        const job = s.want(chunk, performance.now())
        if (job !== null) {
          if (this.idleSince !== null) this.state.timing.idleMs += Math.round(performance.now() - this.idleSince)
          this.idleSince = null
          const reply = await this.draftText(job.prompt, job.maxTokens, this.modelAllowed())
          this.idleSince = performance.now()
          if (reply.error !== undefined) {
            this.log(`draft failed: ${reply.error}`)
            s.grew(job.prompt, '', 0, 'error') // no more for this text
          } else {
            this.noteSpeed(reply)
            s.grew(job.prompt, reply.text, reply.tokens, reply.source)
          }
        }
        const draft = s.nextDraft(performance.now())
        if (draft !== null) {
          this.event('send', draft.seq ?? 0, draft.position, (draft.text ?? '').length, s.lag(performance.now()))
          void this.send(s, draft)
        }
      }
    } finally {
      this.drafting = false
      this.noteSessions()
    }
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
    const t = this.state.timing
    const w = r.timings ?? {}
    t.modelCalls++
    t.modelMs += Math.round(r.ms)
    t.promptTokens += w.prompt_n ?? 0
    t.promptMs += Math.round(w.prompt_ms ?? 0)
    t.predictedTokens += w.predicted_n ?? 0
    t.predictedMs += Math.round(w.predicted_ms ?? 0)
    this.event('model', Math.round(r.ms), w.prompt_n ?? 0, w.predicted_n ?? r.tokens)
    if (r.source !== 'lookup' && r.tokens > 0) {
      const d = this.state.drafter
      d.modelTokens += r.tokens
      d.modelMs += r.ms
      d.tokensPerSecond = Math.round((d.modelTokens / d.modelMs) * 1000 * 10) / 10
    }
  }

  private async send (s: DraftSession, draft: Draft): Promise<void> {
    const oracle = s.oracle
    const source = s.source
    const offered = s.work.max_draft // no receipt may claim more than a work asks for
    this.state.drafts.sent++
    this.state.drafts.bySource[source] = (this.state.drafts.bySource[source] ?? 0) + 1
    this.state.sessions.maxSeq = Math.max(this.state.sessions.maxSeq, draft.seq ?? 0)
    this.changed()
    let verdict: Verdict | null = null
    const t0 = performance.now()
    try {
      // Drafts go direct only: on the open result topic any peer could copy one and send it first for
      // the pay, so Oracles ignore drafts there (docs/security.md). No connection: not delivered.
      verdict = parseVerdict(await this.net.request(oracle, PROTO_VERIFY, draft, 10_000))
      // Credit only with the Oracle's signed receipt for these tokens: a verdict alone proves nothing.
      const want = { oracle, self: this.net.peerId, ref: draftRef(draft), offered }
      const credit = verdict.accepted > 0 ? await receiptCredit(verdict.receipt, want, verifyPeerSignature) : 0
      if (verdict.accepted > 0 && credit === 0) this.log(`the verdict for ${draft.work_id} has no valid receipt: not counted`)
      const ms = Math.round(performance.now() - t0)
      this.state.timing.roundTrips++
      this.state.timing.roundTripMs += ms
      this.event('verdict', draft.seq ?? 0, verdict.outcome === 'ignored' ? `ignored:${verdict.reason}` : verdict.outcome, verdict.accepted, verdict.proposed, ms)
      this.state.verdicts[verdict.outcome] = (this.state.verdicts[verdict.outcome] ?? 0) + 1
      this.state.proposed += verdict.proposed
      this.state.accepted += verdict.accepted
      if ((draft.seq ?? 0) > 1) this.state.sessions.acceptedAfterFirst += verdict.accepted
      this.state.credit += credit
      this.state.last = { work_id: draft.work_id, text: draft.text ?? '', source, outcome: verdict.outcome, accepted: verdict.accepted, proposed: verdict.proposed }
      if (verdict.outcome === 'ignored') this.log(`draft ${draft.work_id} ignored: ${verdict.reason}`)
    } catch (err) {
      this.state.drafts.failed++
      this.log(`draft ${draft.work_id} not delivered: ${(err as Error).message}`)
    } finally {
      s.answered(verdict)
      this.changed()
      void this.pump()
    }
  }
}
