import { describe, expect, it } from 'vitest'
import { lookupDraft, pieces } from '../src/lookup'

describe('pieces', () => {
  it('splits words with their leading space, numbers and punctuation', () => {
    expect(pieces('Hello, world 2024!')).toEqual(['Hello', ',', ' world', ' 202', '4', '!'])
    expect(pieces('def f(x):\n    return x')).toEqual(['def', ' f', '(', 'x', ')', ':', '\n    return', ' x'])
  })
  it('keeps every character', () => {
    const s = 'a  b\t\tc.\n\n  d é 漢字'
    expect(pieces(s).join('')).toBe(s)
  })
})

describe('lookupDraft', () => {
  it('continues a repeated passage (an edit of given text)', () => {
    const ctx = 'Fix the typos: The quick brown fox jumps over the lazy dog and runs away.\nAnswer: The quick brown'
    expect(lookupDraft(ctx, 4)).toBe(' fox jumps over the')
  })
  it('stops at maxDraft pieces', () => {
    expect(lookupDraft('one two three four five six. one two', 2)).toBe(' three four')
    expect(lookupDraft('one two three four five six. one two', 1)).toBe(' three')
  })
  it('prefers the longest n-gram, then the most recent occurrence', () => {
    const ctx = 'a b c X. z b c Y. a b c'
    expect(lookupDraft(ctx, 1)).toBe(' X')
    expect(lookupDraft('p q A. p q B. p q', 1)).toBe(' B')
  })
  it('proposes nothing without a match or for tiny inputs', () => {
    expect(lookupDraft('nothing repeats in this sentence', 8)).toBe('')
    expect(lookupDraft('', 8)).toBe('')
    expect(lookupDraft('a', 8)).toBe('')
    expect(lookupDraft('a b a b', 0)).toBe('')
  })
  it('only searches the window at the end of a long context', () => {
    const early = 'alpha beta gamma delta '
    const ctx = early + 'x '.repeat(5000) + 'alpha beta'
    expect(lookupDraft(ctx, 2)).toBe(' gamma delta')
    expect(lookupDraft(ctx, 2, { window: 100 })).toBe('')
  })
})
