// The tab's scout, run in a Worker (scout-worker.ts) while the user lets it contribute; ended
// (terminated, with its nested drafter worker) when they stop it or, if they ask, while the tab
// is hidden. Each run is a new libp2p peer id: the tab's ids are kept (bounded) so that the
// sidebar can sum what the node's ledger credits them.
import type { Store } from './store'
import { emptyScoutState, type ScoutStart, type TabScoutState } from './scout-types'
import type { DrafterConfig } from '../drafters'

const MAX_PEERS = 32

export class TabScout {
  state: TabScoutState = emptyScoutState('not started')
  private worker: Worker | null = null
  private prior = { work: 0, accepted: 0, proposed: 0 } // this tab's earlier runs
  contribute: boolean
  pauseHidden: boolean

  constructor (private readonly store: Store, private readonly apiKey: () => string | null, private readonly onChange: () => void) {
    this.contribute = store.get('scout.contribute') !== 'off'
    this.pauseHidden = store.get('scout.pause_hidden') === 'on'
    document.addEventListener('visibilitychange', () => this.apply())
  }

  peers (): string[] {
    try {
      const v = JSON.parse(this.store.get('scout.peers') ?? '[]')
      return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []
    } catch { return [] }
  }

  private remember (peer: string): void {
    const list = this.peers()
    if (list.includes(peer)) return
    this.store.set('scout.peers', JSON.stringify([...list, peer].slice(-MAX_PEERS)))
  }

  setContribute (on: boolean): void {
    this.contribute = on
    this.store.set('scout.contribute', on ? 'on' : 'off')
    this.apply()
  }

  setPauseHidden (on: boolean): void {
    this.pauseHidden = on
    this.store.set('scout.pause_hidden', on ? 'on' : null)
    this.apply()
  }

  /** Why the scout is not running now, or '' when it should run. */
  reason (): string {
    if (!this.contribute) return 'Not contributing: turned off in this tab.'
    // Over plain http from another machine the page is no secure context (no cross-origin
    // isolation, no WebCrypto) and the sidecar's WebSocket listens on loopback: nothing to dial.
    if (!isSecureContext) return "Not scouting: open the page on the node's own machine (http://127.0.0.1) to scout; a tab on another machine needs WebRTC-direct, which is not there yet."
    if (this.pauseHidden && document.visibilityState === 'hidden') return 'Paused while the tab is hidden.'
    return ''
  }

  apply (): void {
    const why = this.reason()
    if (why === '' && this.worker === null) this.start()
    if (why !== '' && this.worker !== null) this.end(why)
    this.onChange()
  }

  private start (): void {
    const params = new URLSearchParams(location.search)
    const drafter = params.get('drafter')
    const prefer = (['auto', 'webllm', 'wllama', 'lookup'].includes(drafter ?? '') ? drafter : null) as DrafterConfig['prefer'] | null
    const hc = navigator.hardwareConcurrency ?? 2
    const worker = new Worker(new URL('./scout-worker.ts', import.meta.url), { type: 'module', name: 'shard-scout' })
    worker.onmessage = (e: MessageEvent) => {
      if (e.data?.type !== 'state' || this.worker !== worker) return
      const s = e.data.state as Partial<TabScoutState>
      Object.assign(this.state, s)
      for (const k of ['work', 'accepted', 'proposed'] as const) {
        if (typeof s[k] === 'number') this.state[k] = this.prior[k] + s[k]
      }
      if (this.state.peerId !== null) this.remember(this.state.peerId)
      this.onChange()
    }
    worker.onerror = (e) => { this.state.status = `failed: ${e.message}`; this.onChange() }
    const start: ScoutStart = { type: 'start', apiKey: this.apiKey(), prefer, threads: Math.max(1, Math.min(4, Math.floor(hc / 2))),
      pairKey: new URLSearchParams(location.hash.slice(1)).get('pair') }
    worker.postMessage(start)
    this.worker = worker
    this.state = { ...emptyScoutState('starting'), ...this.prior }
  }

  private end (why: string): void {
    this.worker?.terminate()
    this.worker = null
    this.prior = { work: this.state.work, accepted: this.state.accepted, proposed: this.state.proposed }
    this.state = { ...emptyScoutState(why), ...this.prior, log: this.state.log }
  }
}
