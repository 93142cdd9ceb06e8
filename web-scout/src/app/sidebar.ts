// The network sidebar: the node's state, its peers, the Oracles and their models, this tab's
// scouting and the node's standing, from /v1/system/{status,peers,credit,topology}. Shows no
// prompt text; peer ids, addresses and verdict counts only under "Details".
import type { Api } from './api'
import type { TabScoutState } from './scout-types'

const $ = (id: string): HTMLElement => document.getElementById(id)!

export interface Snapshot {
  status: any | null
  peers: any | null
  credit: any | null
  topology: any | null
  error: string | null
}

/** Shortened peer id for display: 12D3KooW…abcdef. */
export function shortId (id: string | null | undefined): string {
  if (typeof id !== 'string' || id === '') return '–'
  return id.length > 16 ? `${id.slice(0, 8)}…${id.slice(-6)}` : id
}

function fact (dl: HTMLElement, rows: Array<[string, string]>): void {
  dl.replaceChildren(...rows.flatMap(([k, v]) => {
    const dt = document.createElement('dt')
    dt.textContent = k
    const dd = document.createElement('dd')
    dd.textContent = v
    return [dt, dd]
  }))
}

function item (text: string, sub: string, cls = ''): HTMLLIElement {
  const li = document.createElement('li')
  if (cls !== '') li.className = cls
  const main = document.createElement('span')
  main.textContent = text
  li.append(main)
  if (sub !== '') {
    const s = document.createElement('span')
    s.className = 'sub'
    s.textContent = sub
    li.append(s)
  }
  return li
}

const num = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) ? v : 0)
const fmt = (v: unknown): string => String(Math.round(num(v) * 10) / 10)

/** Sum of what the node's ledger credits this browser's scout peer ids (receipt-backed: the
 * Oracle records a draft only with the receipt it signed for it). */
export function tabCredit (credit: any, tabPeers: string[]): { credit: number, accepted: number } {
  const rows: any[] = Array.isArray(credit?.peers) ? credit.peers : []
  let c = 0
  let a = 0
  for (const p of rows) {
    if (tabPeers.includes(p?.peer_id)) { c += num(p.credit); a += num(p.accepted) }
  }
  return { credit: c, accepted: a }
}

/** The scout's state in words; the raw status (errors included) is under Details. */
export function scoutSentence (s: TabScoutState): string {
  if (s.connected) return 'Scouting: this tab drafts tokens for the Oracle and earns credit for each one it accepts.'
  if (s.status.startsWith('not connected')) return "Not scouting: the node is not on the network (no sidecar yet). The tab keeps trying."
  if (s.status.startsWith('failed')) return 'The scout stopped with an error (see Details).'
  return "Connecting to the node's network…"
}

export class Sidebar {
  snap: Snapshot = { status: null, peers: null, credit: null, topology: null, error: null }
  scout: TabScoutState | null = null
  scoutNote = ''
  tabPeers: string[] = []

  constructor (private readonly api: Api) {}

  async refresh (): Promise<void> {
    const get = async (path: string): Promise<any> => await this.api.json(path).catch((err: Error) => { this.snap.error = err.message; return null })
    this.snap.error = null
    const [status, peers, credit, topology] = await Promise.all([
      get('/v1/system/status'), get('/v1/system/peers'), get('/v1/system/credit'), get('/v1/system/topology')
    ])
    this.snap = { status, peers, credit, topology, error: this.snap.error }
    this.render()
  }

  render (): void {
    const { status, peers, credit, topology, error } = this.snap
    const state = $('node-state')
    if (status === null) {
      state.textContent = error !== null ? `Not reachable: ${error}` : 'Connecting…'
      state.dataset.state = 'down'
    } else {
      const label: Record<string, string> = { ok: 'Ready', loading: 'Loading the model', no_model: 'No model', error: 'Error', stopped: 'Stopped' }
      state.textContent = `${label[status.status] ?? status.status}${status.message !== undefined && status.status !== 'ok' ? `: ${status.message}` : ''}`
      state.dataset.state = status.status
    }
    const peerList: any[] = Array.isArray(peers?.peers) ? peers.peers : []
    const sidecar = status?.sidecar
    const reach = sidecar === undefined || sidecar === null
      ? '–'
      : sidecar.state === 'disabled' ? 'local only (no network)' : sidecar.state === 'running' ? 'on the network' : `network ${String(sidecar.state)}`
    const queue = status?.queue
    fact($('node-facts'), [
      ['model', typeof status?.model === 'string' && status.model !== '' ? status.model : 'none (Oracles on the network serve it)'],
      ['network', reach],
      ['peers', String(peerList.length)],
      ['queue', queue !== undefined ? `${num(queue.in_flight)} answering, ${num(queue.waiting)} waiting` : '–'],
      ['contributing', status?.contributing === false ? 'paused' : 'yes']
    ])

    // Oracles: this node when it has a model, and every peer with the oracle role
    const oracles: HTMLLIElement[] = []
    if (typeof status?.model_path === 'string' && typeof status.model === 'string') oracles.push(item('This node', status.model, 'self'))
    for (const p of peerList.filter(p => Array.isArray(p.roles) && p.roles.includes('oracle'))) {
      const where = p.local === true ? 'on this machine' : 'remote'
      oracles.push(item(`Oracle ${shortId(p.peer_id)} (${where})`, (Array.isArray(p.models) ? p.models.join(', ') : '') +
        (typeof p.latency_ms === 'number' ? ` · ${Math.round(p.latency_ms)} ms` : '') + ` · load ${num(p.load)}`))
    }
    $('oracles').replaceChildren(...(oracles.length > 0 ? oracles : [item('None yet', '', 'muted')]))

    $('peer-count').textContent = `(${peerList.length})`
    $('peers').replaceChildren(...(peerList.length > 0
      ? peerList.map(p => item(`${(Array.isArray(p.roles) && p.roles.length > 0 ? p.roles.join(', ') : 'peer')} ${shortId(p.peer_id)}${this.tabPeers.includes(p.peer_id) ? ' (this tab)' : ''}`,
        `${p.local === true ? 'this machine' : 'remote'}${num(p.accepted) > 0 ? ` · ${num(p.accepted)} tokens accepted` : ''}`, 'peer'))
      : [item(sidecar?.state === 'disabled' ? 'This node runs without the network' : 'No peers connected', '', 'muted')]))

    const mine = tabCredit(credit, this.tabPeers)
    fact($('credit-facts'), [
      ['this tab earned', `${fmt(mine.credit)} credit (${mine.accepted} tokens)`],
      ["node's balance", fmt(credit?.balance)],
      ['earned / spent', `${fmt(credit?.earned)} / ${fmt(credit?.spent)}`]
    ])
    this.renderScout(mine)
    this.renderDetails(topology, peerList)
  }

  renderScout (mine = tabCredit(this.snap.credit, this.tabPeers)): void {
    const s = this.scout
    $('scout-state').textContent = this.scoutNote !== '' ? this.scoutNote : (s === null ? '' : scoutSentence(s))
    const drafter = s === null ? '–'
      : s.drafter.kind === 'lookup' ? 'prompt lookup'
        : s.drafter.loaded ? `${s.drafter.name}${s.drafter.tokensPerSecond !== null ? ` (${s.drafter.tokensPerSecond} tokens/s)` : ''}`
          : `loading ${s.drafter.kind}… ${Math.round(s.drafter.progress * 100)}%`
    fact($('scout-facts'), [
      ['drafter', drafter],
      ['work received', String(s?.work ?? 0)],
      ['tokens accepted', `${s?.accepted ?? 0} of ${s?.proposed ?? 0}`],
      ['credit (receipts)', `${fmt(mine.credit)}`]
    ])
    const why = document.getElementById('scout-why')
    if (why !== null) why.textContent = s?.why ?? ''
  }

  private renderDetails (topology: any, peerList: any[]): void {
    const s = this.scout
    const rows: Array<[string, string]> = [
      ['node peer id', typeof topology?.peer_id === 'string' ? topology.peer_id : '–'],
      ['listen', Array.isArray(topology?.listen_addrs) ? topology.listen_addrs.join('\n') : '–'],
      ['tab scout', s?.status ?? '–'],
      ['tab peer id', s?.peerId ?? '–'],
      ['tab dialed', s?.nodeAddr ?? '–'],
      ['drafter policy', s?.why ?? '–'],
      ['verdicts', s !== null ? Object.entries(s.verdicts).map(([k, v]) => `${k} ${v}`).join(', ') || '–' : '–'],
      ['drafts sent', s !== null ? `${s.draftsSent}${s.draftsFailed > 0 ? ` (${s.draftsFailed} undelivered)` : ''}` : '–']
    ]
    for (const p of peerList) {
      rows.push([`peer ${shortId(p.peer_id)}`, `${String(p.peer_id)}\n${Array.isArray(p.addrs) ? p.addrs.join('\n') : ''}\nagent ${String(p.agent ?? '')}, reputation ${fmt(p.reputation)}`])
    }
    fact($('diag'), rows)
    $('scout-log').textContent = (s?.log ?? []).join('\n')
  }
}
