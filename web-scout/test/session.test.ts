import { describe, expect, it } from 'vitest'
import { draftRef, MAX_DRAFT_CHARS, MessageError, parseDraft, parseProgress, type Progress, type Verdict, type Work } from '../src/messages'
import { takesWork, workTopics } from '../src/net'
import { cutDraft, DraftSession, MAX_SESSIONS, SESSION_IDLE_MS, Sessions, START_AHEAD } from '../src/session'

const ORACLE = '12D3KooWOracle'
const work = (seq: number, context: string, position: number, deadline = Date.now() + 60_000): Work => ({
  v: 1, work_id: `req.${seq}`, model: 'm', context, position, max_draft: 16, deadline_ms: deadline, vocab: '', tokens: null
})
const progress = (position: number, text: string, n: number, workId = 'req.1'): Progress => ({
  v: 1, type: 'progress', work_id: workId, position, tokens: Array.from({ length: n }, (_, i) => i + 1), text, model: 'm'
})
const verdict = (outcome: string, proposed: number, accepted: number): Verdict => ({
  v: 1, work_id: 'req.1', outcome, proposed, accepted, reason: '', receipt: null
})

/** The drafter's answer to the session's current job: `out` after the prompt it asked for. */
function grow (s: DraftSession, out: string, tokens = 2): string {
  const job = s.want(2)
  expect(job).not.toBeNull()
  s.grew(job!.prompt, out, tokens, 'wllama')
  return job!.prompt
}

describe('a drafting session', () => {
  it('drafts from the work, then sends its guess again only as it reaches further', () => {
    const s = new DraftSession(ORACLE, work(1, 'Say: a b c d', 10), 0)
    expect(s.want(2)).toEqual({ prompt: 'Say: a b c d', maxTokens: 2 })
    grow(s, ' a b')
    const d1 = s.nextDraft()
    expect(d1).toEqual({ v: 1, work_id: 'req.1', position: 10, text: ' a b', seq: 1 })
    expect(s.nextDraft()).toBeNull() // nothing new since
    expect(s.want(2)?.prompt).toBe('Say: a b c d a b') // it drafts on from its own guess
    grow(s, ' c d')
    expect(s.nextDraft()).toMatchObject({ position: 10, text: ' a b c d', seq: 2 })
    grow(s, ' e f')
    expect(s.nextDraft()).toBeNull() // two on their way: no third
    s.answered(verdict('verified', 4, 4))
    expect(s.nextDraft()).toMatchObject({ text: ' a b c d e f', seq: 3 })
  })

  it('follows the progress: agreement moves the guess start on, disagreement drops the guess', () => {
    const s = new DraftSession(ORACLE, work(1, 'ctx', 3), 0)
    grow(s, ' one two')
    grow(s, ' three four')
    expect(s.progress(progress(3, ' one', 1), 1)).toBe(true)
    expect([s.text, s.position, s.guess]).toEqual(['ctx one', 4, ' two three four'])
    expect(s.nextDraft()).toMatchObject({ position: 4, text: ' two three four', seq: 1 })
    expect(s.progress(progress(4, ' two', 1), 2)).toBe(true)
    expect(s.nextDraft()).toBeNull() // the same reach as the draft on its way: not news to the Oracle
    const epoch = s.epoch
    expect(s.progress(progress(5, ' TREE', 1), 3)).toBe(true) // the Oracle went another way
    expect([s.text, s.position, s.guess, s.epoch]).toEqual(['ctx one two TREE', 6, '', epoch + 1])
    expect(s.want(2)?.prompt).toBe('ctx one two TREE')
    grow(s, ' x')
    expect(s.nextDraft()).toMatchObject({ position: 6, text: ' x', seq: 2 }) // a new guess goes out even if shorter
  })

  it('keeps what a model call made before the progress arrived, where it still agrees', () => {
    const s = new DraftSession(ORACLE, work(1, 'ctx', 3), 0)
    const job = s.want(2)!
    s.progress(progress(3, ' a', 1), 1) // while the drafter was busy
    s.grew(job.prompt, ' a b', 2, 'wllama') // its answer started with what the Oracle decided
    expect(s.guess).toBe(' b')
    const job2 = s.want(2)!
    s.progress(progress(4, ' Z', 1), 2)
    s.grew(job2.prompt, ' b c', 2, 'wllama') // it no longer fits
    expect(s.guess).toBe('')
  })

  it('reads progress that overlaps a newer work, and ignores gaps', () => {
    const s = new DraftSession(ORACLE, work(1, 'ctx', 3), 0)
    expect(s.progress(progress(5, ' late', 1), 1)).toBe(false) // tokens 3-4 were never heard: wait for a work
    expect(s.position).toBe(3)
    s.progress(progress(3, ' a', 1), 1)
    s.resync(work(2, 'ctx a b c', 6), 2) // the newer work, before the progress that covers it
    expect([s.work.work_id, s.position]).toEqual(['req.2', 6])
    expect(s.progress(progress(4, ' b c d', 3), 3)).toBe(true) // positions 4..6: only the last is new
    expect([s.text, s.position]).toEqual(['ctx a b c d', 7])
    expect(s.progress(progress(4, ' b c d', 3), 3)).toBe(false) // heard already
    s.resync(work(1, 'ctx', 3), 4) // an older work arriving late changes nothing
    expect([s.work.work_id, s.position]).toEqual(['req.2', 7])
    s.resync(work(3, 'other text entirely', 9), 5) // a work that disagrees: start again from it
    expect([s.text, s.position, s.guess]).toEqual(['other text entirely', 9, ''])
  })

  it('lets the verdicts set how far ahead it drafts, rests after misses, and stops when the request ends', () => {
    const s = new DraftSession(ORACLE, work(1, 'ctx', 3), 0)
    expect(s.ahead).toBe(START_AHEAD)
    s.inFlight = 2
    s.answered(verdict('verified', 4, 4))
    expect(s.ahead).toBe(START_AHEAD + 2)
    s.answered(verdict('verified', 8, 1))
    expect(s.ahead).toBe(3)
    expect(s.inFlight).toBe(0)
    s.guessTokens = 3
    expect(s.want(2)).toBeNull() // far enough ahead
    // nothing kept: the next send is skipped, then two after the next miss
    s.answered(verdict('verified', 3, 0))
    expect([s.rest, s.backoff]).toEqual([1, 2])
    s.guess = ' q'
    expect(s.nextDraft()).toBeNull()
    s.guess = ' q r'
    expect(s.nextDraft()).toMatchObject({ text: ' q r', seq: 1 })
    s.answered(verdict('ignored', 0, 0))
    expect([s.rest, s.backoff]).toEqual([2, 4])
    s.answered(verdict('verified', 2, 1))
    expect(s.backoff).toBe(1)
    s.answered(verdict('finished', 0, 0))
    expect(s.done).toBe(true)
    s.guess = ' q r s t'
    s.rest = 0
    expect(s.want(2)).toBeNull()
    expect(s.nextDraft()).toBeNull()
  })

  it('at the Oracle\'s pace, drafts ahead of where it is now and holds back a guess it has likely passed', () => {
    const s = new DraftSession(ORACLE, work(1, 'ctx', 3), 1000)
    s.pace = 10 // tokens/s: 100 ms a token
    grow(s, ' a b', 2) // two tokens of guess
    expect(s.lag(1000)).toBe(0)
    expect(s.lag(1300)).toBe(3) // 300 ms unheard: about 3 tokens decided since
    expect(s.nextDraft(1300)).toBeNull() // 2 tokens from position 3 would arrive stale
    expect(s.seq).toBe(0)
    expect(s.want(2, 1300)).toEqual({ prompt: 'ctx a b', maxTokens: 2 }) // it drafts on instead
    s.guessTokens = START_AHEAD // far ahead of the last known position...
    expect(s.want(2, 1000)).toBeNull()
    expect(s.want(2, 1300)?.maxTokens).toBe(2) // ...but not of where the Oracle is now
    s.guessTokens = 4
    expect(s.nextDraft(1300)).toMatchObject({ position: 3, text: ' a b', seq: 1 }) // reaches past it: sent
    expect(s.progress(progress(3, ' a', 1), 1350)).toBe(true) // heard: the lag starts again from there
    expect(s.lag(1350)).toBe(0)
    expect(s.lag(1000_000)).toBe(16) // never more than a full draft
    s.pace = null
    expect(s.lag(2000)).toBe(0) // no pace known: where it was last heard
  })

  it('asks the drafter nothing more where it had nothing to say, until the text moves', () => {
    const s = new DraftSession(ORACLE, work(1, 'ctx', 3), 0)
    const prompt = grow(s, '', 0)
    expect(prompt).toBe('ctx')
    expect(s.want(2)).toBeNull()
    s.progress(progress(3, ' more', 1), 1)
    expect(s.want(2)?.prompt).toBe('ctx more')
  })

  it('cuts a draft to the wire limit without splitting a surrogate pair', () => {
    expect(cutDraft('x'.repeat(MAX_DRAFT_CHARS + 5)).length).toBe(MAX_DRAFT_CHARS)
    expect(cutDraft('x'.repeat(MAX_DRAFT_CHARS - 1) + '😀').length).toBe(MAX_DRAFT_CHARS - 1)
  })
})

describe('the sessions of a scout', () => {
  it('starts one per request, takes progress only from its Oracle, and drafts for the newest first', () => {
    const all = new Sessions()
    expect(all.onWork(ORACLE, work(1, 'ctx', 3, Date.now() - 1), 0)).toBeNull() // past its deadline on arrival
    const a = all.onWork(ORACLE, work(1, 'ctx', 3), 0)!
    const b = all.onWork(ORACLE, { ...work(1, 'other', 2), work_id: 'req2.1' }, 1)!
    expect(all.started).toBe(2)
    expect(all.next(2, 2)).toBe(b)
    expect(all.onProgress('12D3KooWSomeoneElse', progress(3, ' x', 1), 3)).toBe(false)
    expect(a.position).toBe(3)
    expect(all.onProgress(ORACLE, progress(3, ' x', 1), 3)).toBe(true)
    b.done = true
    expect(all.next(2, 4)).toBe(a) // an ended request is dropped
    expect(all.map.has('req2')).toBe(false)
    expect(all.next(2, 4 + SESSION_IDLE_MS)).toBeNull() // no news for too long
    expect(all.map.size).toBe(0)
    for (let i = 0; i < MAX_SESSIONS + 5; i++) all.onWork(ORACLE, { ...work(1, 'c', 1), work_id: `r${i}.1` }, 5)
    expect(all.map.size).toBe(MAX_SESSIONS)
  })
})

describe('session messages', () => {
  it('parses progress as the node sends it, and refuses what it must not take', () => {
    const p = parseProgress({ v: 1, type: 'progress', work_id: 'k.2', position: 7, tokens: [1, 2], text: ' hi', model: 'm' })
    expect(p).toMatchObject({ position: 7, tokens: [1, 2], text: ' hi', model: 'm' })
    expect(parseProgress({ type: 'progress', work_id: 'k.2', position: 7, tokens: [1] })).toMatchObject({ text: '', model: '' })
    for (const bad of [
      { type: 'work', work_id: 'k', position: 1, tokens: [1] },
      { type: 'progress', work_id: 'k', position: 0, tokens: [1] },
      { type: 'progress', work_id: 'k', position: 1, tokens: [] },
      { type: 'progress', work_id: 'k', position: 1, tokens: Array(65).fill(1) },
      { type: 'progress', work_id: 'k', position: 1, tokens: [1], text: 'x'.repeat(2049) },
      { type: 'progress', work_id: 'k', position: 1, tokens: [1], text: 5 }
    ]) expect(() => parseProgress(bad)).toThrow(MessageError)
  })

  it('numbers session drafts and names their receipts by work and number', () => {
    const d = parseDraft({ work_id: 'k.2', position: 7, text: ' x', seq: 3 })
    expect(d.seq).toBe(3)
    expect(draftRef(d)).toBe('k.2#3')
    expect(draftRef({ v: 1, work_id: 'k.2', position: 7, text: ' x' })).toBe('k.2')
    expect(() => parseDraft({ work_id: 'k.2', position: 7, text: ' x', seq: -1 })).toThrow(MessageError)
  })
})

describe('work topics', () => {
  it('puts the tab on the topics of the models it drafts for, and only their work there', () => {
    expect(workTopics([])).toEqual(['shard-work'])
    expect(workTopics(['SmolLM2', 'SmolLM2', ''])).toEqual(['shard-work/SmolLM2'])
    expect(workTopics(['a\nb'])).toEqual(['shard-work'])
    const topics = workTopics(['A'])
    expect(takesWork(topics, 'shard-work/A', { model: 'A' })).toBe(true)
    expect(takesWork(topics, 'shard-work/A', { model: 'B' })).toBe(false) // another model's, on A's topic
    expect(takesWork(topics, 'shard-work/B', { model: 'B' })).toBe(false)
    expect(takesWork(topics, 'shard-work', { model: 'B' })).toBe(false) // not on the shared topic any more
    expect(takesWork(['shard-work'], 'shard-work', { model: 'B' })).toBe(true)
  })
})
