// The drafters, chosen at run time (in the drafter worker): WebLLM when the browser has a WebGPU
// adapter, else wllama (llama.cpp in WASM) with the GGUF the node serves, else prompt lookup over
// the context's text. Every model drafter is greedy, and keeps its prompt cache between rounds, so
// a context that only grew since the last work costs the new tokens only.

import { lookupDraft } from './lookup'

export interface DraftResult {
  text: string
  source: string // 'lookup' | 'wllama' | 'webllm'
  tokens: number // tokens the model generated (pieces for lookup)
  ms: number
  timings?: Record<string, number> // the model's own figures (wllama: prompt_n, prompt_ms, predicted_n, predicted_ms, ...)
}

export interface Drafter {
  readonly name: string
  /** continue `context` greedily by up to `maxTokens` tokens; `modelAllowed` false: only cheap
   * drafting (prompt lookup), the model stays idle */
  draft: (context: string, maxTokens: number, modelAllowed?: boolean) => Promise<DraftResult>
}

export interface DrafterConfig {
  /** which drafter to use: 'auto' tries webllm, then wllama, then lookup */
  prefer: 'auto' | 'webllm' | 'wllama' | 'lookup'
  /** the GGUF for wllama, same origin (the node serves its models at /scout/models/) */
  ggufUrl: string | null
  wllamaWasmUrl: string
  nThreads: number
  nCtx: number
  /** WebLLM: a model id of its prebuilt list, or a custom model with absolute URLs */
  webllmModel: string
  webllmModelUrl: string | null
  webllmLibUrl: string | null
  /** use prompt lookup first and the model only when lookup finds nothing */
  lookupFirst: boolean
  /** run the model only while it drafts faster than the Oracle decodes (see scout.ts) */
  paceModel: boolean
  /** tokens per model call in a drafting session (progress and verdicts are read between calls) */
  chunk: number
  /** draft ahead of where the Oracle is thought to be now, at its pace, and hold back drafts it has
   * likely passed (session.ts `lag`); false: ahead of where it was last heard from */
  followPace: boolean
}

export const now = (): number => (typeof performance !== 'undefined' ? performance.now() : Date.now())

export class LookupDrafter implements Drafter {
  readonly name = 'lookup'
  async draft (context: string, maxTokens: number): Promise<DraftResult> {
    const t0 = now()
    const text = lookupDraft(context, maxTokens)
    return { text, source: 'lookup', tokens: text.length > 0 ? maxTokens : 0, ms: now() - t0 }
  }
}

/** A model drafter, with prompt lookup tried first when configured (an edit of given text is
 * continued exactly by lookup, instantly; the model covers the rest). */
export class HybridDrafter implements Drafter {
  readonly name: string
  private readonly lookup = new LookupDrafter()
  constructor (private readonly model: Drafter, private readonly lookupFirst: boolean) {
    this.name = lookupFirst ? `${model.name}+lookup` : model.name
  }

  async draft (context: string, maxTokens: number, modelAllowed = true): Promise<DraftResult> {
    if (this.lookupFirst || !modelAllowed) {
      const quick = await this.lookup.draft(context, maxTokens)
      if (quick.text.length > 0 || !modelAllowed) return quick
    }
    return await this.model.draft(context, maxTokens)
  }
}

export class WllamaDrafter implements Drafter {
  readonly name = 'wllama'
  private constructor (private readonly wllama: any, private readonly maxChars: number) {}

  static async load (cfg: DrafterConfig, progress: (loaded: number, total: number) => void): Promise<WllamaDrafter> {
    if (cfg.ggufUrl === null) throw new Error('the node serves no GGUF model for wllama')
    const { Wllama } = await import('@wllama/wllama')
    const wllama = new Wllama({ default: cfg.wllamaWasmUrl }, { suppressNativeLog: true })
    await wllama.loadModelFromUrl(cfg.ggufUrl, {
      n_ctx: cfg.nCtx,
      n_threads: cfg.nThreads,
      n_batch: 512,
      n_gpu_layers: 0,
      // flash attention ("auto"), as the Oracle's verifier computes attention: a tab drafting with the
      // Oracle's own model otherwise parts from its greedy text where two tokens nearly tie
      flash_attn: true,
      useCache: false, // the node serves the file from this machine: no need to copy it into the Cache API
      progressCallback: ({ loaded, total }: { loaded: number, total: number }) => progress(loaded, total)
    })
    // ~3 characters a token on average, leave room for the draft
    return new WllamaDrafter(wllama, Math.max(0, (cfg.nCtx - 64) * 3))
  }

  async draft (context: string, maxTokens: number): Promise<DraftResult> {
    const t0 = now()
    if (context.length > this.maxChars) return { text: '', source: this.name, tokens: 0, ms: 0 }
    const out = await this.wllama.createCompletion({
      prompt: context,
      max_tokens: maxTokens,
      temperature: 0,
      top_k: 1,
      cache_prompt: true
    })
    const text: string = out?.choices?.[0]?.text ?? ''
    const tokens: number = out?.usage?.completion_tokens ?? 0
    return { text, source: this.name, tokens, ms: now() - t0, timings: out?.timings }
  }
}

export class WebLlmDrafter implements Drafter {
  readonly name = 'webllm'
  private constructor (private readonly engine: any) {}

  static async available (): Promise<boolean> {
    const gpu = (globalThis.navigator as any)?.gpu
    if (gpu === undefined) return false
    try {
      return (await gpu.requestAdapter()) !== null
    } catch {
      return false
    }
  }

  static async load (cfg: DrafterConfig, progress: (loaded: number, total: number) => void): Promise<WebLlmDrafter> {
    const webllm = await import('@mlc-ai/web-llm')
    let appConfig = webllm.prebuiltAppConfig
    if (cfg.webllmModelUrl !== null && cfg.webllmLibUrl !== null) {
      appConfig = { ...appConfig, model_list: [{ model: cfg.webllmModelUrl, model_id: cfg.webllmModel, model_lib: cfg.webllmLibUrl }] }
    }
    const engine = await webllm.CreateMLCEngine(cfg.webllmModel, {
      appConfig,
      initProgressCallback: (r: { progress: number }) => progress(Math.round(r.progress * 100), 100)
    })
    return new WebLlmDrafter(engine)
  }

  async draft (context: string, maxTokens: number): Promise<DraftResult> {
    const t0 = now()
    const out = await this.engine.completions.create({ prompt: context, max_tokens: maxTokens, temperature: 0, top_p: 1 })
    const text: string = out?.choices?.[0]?.text ?? ''
    return { text, source: this.name, tokens: out?.usage?.completion_tokens ?? 0, ms: now() - t0 }
  }
}

export interface Chosen {
  drafter: Drafter
  kind: 'webllm' | 'wllama' | 'lookup'
  notes: string[] // why the better ones were not used
  loadMs: number
}

/** Pick the best drafter this browser can run. */
export async function chooseDrafter (cfg: DrafterConfig, progress: (what: string, loaded: number, total: number) => void): Promise<Chosen> {
  const notes: string[] = []
  const t0 = now()
  if (cfg.prefer === 'auto' || cfg.prefer === 'webllm') {
    if (await WebLlmDrafter.available()) {
      try {
        const d = await WebLlmDrafter.load(cfg, (l, t) => progress('webllm', l, t))
        return { drafter: new HybridDrafter(d, cfg.lookupFirst), kind: 'webllm', notes, loadMs: now() - t0 }
      } catch (err) {
        notes.push(`WebLLM failed: ${(err as Error).message}`)
      }
    } else {
      notes.push('WebLLM skipped: no WebGPU adapter in this browser')
    }
  }
  if (cfg.prefer !== 'lookup') {
    try {
      const d = await WllamaDrafter.load(cfg, (l, t) => progress('wllama', l, t))
      return { drafter: new HybridDrafter(d, cfg.lookupFirst), kind: 'wllama', notes, loadMs: now() - t0 }
    } catch (err) {
      notes.push(`wllama failed: ${(err as Error).message}`)
    }
  }
  return { drafter: new LookupDrafter(), kind: 'lookup', notes, loadMs: now() - t0 }
}
