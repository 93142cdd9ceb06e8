// Conversations and settings live in this browser's localStorage only: nothing is sent anywhere
// but to the node, as the messages of a chat request. Bounded, and tolerant of damaged data.

export interface Message { role: 'user' | 'assistant', content: string, error?: string, stopped?: boolean }
export interface Conversation { id: string, title: string, model: string, messages: Message[], updated: number }

const CONVERSATIONS = 'shard.conversations'
export const MAX_CONVERSATIONS = 50
export const MAX_STORED_CHARS = 2_000_000 // well under the ~5 MB localStorage quota

export function newConversation (model: string): Conversation {
  const id = (globalThis.crypto?.randomUUID?.() ?? `${Date.now()}-${Math.random()}`)
  return { id, title: 'New chat', model, messages: [], updated: Date.now() }
}

export function titleOf (text: string): string {
  const line = text.trim().split('\n')[0].replace(/\s+/g, ' ')
  return line.length > 48 ? `${line.slice(0, 47)}…` : (line || 'New chat')
}

function valid (c: any): c is Conversation {
  return c !== null && typeof c === 'object' && typeof c.id === 'string' && typeof c.title === 'string' &&
    Array.isArray(c.messages) && c.messages.every((m: any) => (m?.role === 'user' || m?.role === 'assistant') && typeof m.content === 'string')
}

export class Store {
  constructor (private readonly storage: Storage) {}

  get (key: string): string | null {
    try { return this.storage.getItem(`shard.${key}`) } catch { return null }
  }

  set (key: string, value: string | null): void {
    try {
      if (value === null || value === '') this.storage.removeItem(`shard.${key}`)
      else this.storage.setItem(`shard.${key}`, value)
    } catch { /* storage full or disabled: settings last for this visit only */ }
  }

  conversations (): Conversation[] {
    try {
      const list = JSON.parse(this.storage.getItem(CONVERSATIONS) ?? '[]')
      return Array.isArray(list) ? list.filter(valid).sort((a, b) => b.updated - a.updated) : []
    } catch {
      return []
    }
  }

  /** Newest first, at most MAX_CONVERSATIONS and MAX_STORED_CHARS: the oldest go first. */
  save (list: Conversation[]): void {
    const kept = [...list].sort((a, b) => b.updated - a.updated).slice(0, MAX_CONVERSATIONS)
    let json = JSON.stringify(kept)
    while (json.length > MAX_STORED_CHARS && kept.length > 1) {
      kept.pop()
      json = JSON.stringify(kept)
    }
    try {
      this.storage.setItem(CONVERSATIONS, json)
    } catch { /* quota: keep what was stored before */ }
  }
}
