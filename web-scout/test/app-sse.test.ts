import { describe, expect, it } from 'vitest'
import { parseQueued, SseParser, type StreamEvent } from '../src/app/sse'

const chunk = (content: string | null, finish: string | null = null): string =>
  `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', choices: [{ index: 0, delta: content === null ? {} : { content }, finish_reason: finish }] })}\n\n`

function all (text: string, cut = 0): StreamEvent[] {
  const p = new SseParser()
  const out: StreamEvent[] = []
  if (cut <= 0) out.push(...p.feed(text))
  else for (let i = 0; i < text.length; i += cut) out.push(...p.feed(text.slice(i, i + cut)))
  return [...out, ...p.end()]
}

// What the node writes for a request that waits at an Oracle (app/shard/api/openai_routes.py)
const STREAM = chunk('') +
  ': queued at Oracle 12D3KooWAbc: place 3, about 4.5 s\n\n' +
  ': queued at Oracle 12D3KooWAbc: place 1, about None s\n\n' +
  chunk('Hel') + chunk('lo') + chunk(null, 'stop') + 'data: [DONE]\n\n'

describe('the SSE stream of /v1/chat/completions', () => {
  it('yields queue places from comments, then text, then done', () => {
    expect(all(STREAM)).toEqual([
      { kind: 'queued', oracle: '12D3KooWAbc', place: 3, etaS: 4.5 },
      { kind: 'queued', oracle: '12D3KooWAbc', place: 1, etaS: null },
      { kind: 'delta', text: 'Hel', finish: null },
      { kind: 'delta', text: 'lo', finish: null },
      { kind: 'delta', text: '', finish: 'stop' },
      { kind: 'done' }
    ])
  })
  it('gives the same events however the bytes are cut, and with CRLF line ends', () => {
    const whole = all(STREAM)
    for (const cut of [1, 2, 3, 7, 64]) expect(all(STREAM, cut)).toEqual(whole)
    expect(all(STREAM.replace(/\n/g, '\r\n'), 5)).toEqual(whole)
  })
  it('ignores other comments, other fields and usage chunks', () => {
    const text = ': keep-alive\n\nevent: x\nid: 4\n' + chunk('a') + 'data: {"choices": [], "usage": {"total_tokens": 3}}\n\n'
    expect(all(text)).toEqual([{ kind: 'delta', text: 'a', finish: null }])
    expect(parseQueued(' queued at Oracle: place x')).toBeNull()
  })
  it('reports an error object in the stream, and malformed data, as errors', () => {
    expect(all('data: {"error": {"message": "the verifier failed", "type": "server_error"}}\n\n'))
      .toEqual([{ kind: 'error', message: 'the verifier failed' }])
    expect(all('data: {not json\n\n')).toEqual([{ kind: 'error', message: 'the node sent a malformed stream event' }])
  })
  it('counts an unterminated last event when the stream ends', () => {
    expect(all(chunk('x').trimEnd())).toEqual([{ kind: 'delta', text: 'x', finish: null }])
  })
  it('keeps multi-line data together and a text made only of a newline', () => {
    expect(all(chunk('\n'))).toEqual([{ kind: 'delta', text: '\n', finish: null }])
    expect(all('data: {"choices":\ndata: [{"delta": {"content": "y"}}]}\n\n')).toEqual([{ kind: 'delta', text: 'y', finish: null }])
  })
})
