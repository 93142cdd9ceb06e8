// The web app's scout, in a Worker: the same Scout as the /scout/ page (js-libp2p to the node's
// sidecar, the drafter in its own nested worker), reporting a public summary of its state to the
// page. The page starts it and ends it (terminate) to stop contributing or to pause while hidden.
// Never reported: the text of anyone's work (`last` is dropped; the log names work ids only).
import wasmUrl from '@wllama/wllama/esm/wasm/wllama.wasm?url'
import type { DrafterConfig } from '../drafters'
import { draftModelUrl, fetchNodeInfo, isLoopbackOrHere, wsAddr } from '../node-info'
import { drafterChoice } from './policy'
import { Scout, type ScoutState } from '../scout'
import type { ScoutStart, TabScoutState } from './scout-types'

const scope = self as unknown as { postMessage: (m: unknown) => void, onmessage: ((e: MessageEvent) => void) | null }
let started = false

scope.onmessage = (e: MessageEvent) => {
  const msg = e.data as ScoutStart
  if (msg.type === 'start' && !started) {
    started = true
    run(msg).catch((err) => post({ status: `failed: ${(err as Error).message}` }))
  }
}

function post (partial: Partial<TabScoutState>): void {
  scope.postMessage({ type: 'state', state: partial })
}

function summary (s: ScoutState): Partial<TabScoutState> {
  const d = s.drafter
  return {
    status: s.status,
    connected: s.connected,
    peerId: s.peerId,
    nodePeer: s.nodePeer,
    nodeAddr: s.nodeAddr,
    drafter: { name: d.name, kind: d.kind, loaded: d.loaded, progress: d.progress, tokensPerSecond: d.tokensPerSecond, modelInUse: d.modelInUse },
    work: s.work.received,
    draftsSent: s.drafts.sent,
    draftsFailed: s.drafts.failed,
    verdicts: { ...s.verdicts },
    proposed: s.proposed,
    accepted: s.accepted,
    log: s.log.slice(-12)
  }
}

async function run (msg: ScoutStart): Promise<void> {
  const headers: Record<string, string> = msg.apiKey !== null && msg.apiKey !== '' ? { Authorization: `Bearer ${msg.apiKey}` } : {}
  post({ status: 'finding the node' })
  let info = await fetchNodeInfo(headers)
  const choice = drafterChoice(info, location.hostname, msg.prefer)
  const config: DrafterConfig = {
    prefer: choice.prefer,
    ggufUrl: draftModelUrl(info, location.href),
    wllamaWasmUrl: new URL(wasmUrl, location.href).href,
    nThreads: msg.threads,
    nCtx: 4096,
    webllmModel: 'SmolLM2-135M-Instruct-q0f32-MLC',
    webllmModelUrl: null,
    webllmLibUrl: null,
    lookupFirst: true,
    paceModel: true,
    chunk: 2,
    followPace: true
  }
  const model = choice.prefer === 'lookup' || config.ggufUrl === null ? 'prompt-lookup' : decodeURIComponent(config.ggufUrl.split('/').pop() ?? '')
  const scout = new Scout(config, [model])
  // a local node admits the tab as its own scout only with this proof (docs/protocol.md, pairing)
  scout.pairKey = msg.pairKey ?? info.pair_key ?? null
  post({ why: choice.why })
  let timer: ReturnType<typeof setTimeout> | null = null
  scout.onChange((s) => {
    if (timer !== null) return
    timer = setTimeout(() => { timer = null; post(summary(s)) }, 250)
  })
  scout.startDrafter()
  await scout.startNet((ma) => isLoopbackOrHere(ma, location.hostname))
  post(summary(scout.state))
  // dial the node's sidecar, and again whenever the connection drops
  for (;;) {
    if (!scout.state.connected) {
      try {
        scout.state.status = 'finding the node'
        info = await fetchNodeInfo(headers)
        const addr = wsAddr(info)
        if (addr === undefined) throw new Error(info.message ?? `the node has no WebSocket address (sidecar: ${info.sidecar ?? 'unknown'})`)
        await scout.connect(addr)
      } catch (err) {
        scout.state.status = `not connected: ${err instanceof Error ? err.message : String(err)}`
        scout.log(scout.state.status)
      }
    }
    await new Promise(resolve => setTimeout(resolve, 3000))
  }
}
