// What a page learns about the node that served it (same origin): its sidecar's WebSocket and
// WebRTC-direct addresses and the GGUFs a tab may load. Shared by the pages that run a scout.
import type { Multiaddr } from '@multiformats/multiaddr'

export interface NodeInfo {
  sidecar?: string
  message?: string
  peer_id: string | null
  ws_addrs: string[]
  /** WebRTC-direct (`/udp/P/webrtc-direct/certhash/H/p2p/ID`); absent on nodes without it */
  webrtc_addrs?: string[]
  models?: Array<{ name: string, url: string, bytes: number }>
  model?: string | null
  /** what a tab drafts with (the node's draft model); absent on nodes that predate draft models */
  draft_model?: string | null
  /** the node's pairing key: given only when the node has no API keys (else the page's #pair=) */
  pair_key?: string | null
}

/** /scout/node.json needs no API key; the topology does (sent when `headers` carry it). */
export async function fetchNodeInfo (headers: Record<string, string> = {}): Promise<NodeInfo> {
  for (const path of ['/scout/node.json', '/v1/system/topology']) {
    try {
      const res = await fetch(path, { cache: 'no-store', headers })
      if (res.ok) return await res.json()
    } catch { /* try the next */ }
  }
  throw new Error('the node did not answer /scout/node.json or /v1/system/topology')
}

export function isLoopbackHost (host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase()
  return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h)
}

/** The page may dial only the node that served it (browsers refuse plain ws and loopback by default). */
export function isLoopbackOrHere (ma: Multiaddr, hostname: string): boolean {
  const host = ma.getComponents().find(c => ['ip4', 'ip6', 'dns', 'dns4', 'dns6'].includes(c.name))?.value
  return host !== undefined && (host === hostname || isLoopbackHost(host))
}

/** The absolute URL of the GGUF the tab should draft with: the node's draft model; on an older
 * node (no `draft_model` field) its own model. Never a guessed other file. */
export function draftModelUrl (info: NodeInfo, base: string): string | null {
  const name = 'draft_model' in info ? info.draft_model : info.model
  const served = (info.models ?? []).find(m => m.name === name)
  return served !== undefined ? new URL(served.url, base).href : null
}

/** The sidecar address to dial: its loopback WebSocket first. */
export function wsAddr (info: NodeInfo): string | undefined {
  return info.ws_addrs?.find(a => a.includes('/ip4/127.0.0.1/')) ?? info.ws_addrs?.[0]
}

export type Transport = 'ws' | 'webrtc-direct'

/** Where the page is: `location`'s protocol and hostname. */
export interface PagePlace { protocol: string, hostname: string }

function hostOf (addr: string): string | undefined {
  return addr.match(/^\/(?:ip4|ip6|dns|dns4|dns6)\/([^/]+)/)?.[1]
}

/** Addresses on the page's own host first, then (for a page on loopback) loopback ones, then the rest. */
function byNearness (addrs: string[], hostname: string): string[] {
  const rank = (a: string): number => {
    const h = hostOf(a) ?? ''
    if (h === hostname) return 0
    if (isLoopbackHost(h)) return isLoopbackHost(hostname) ? 1 : 3
    return 2
  }
  return addrs.map((a, i) => ({ a, i })).sort((x, y) => rank(x.a) - rank(y.a) || x.i - y.i).map(x => x.a)
}

/** The sidecar addresses to try, best first. A plain WebSocket when the page may open one (a page
 *  served over https may not open ws://: mixed content); WebRTC-direct next, or alone when there is
 *  no usable WebSocket (it needs no TLS certificate: the address pins the node's own). `only` (the
 *  page's `?transport=`) keeps one kind; `webrtc` says whether this runtime can dial it at all. */
export function dialAddrs (info: NodeInfo, page: PagePlace, only: Transport | null = null, webrtc = true): string[] {
  const ws = page.protocol === 'https:' ? [] : byNearness(info.ws_addrs ?? [], page.hostname)
  // Chromium gathers no loopback ICE candidates: WebRTC-direct to 127.0.0.1 never connects there
  const rtc = webrtc ? byNearness(info.webrtc_addrs ?? [], page.hostname).sort((a, b) => Number(isLoopbackHost(hostOf(a) ?? '')) - Number(isLoopbackHost(hostOf(b) ?? ''))) : []
  if (only === 'ws') return ws
  if (only === 'webrtc-direct') return rtc
  return [...ws, ...rtc]
}

/** The node's WebRTC-direct addresses may be dialed from anywhere: each pins the node's certificate
 *  (certhash), and noise then proves its peer id. */
export function isListedWebRTC (ma: Multiaddr, info: NodeInfo): boolean {
  const s = ma.toString()
  return s.includes('/webrtc-direct/') && (info.webrtc_addrs ?? []).some(a => a === s || a.startsWith(s + '/p2p/'))
}
