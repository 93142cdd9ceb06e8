// Messages between the web app and its scout worker.
import type { DrafterConfig } from '../drafters'

export interface ScoutStart {
  type: 'start'
  apiKey: string | null
  /** a drafter chosen in the URL (?drafter=), else null: the worker decides */
  prefer: DrafterConfig['prefer'] | null
  threads: number
  /** the pairing key from the page's #pair= (a node with API keys gives it only that way), else null */
  pairKey: string | null
}

export interface TabScoutState {
  status: string
  connected: boolean
  peerId: string | null
  nodePeer: string | null
  nodeAddr: string | null
  why: string
  drafter: { name: string, kind: string, loaded: boolean, progress: number, tokensPerSecond: number | null, modelInUse: boolean }
  work: number
  draftsSent: number
  draftsFailed: number
  verdicts: Record<string, number>
  proposed: number
  accepted: number
  log: string[]
}

export function emptyScoutState (status: string): TabScoutState {
  return {
    status, connected: false, peerId: null, nodePeer: null, nodeAddr: null, why: '',
    drafter: { name: 'none', kind: 'none', loaded: false, progress: 0, tokensPerSecond: null, modelInUse: false },
    work: 0, draftsSent: 0, draftsFailed: 0, verdicts: {}, proposed: 0, accepted: 0, log: []
  }
}
