// The node's HTTP API from this page (same origin): the OpenAI endpoints and /v1/system/*, with
// the API key the user gave (kept in localStorage) when the node asks for one.
import { SseParser, type StreamEvent } from './sse'

export class ApiError extends Error {
  constructor (message: string, readonly status: number, readonly code: string | null = null) { super(message) }
}

export class Api {
  constructor (public key: () => string | null) {}

  headers (): Record<string, string> {
    const key = this.key()
    return key !== null && key !== '' ? { Authorization: `Bearer ${key}` } : {}
  }

  async json<T = any> (path: string, init: RequestInit = {}): Promise<T> {
    let res: Response
    try {
      res = await fetch(path, { cache: 'no-store', ...init, headers: { ...this.headers(), ...(init.headers ?? {}) } })
    } catch {
      throw new ApiError('cannot reach the node', 0, 'unreachable')
    }
    if (!res.ok) throw await errorOf(res)
    return await res.json()
  }

  async models (): Promise<string[]> {
    const body = await this.json<{ data?: Array<{ id?: unknown }> }>('/v1/models')
    return (body.data ?? []).map(m => m.id).filter((id): id is string => typeof id === 'string')
  }

  /** Streams a chat completion; yields the stream's events until [DONE], the end, or `signal`. */
  async * chat (model: string, messages: Array<{ role: string, content: string }>, signal: AbortSignal): AsyncGenerator<StreamEvent> {
    let res: Response
    try {
      res = await fetch('/v1/chat/completions', {
        method: 'POST',
        headers: { ...this.headers(), 'Content-Type': 'application/json', Accept: 'text/event-stream' },
        body: JSON.stringify({ model, messages, stream: true }),
        signal
      })
    } catch (err) {
      if (signal.aborted) return
      throw new ApiError('cannot reach the node', 0, 'unreachable')
    }
    if (!res.ok || res.body === null) throw await errorOf(res)
    const parser = new SseParser()
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader()
    try {
      for (;;) {
        const { value, done } = await reader.read()
        const events = done ? parser.end() : parser.feed(value)
        for (const e of events) {
          yield e
          if (e.kind === 'done') return
        }
        if (done) return
      }
    } catch (err) {
      if (signal.aborted) return
      throw new ApiError(`the stream broke: ${(err as Error).message}`, 0, 'stream_broken')
    } finally {
      reader.cancel().catch(() => {})
    }
  }
}

async function errorOf (res: Response): Promise<ApiError> {
  try {
    const body = await res.json()
    if (typeof body?.error?.message === 'string') return new ApiError(body.error.message, res.status, body.error.code ?? null)
    if (typeof body?.message === 'string') return new ApiError(body.message, res.status, body.status ?? null)
  } catch { /* not JSON */ }
  return new ApiError(`the node answered ${res.status} ${res.statusText}`, res.status)
}
