// The drafter in a Web Worker: model loading and drafting never block the page (nor js-libp2p).
// Messages in: {type:'init', config} once, then {type:'draft', id, context, maxTokens}.
// Messages out: {type:'progress'}, {type:'ready'}, {type:'draft', id, ...DraftResult} or {type:'draft', id, error}.

import { chooseDrafter, type Drafter, type DrafterConfig } from './drafters'

let drafter: Drafter | null = null
const scope = self as unknown as { postMessage: (m: unknown) => void, onmessage: ((e: MessageEvent) => void) | null }

scope.onmessage = (e: MessageEvent) => {
  const msg = e.data
  if (msg.type === 'init') {
    void init(msg.config as DrafterConfig)
  } else if (msg.type === 'draft') {
    void draft(msg.id as number, msg.context as string, msg.maxTokens as number, msg.modelAllowed !== false)
  }
}

async function init (config: DrafterConfig): Promise<void> {
  const chosen = await chooseDrafter(config, (what, loaded, total) => scope.postMessage({ type: 'progress', what, loaded, total }))
  drafter = chosen.drafter
  scope.postMessage({ type: 'ready', name: chosen.drafter.name, kind: chosen.kind, notes: chosen.notes, loadMs: chosen.loadMs })
}

// one draft at a time, in order: the page sends the next only when this one is answered
async function draft (id: number, context: string, maxTokens: number, modelAllowed: boolean): Promise<void> {
  if (drafter === null) {
    scope.postMessage({ type: 'draft', id, error: 'the drafter is not loaded yet' })
    return
  }
  try {
    scope.postMessage({ type: 'draft', id, ...(await drafter.draft(context, maxTokens, modelAllowed)) })
  } catch (err) {
    scope.postMessage({ type: 'draft', id, error: (err as Error).message })
  }
}
