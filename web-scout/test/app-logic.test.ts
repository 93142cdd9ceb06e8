import { describe, expect, it } from 'vitest'
import { draftModelUrl, isLoopbackHost } from '../src/node-info'
import { drafterChoice } from '../src/app/policy'
import { shortId, tabCredit } from '../src/app/sidebar'
import { MAX_CONVERSATIONS, newConversation, Store, titleOf } from '../src/app/store'

class MemoryStorage implements Storage {
  private m = new Map<string, string>()
  quota = Infinity
  get length (): number { return this.m.size }
  clear (): void { this.m.clear() }
  getItem (k: string): string | null { return this.m.get(k) ?? null }
  key (i: number): string | null { return [...this.m.keys()][i] ?? null }
  removeItem (k: string): void { this.m.delete(k) }
  setItem (k: string, v: string): void {
    if (v.length > this.quota) throw new Error('QuotaExceededError')
    this.m.set(k, v)
  }
}

describe('double-dip prevention', () => {
  const oracle = { peer_id: 'p', ws_addrs: [], model: 'smollm2.gguf' }
  it('a tab served by an Oracle on this machine drafts with prompt lookup only', () => {
    for (const host of ['127.0.0.1', 'localhost', '[::1]', '127.0.0.2']) expect(drafterChoice(oracle, host, null).prefer).toBe('lookup')
  })
  it('a tab on another machine, or whose node has no model, may run the draft model', () => {
    expect(drafterChoice(oracle, '192.168.1.20', null).prefer).toBe('auto')
    expect(drafterChoice({ ...oracle, model: null }, '127.0.0.1', null).prefer).toBe('auto')
  })
  it('the URL can choose', () => {
    expect(drafterChoice(oracle, '127.0.0.1', 'wllama').prefer).toBe('wllama')
  })
  it('knows loopback names', () => {
    expect(isLoopbackHost('127.9.0.1')).toBe(true)
    expect(isLoopbackHost('127.0.0.1.example.com')).toBe(false)
    expect(isLoopbackHost('10.0.0.1')).toBe(false)
  })
})

describe('the draft model a tab loads', () => {
  const models = [{ name: 'big.gguf', url: '/scout/models/big.gguf', bytes: 9e9 }, { name: 'small.gguf', url: '/scout/models/small.gguf', bytes: 1e8 }]
  it("is the node's draft model, never a guessed other file", () => {
    expect(draftModelUrl({ peer_id: null, ws_addrs: [], models, model: 'big.gguf', draft_model: 'small.gguf' }, 'http://127.0.0.1:8000/'))
      .toBe('http://127.0.0.1:8000/scout/models/small.gguf')
    expect(draftModelUrl({ peer_id: null, ws_addrs: [], models, model: 'big.gguf', draft_model: null }, 'http://127.0.0.1:8000/')).toBeNull()
  })
  it("is the node's own model on a node that predates draft models", () => {
    expect(draftModelUrl({ peer_id: null, ws_addrs: [], models, model: 'small.gguf' }, 'http://h/')).toBe('http://h/scout/models/small.gguf')
  })
})

describe("the tab's credit", () => {
  it("sums the node ledger's rows for this browser's peer ids only", () => {
    const credit = { peers: [{ peer_id: 'a', credit: 3, accepted: 3 }, { peer_id: 'b', credit: 2.5, accepted: 2 }, { peer_id: 'c', credit: 100, accepted: 100 }] }
    expect(tabCredit(credit, ['a', 'b'])).toEqual({ credit: 5.5, accepted: 5 })
    expect(tabCredit(null, ['a'])).toEqual({ credit: 0, accepted: 0 })
    expect(tabCredit({ peers: [{ peer_id: 'a', credit: 'x' }] }, ['a'])).toEqual({ credit: 0, accepted: 0 })
  })
  it('shortens peer ids', () => {
    expect(shortId('12D3KooWAbcdefghijklmnopqrstuvwxyz')).toBe('12D3KooW…uvwxyz')
    expect(shortId(null)).toBe('–')
  })
})

describe('conversations in localStorage', () => {
  it('round-trips, newest first, and drops damaged entries', () => {
    const storage = new MemoryStorage()
    const store = new Store(storage)
    const a = { ...newConversation('m'), updated: 1, title: 'a' }
    const b = { ...newConversation('m'), updated: 2, title: 'b', messages: [{ role: 'user' as const, content: 'hi' }] }
    store.save([a, b])
    expect(store.conversations().map(c => c.title)).toEqual(['b', 'a'])
    storage.setItem('shard.conversations', JSON.stringify([b, { id: 1 }, { ...a, messages: [{ role: 'system', content: 'x' }] }]))
    expect(store.conversations().map(c => c.title)).toEqual(['b'])
    storage.setItem('shard.conversations', '{not json')
    expect(store.conversations()).toEqual([])
  })
  it('keeps at most MAX_CONVERSATIONS, and survives a full storage', () => {
    const storage = new MemoryStorage()
    const store = new Store(storage)
    store.save(Array.from({ length: MAX_CONVERSATIONS + 5 }, (_, i) => ({ ...newConversation('m'), updated: i })))
    expect(store.conversations()).toHaveLength(MAX_CONVERSATIONS)
    storage.quota = 10
    expect(() => store.save([newConversation('m')])).not.toThrow()
    expect(() => store.set('api_key', 'k'.repeat(20))).not.toThrow()
  })
  it('titles a conversation by its first line', () => {
    expect(titleOf('  How do\n I x?')).toBe('How do')
    expect(titleOf('x'.repeat(60))).toHaveLength(48)
  })
})
