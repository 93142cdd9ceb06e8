// What a page learns about the node that served it (same origin): its sidecar's WebSocket
// addresses and the GGUFs a tab may load. Shared by the pages that run a scout.
import type { Multiaddr } from '@multiformats/multiaddr'

export interface NodeInfo {
  sidecar?: string
  message?: string
  peer_id: string | null
  ws_addrs: string[]
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
