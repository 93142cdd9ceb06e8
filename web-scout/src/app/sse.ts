// The node's /v1/chat/completions stream (text/event-stream): `data: {chunk}` events, `data: [DONE]`,
// an error object in the stream (`data: {"error": {...}}`), and SSE comment lines where a request
// waits at an Oracle: `: queued at Oracle <peer id>: place N, about S s` (docs/protocol.md).

export type StreamEvent =
  | { kind: 'delta', text: string, finish: string | null }
  | { kind: 'queued', oracle: string, place: number, etaS: number | null }
  | { kind: 'error', message: string }
  | { kind: 'done' }

const QUEUED = /^queued at Oracle (\S+): place (\d+)(?:, about ([0-9.]+) s)?/

/** One SSE comment line's text (after the ':'), or null when it is not a queue notice. */
export function parseQueued (comment: string): StreamEvent | null {
  const m = QUEUED.exec(comment.trim())
  if (m === null) return null
  const eta = m[3] !== undefined ? Number(m[3]) : null
  return { kind: 'queued', oracle: m[1], place: Number(m[2]), etaS: eta !== null && Number.isFinite(eta) ? eta : null }
}

function fromData (data: string): StreamEvent[] {
  if (data === '[DONE]') return [{ kind: 'done' }]
  let obj: any
  try {
    obj = JSON.parse(data)
  } catch {
    return [{ kind: 'error', message: 'the node sent a malformed stream event' }]
  }
  if (obj === null || typeof obj !== 'object') return []
  if (obj.error !== undefined) {
    const message = typeof obj.error?.message === 'string' ? obj.error.message : 'the node reported an error'
    return [{ kind: 'error', message }]
  }
  const choice = Array.isArray(obj.choices) ? obj.choices[0] : undefined
  if (choice === undefined) return [] // a usage chunk
  const text = typeof choice.delta?.content === 'string' ? choice.delta.content : ''
  const finish = typeof choice.finish_reason === 'string' ? choice.finish_reason : null
  return text === '' && finish === null ? [] : [{ kind: 'delta', text, finish }]
}

/** Incremental: feed it decoded text as it arrives, in any cut; it returns the complete events. */
export class SseParser {
  private buf = ''
  private data: string[] = []

  feed (chunk: string): StreamEvent[] {
    this.buf += chunk
    const out: StreamEvent[] = []
    for (;;) {
      const nl = this.buf.search(/\r\n|\r|\n/)
      if (nl < 0) break
      const line = this.buf.slice(0, nl)
      this.buf = this.buf.slice(nl + (this.buf.startsWith('\r\n', nl) ? 2 : 1))
      out.push(...this.line(line))
    }
    return out
  }

  /** The stream ended: an event not closed by a blank line still counts. */
  end (): StreamEvent[] {
    const out = this.buf !== '' ? this.line(this.buf) : []
    this.buf = ''
    return [...out, ...this.dispatch()]
  }

  private line (line: string): StreamEvent[] {
    if (line === '') return this.dispatch()
    if (line.startsWith(':')) {
      const q = parseQueued(line.slice(1))
      return q !== null ? [q] : []
    }
    const colon = line.indexOf(':')
    const field = colon < 0 ? line : line.slice(0, colon)
    let value = colon < 0 ? '' : line.slice(colon + 1)
    if (value.startsWith(' ')) value = value.slice(1)
    if (field === 'data') this.data.push(value)
    return []
  }

  private dispatch (): StreamEvent[] {
    if (this.data.length === 0) return []
    const data = this.data.join('\n')
    this.data = []
    return fromData(data)
  }
}
