// Which drafter the web app's scout may use.
import type { DrafterConfig } from '../drafters'
import { isLoopbackHost, type NodeInfo } from '../node-info'

/** The seed's double-dip prevention: a tab on the Oracle's own machine drafts with prompt lookup
 * only, since a model in the tab would take CPU (or GPU) from the Oracle it drafts for. */
export function drafterChoice (info: NodeInfo, pageHost: string, override: DrafterConfig['prefer'] | null): { prefer: DrafterConfig['prefer'], why: string } {
  if (override !== null) return { prefer: override, why: `chosen in the URL (drafter=${override})` }
  if (isLoopbackHost(pageHost) && typeof info.model === 'string' && info.model !== '') {
    return { prefer: 'lookup', why: "this tab runs on the Oracle's own machine: a model here would slow it down, so the tab drafts with prompt lookup only" }
  }
  return { prefer: 'auto', why: 'the draft model runs in this tab (WebGPU when there is one, else WebAssembly)' }
}
