// Drafting sessions: the tab drafts ahead of the Oracle (mirrors DraftSession in
// app/shard/scout/headless.py, in text since a browser has no access to the Oracle's tokenizer).
//
// Per request, the session knows what the Oracle has decided (`text`, `position` tokens long: the
// work's context, then each `Progress`) and keeps its own guess beyond it. The drafter grows the
// guess a few tokens at a time from the session's latest text; a progress message that agrees with
// the guess moves the guess's start on, one that disagrees drops it. The guess is sent again (a
// numbered draft, `seq` 1, 2, ...) whenever it reaches further than the last one sent, with at most
// MAX_IN_FLIGHT on their way. How far ahead it drafts follows the verdicts; a `finished` verdict
// ends the session. Given the Oracle's pace, the session also guesses how far the Oracle has got
// since it was last heard from (`lag`): it drafts ahead of that point, and holds back a guess that
// does not reach past it (the Oracle would only answer `stale`). Pure logic (no worker, no network): the scout (scout.ts) drives it.

import { MAX_DRAFT_CHARS, MAX_DRAFT_TOKENS, VERSION, requestKey, type Draft, type Progress, type Verdict, type Work } from './messages'

export const MAX_IN_FLIGHT = 2 // one draft can wait in the Oracle's inbox while one is checked
export const START_AHEAD = 8 // tokens to draft ahead before any verdict
export const MIN_AHEAD = 2
export const MAX_BACKOFF = 32 // after a draft with nothing kept, skip the next 1, 2, 4 ... 32 sends
export const SESSION_IDLE_MS = 10_000 // no news for this long: the request ended, or its Oracle went away
export const MAX_SESSIONS = 64
const MAX_MARKS = 256 // positions whose text length is remembered (to read overlapping progress)

/** A model call the session wants: continue `prompt` by up to `maxTokens` tokens. */
export interface DraftJob { prompt: string, maxTokens: number }

/** Cut text to the draft limit without splitting a UTF-16 surrogate pair. */
export function cutDraft (text: string): string {
  let t = text.length > MAX_DRAFT_CHARS ? text.slice(0, MAX_DRAFT_CHARS) : text
  const last = t.charCodeAt(t.length - 1)
  if (last >= 0xd800 && last <= 0xdbff) t = t.slice(0, -1)
  return t
}

export class DraftSession {
  work: Work // the newest work of the request (drafts name it)
  text: string // what the Oracle has decided: the context and each progress since
  position: number // the Oracle's position (tokens) at the end of `text`
  guess = '' // the session's own continuation of `text`
  guessTokens = 0 // about how many tokens the guess is (the drafter's count)
  epoch = 0 // bumped whenever the guess is dropped
  seq = 0
  sent = { epoch: -1, end: 0 } // the last draft sent: its epoch and where it ended (a character offset)
  inFlight = 0
  ahead = START_AHEAD
  rest = 0
  backoff = 1
  done = false // a `finished` verdict: the request ended
  heardAt: number
  movedAt: number // when the Oracle's position last moved (the scout's clock, ms)
  pace: number | null = null // the Oracle's decoding pace (tokens/s), set by the scout; null: unknown
  source = '' // the drafter of the guess's newest part
  private dry: string | null = null // a prompt the drafter had nothing more to say after
  private readonly marks = new Map<number, number>() // position -> length of `text` there

  constructor (readonly oracle: string, work: Work, now: number) {
    this.work = work
    this.text = work.context
    this.position = work.position
    this.heardAt = now
    this.movedAt = now
    this.mark()
  }

  get key (): string { return requestKey(this.work.work_id) }

  private mark (): void {
    this.marks.set(this.position, this.text.length)
    while (this.marks.size > MAX_MARKS) this.marks.delete(this.marks.keys().next().value as number)
  }

  private drop (): void {
    this.guess = ''
    this.guessTokens = 0
    this.epoch++
  }

  /** The Oracle decided `n` more tokens, spelling `newText`, after `text`. */
  private advance (newText: string, n: number): void {
    if (this.guess.startsWith(newText)) {
      this.guess = this.guess.slice(newText.length) // the guess was right so far: it stays ahead
      this.guessTokens = this.guess.length === 0 ? 0 : Math.max(1, this.guessTokens - n)
    } else if (this.guess.length > 0) {
      this.drop()
    }
    this.text += newText
    this.position += n
    this.movedAt = this.heardAt
    this.mark()
  }

  /** About how many tokens the Oracle has decided since it was last heard to move, at its pace
   * (0 without a pace or a time; at most a full draft). */
  lag (now?: number): number {
    if (this.pace === null || now === undefined || !(this.pace > 0)) return 0
    return Math.min(MAX_DRAFT_TOKENS, Math.floor((this.pace * Math.max(0, now - this.movedAt)) / 1000))
  }

  /** A progress message from the session's Oracle; false when it was of no use (a gap: the next
   * work brings the whole context again). */
  progress (p: Progress, now: number): boolean {
    this.heardAt = now
    const skip = this.position - p.position
    if (skip < 0) return false // a message was missed
    if (skip >= p.tokens.length) return false // nothing new
    if (skip === 0) {
      this.advance(p.text, p.tokens.length)
      return true
    }
    // It overlaps what a work already told: where its text starts is known if its position is.
    const at = this.marks.get(p.position)
    if (at === undefined) return false
    const whole = this.text.slice(0, at) + p.text
    if (!whole.startsWith(this.text)) return false // it does not agree with the work: wait for the next
    this.advance(whole.slice(this.text.length), p.tokens.length - skip)
    return true
  }

  /** A fresh work for the request: adopt it, keeping the guess if it still fits. */
  resync (work: Work, now: number): void {
    this.heardAt = now
    if (work.position < this.work.position) return // an older work, late
    if (work.position <= this.position) {
      this.work = work // drafts name the newest work (its position is not past ours)
      return
    }
    this.work = work
    if (work.context.startsWith(this.text)) {
      this.advance(work.context.slice(this.text.length), work.position - this.position)
      return
    }
    this.text = work.context
    this.position = work.position
    this.movedAt = now
    this.marks.clear()
    this.mark()
    this.drop()
  }

  /** The next model call, or null when the guess is long enough (or the drafter has nothing more):
   * `ahead` tokens past where the Oracle is now (`lag`, when `now` is given). */
  want (chunk: number, now?: number): DraftJob | null {
    if (this.done) return null
    const n = Math.min(chunk, this.ahead + this.lag(now) - this.guessTokens)
    if (n <= 0) return null
    const prompt = this.text + this.guess
    return prompt === this.dry ? null : { prompt, maxTokens: n }
  }

  /** The drafter continued `prompt` with `out` (`tokens` of its tokens). The session may have
   * moved meanwhile: what of prompt + out goes beyond the session's text and guess is kept when it
   * agrees with them. */
  grew (prompt: string, out: string, tokens: number, source: string): void {
    const current = this.text + this.guess
    const whole = prompt + out
    if (prompt === current && out.length === 0) {
      this.dry = prompt // the model ended its text here: nothing further to guess
      return
    }
    if (whole.length <= current.length || !whole.startsWith(current)) return
    const added = whole.slice(current.length)
    this.guess += added
    this.guessTokens += Math.max(1, Math.round(tokens * Math.min(1, added.length / Math.max(1, out.length))))
    this.source = source
  }

  private reach (guess: string): number { return this.text.length + guess.length }

  /** Whether the guess may go out now: it reaches further than the last draft (or replaces it), and
   * past where the Oracle is thought to be now (else it would arrive stale: draft on instead). */
  sendable (now?: number): boolean {
    if (this.done || this.guess.length === 0 || this.inFlight >= MAX_IN_FLIGHT) return false
    if (this.guessTokens <= this.lag(now)) return false
    const text = cutDraft(this.guess)
    return text.length > 0 && (this.epoch !== this.sent.epoch || this.reach(text) > this.sent.end)
  }

  /** The draft to send now (counted in flight until `answered`), or null. */
  nextDraft (now?: number): Draft | null {
    if (!this.sendable(now)) return null
    const text = cutDraft(this.guess)
    this.sent = { epoch: this.epoch, end: this.reach(text) }
    if (this.rest > 0) { // its last drafts were of no use: spare the Oracle this one
      this.rest--
      return null
    }
    this.seq++
    this.inFlight++
    return { v: VERSION, work_id: this.work.work_id, position: this.position, text, seq: this.seq }
  }

  /** The Oracle's verdict on a draft of this session (null: not delivered). */
  answered (verdict: Verdict | null): void {
    this.inFlight = Math.max(0, this.inFlight - 1)
    if (verdict === null) return
    if (verdict.outcome === 'finished') {
      this.done = true // the request ended: draft no more for it
      return
    }
    if (verdict.outcome === 'verified' && verdict.proposed > 0) { // how far ahead follows what the Oracle keeps
      this.ahead = verdict.accepted === verdict.proposed
        ? Math.min(MAX_DRAFT_TOKENS, this.ahead + 2)
        : Math.max(MIN_AHEAD, verdict.accepted + 2)
    }
    if (verdict.accepted > 0) {
      this.backoff = 1
    } else if (verdict.outcome === 'verified' || verdict.outcome === 'ignored') { // missed, or not worth a check
      this.rest = this.backoff
      this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF)
    }
  }

  /** Whether the scout has something to do for this session: draft further, or send. */
  busy (chunk: number, now?: number): boolean { return this.want(chunk, now) !== null || this.sendable(now) }
}

/** The sessions of one scout, by request (bounded, idle ones dropped). */
export class Sessions {
  readonly map = new Map<string, DraftSession>()
  started = 0

  /** A work from `from`: resyncs its request's session, or starts one (null: past its deadline). */
  onWork (from: string, work: Work, now: number, nowMs = Date.now()): DraftSession | null {
    const key = requestKey(work.work_id)
    const s = this.map.get(key)
    if (s !== undefined && s.oracle === from) {
      s.resync(work, now)
      return s
    }
    if (work.deadline_ms < nowMs) return null // late on arrival: the Oracle has moved on
    const fresh = new DraftSession(from, work, now)
    this.map.delete(key)
    this.map.set(key, fresh)
    this.started++
    while (this.map.size > MAX_SESSIONS) this.map.delete(this.map.keys().next().value as string)
    return fresh
  }

  /** A progress message from `from`: only its own session's Oracle moves it. */
  onProgress (from: string, p: Progress, now: number): boolean {
    const s = this.map.get(requestKey(p.work_id))
    if (s === undefined || s.oracle !== from) return false
    return s.progress(p, now)
  }

  /** The newest live session with something to do; idle and finished ones are dropped. */
  next (chunk: number, now: number): DraftSession | null {
    for (const [key, s] of this.map) {
      if (now - s.heardAt > SESSION_IDLE_MS || (s.done && s.inFlight === 0)) this.map.delete(key)
    }
    const all = [...this.map.values()]
    for (let i = all.length - 1; i >= 0; i--) {
      if (all[i].busy(chunk, now)) return all[i]
    }
    return null
  }
}
