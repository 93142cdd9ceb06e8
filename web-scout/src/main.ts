// The page: find the node that served it (same origin), dial its sidecar, load a drafter, scout.
import wasmUrl from '@wllama/wllama/esm/wasm/wllama.wasm?url'
import type { DrafterConfig } from './drafters'
import { hasWebRTC } from './net'
import { dialAddrs, draftModelUrl, fetchNodeInfo, isListedWebRTC, isLoopbackOrHere, type NodeInfo, type Transport } from './node-info'
import { Scout, type ScoutState } from './scout'

const params = new URLSearchParams(location.search)
const $ = (id: string): HTMLElement => document.getElementById(id)!

function pickModel (info: NodeInfo): string | null {
  // ?model= given, else the node's draft model (its own model only when a tab can load it): never guess another file
  return params.get('model') ?? draftModelUrl(info, location.href)
}

function render (s: ScoutState): void {
  const d = s.drafter
  $('status').textContent = s.status
  $('status').className = s.connected ? 'ok' : 'warn'
  $('peer').textContent = s.peerId ?? '…'
  $('node').textContent = s.nodePeer !== null ? `${s.nodePeer} (${s.nodeAddr ?? ''}) ${s.nodeInfo !== null ? `roles: ${s.nodeInfo.roles.join(', ')}, agent ${s.nodeInfo.agent}` : ''}` : '…'
  $('drafter').textContent = d.loaded
    ? `${d.name} (loaded in ${d.loadMs} ms)`
    : `loading ${d.kind}… ${Math.round(d.progress * 100)}%`
  $('speed').textContent = (d.tokensPerSecond !== null ? `${d.tokensPerSecond} tokens/s (model drafts)` : '–') +
    (s.oracleTokensPerSecond !== null ? `; the Oracle decodes ${s.oracleTokensPerSecond} tokens/s` : '')
  $('inuse').textContent = d.kind === 'lookup' ? 'prompt lookup only' : (d.modelInUse ? 'yes' : 'resting') + (d.why !== '' ? ` (${d.why})` : '')
  $('work').textContent = `${s.work.received} (direct ${s.work.direct}, gossip ${s.work.gossip}; skipped: ${s.work.stale} past deadline, ${s.work.superseded} superseded); ` +
    `progress ${s.sessions.progress}; ${s.sessions.started} drafting sessions (${s.sessions.live} live), up to ${s.sessions.maxSeq} drafts in one; topics ${s.workTopics.join(', ')}`
  $('drafts').textContent = `${s.drafts.sent} (${Object.entries(s.drafts.bySource).map(([k, v]) => `${k} ${v}`).join(', ') || 'none yet'})${s.drafts.failed > 0 ? `, ${s.drafts.failed} undelivered` : ''}`
  $('accepted').textContent = `${s.accepted} of ${s.proposed} proposed tokens`
  $('credit').textContent = `${s.credit}`
  $('verdicts').textContent = Object.entries(s.verdicts).map(([k, v]) => `${k} ${v}`).join(', ') || '–'
  $('last').textContent = s.last !== null ? `${s.last.work_id}: ${JSON.stringify(s.last.text)} via ${s.last.source} → ${s.last.outcome}, ${s.last.accepted}/${s.last.proposed}` : '–'
  $('log').textContent = s.log.slice(-12).join('\n')
}

async function main (): Promise<void> {
  $('origin').textContent = location.origin
  $('isolated').textContent = crossOriginIsolated ? 'yes (wllama can use threads)' : 'no (wllama runs single-threaded or not at all)'
  const info = await fetchNodeInfo().catch(() => ({ peer_id: null, ws_addrs: [] }) as NodeInfo)
  const hc = navigator.hardwareConcurrency ?? 2
  const prefer = (params.get('drafter') ?? 'auto') as DrafterConfig['prefer']
  const config: DrafterConfig = {
    prefer,
    ggufUrl: pickModel(info),
    wllamaWasmUrl: new URL(wasmUrl, location.href).href,
    nThreads: Number(params.get('threads') ?? Math.max(1, Math.min(4, Math.floor(hc / 2)))),
    nCtx: Number(params.get('ctx') ?? 4096),
    webllmModel: params.get('webllm_model') ?? 'SmolLM2-135M-Instruct-q0f32-MLC',
    webllmModelUrl: params.get('webllm_url'),
    webllmLibUrl: params.get('webllm_lib'),
    lookupFirst: params.get('lookup_first') !== '0',
    paceModel: params.get('pace') !== '0',
    chunk: Math.max(1, Math.min(16, Number(params.get('chunk') ?? 2) || 2)),
    followPace: params.get('follow_pace') !== '0'
  }
  const model = config.ggufUrl !== null ? decodeURIComponent(config.ggufUrl.split('/').pop() ?? '') : 'prompt lookup'
  const scout = new Scout(config, [prefer === 'lookup' ? 'prompt-lookup' : model])
  // paired by the node (no API keys) or by the user (with keys: the page opened as /scout/#pair=KEY)
  scout.pairKey = new URLSearchParams(location.hash.slice(1)).get('pair') ?? info.pair_key ?? null
  ;(window as any).shardScout = scout.state
  ;(window as any).shardScoutConfig = config
  ;(window as any).shardScoutDraft = async (context: string, maxTokens: number) => await scout.draftText(context, maxTokens)
  scout.onChange(render)
  render(scout.state)
  scout.startDrafter()
  // ?transport=ws or webrtc-direct keeps one kind (tests, or a user whose network blocks the other)
  const only = (params.get('transport') as Transport | null) ?? null
  let known: NodeInfo = info
  await scout.startNet(ma => isLoopbackOrHere(ma, location.hostname) || isListedWebRTC(ma, known))

  // dial the node's sidecar, and again whenever the connection drops
  for (;;) {
    if (!scout.state.connected) {
      try {
        scout.state.status = 'finding the node'
        known = await fetchNodeInfo()
        const addrs = dialAddrs(known, location, only, hasWebRTC())
        if (addrs.length === 0) throw new Error(known.message ?? `the node has no address this page can dial (sidecar: ${known.sidecar ?? 'unknown'})`)
        await connectFirst(scout, addrs)
      } catch (err) {
        scout.state.status = `not connected: ${(err as Error).message}`
        scout.log(scout.state.status)
      }
    }
    await new Promise(resolve => setTimeout(resolve, 3000))
  }
}

/** Dial the addresses in turn until one connects (a WebSocket may be blocked where WebRTC is not). */
async function connectFirst (scout: Scout, addrs: string[]): Promise<void> {
  let last: unknown = null
  for (const addr of addrs) {
    try {
      await scout.connect(addr)
      return
    } catch (err) {
      last = err
      scout.log(`dial ${addr} failed: ${(err as Error).message}`)
    }
  }
  throw last
}

main().catch((err) => {
  $('status').textContent = `failed: ${(err as Error).message}`
  ;(window as any).shardScoutError = String(err)
})
