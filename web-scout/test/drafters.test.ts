import { describe, expect, it } from 'vitest'
import { chooseDrafter, HybridDrafter, LookupDrafter, type DraftResult, type Drafter, type DrafterConfig } from '../src/drafters'

class FakeModel implements Drafter {
  readonly name = 'fake'
  calls: string[] = []
  async draft (context: string, maxTokens: number): Promise<DraftResult> {
    this.calls.push(context)
    return { text: ' model'.repeat(maxTokens), source: 'fake', tokens: maxTokens, ms: 1 }
  }
}

const config: DrafterConfig = {
  prefer: 'auto', ggufUrl: null, wllamaWasmUrl: '/x.wasm', nThreads: 1, nCtx: 512,
  webllmModel: 'm', webllmModelUrl: null, webllmLibUrl: null, lookupFirst: true, paceModel: true, chunk: 2, followPace: true
}

describe('drafter glue', () => {
  it('prompt lookup answers with pieces of the context', async () => {
    const r = await new LookupDrafter().draft('red green blue. red green', 2)
    expect(r).toMatchObject({ text: ' blue.', source: 'lookup' })
    expect((await new LookupDrafter().draft('no repeats here', 2)).text).toBe('')
  })
  it('the hybrid tries lookup first and asks the model only when lookup has nothing', async () => {
    const model = new FakeModel()
    const hybrid = new HybridDrafter(model, true)
    expect(hybrid.name).toBe('fake+lookup')
    expect((await hybrid.draft('red green blue. red green', 2)).source).toBe('lookup')
    expect(model.calls).toEqual([])
    const r = await hybrid.draft('nothing repeats', 2)
    expect(r).toMatchObject({ text: ' model model', source: 'fake' })
    expect(model.calls).toEqual(['nothing repeats'])
  })
  it('with the model not allowed, only lookup drafts', async () => {
    const model = new FakeModel()
    const hybrid = new HybridDrafter(model, false)
    expect((await hybrid.draft('nothing repeats', 2, false)).text).toBe('')
    expect((await hybrid.draft('red green blue. red green', 1, false)).source).toBe('lookup')
    expect(model.calls).toEqual([])
  })
  it('without lookup first, the model drafts everything', async () => {
    const model = new FakeModel()
    const plain = new HybridDrafter(model, false)
    expect(plain.name).toBe('fake')
    expect((await plain.draft('red green blue. red green', 1)).source).toBe('fake')
  })
  it('falls back to prompt lookup when no model can load, and says why', async () => {
    const chosen = await chooseDrafter(config, () => {})
    expect(chosen.kind).toBe('lookup')
    expect(chosen.notes.join(' ')).toMatch(/no WebGPU/)
    expect(chosen.notes.join(' ')).toMatch(/wllama failed: the node serves no GGUF/)
    const lookupOnly = await chooseDrafter({ ...config, prefer: 'lookup' }, () => {})
    expect(lookupOnly.kind).toBe('lookup')
    expect(lookupOnly.notes).toEqual([])
  })
})
