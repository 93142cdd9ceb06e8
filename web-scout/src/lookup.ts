// Prompt lookup over text (as llama.cpp's n-gram drafters, but on the context's text since a
// browser has no access to the Oracle's tokenizer): if the last n pieces of the context appeared
// before, propose the pieces that followed their most recent earlier occurrence. A "piece" is a
// word with its leading space, a run of digits, or one punctuation mark: close to how BPE
// tokenizers split English text and code, so `maxDraft` pieces are about `maxDraft` tokens.

const PIECE = /\s*(?:[\p{L}\p{M}_]+|\p{N}{1,3}|[^\s\p{L}\p{M}\p{N}_])|\s+/gu

export function pieces (text: string): string[] {
  return text.match(PIECE) ?? []
}

export interface LookupOptions {
  ngramMax?: number
  ngramMin?: number
  window?: number // characters of the context searched (the end of it)
}

/** The continuation proposed for `context`, at most `maxDraft` pieces, or '' when no n-gram of the
 * context's end (from ngramMax down to ngramMin pieces) occurred earlier. */
export function lookupDraft (context: string, maxDraft: number, opts: LookupOptions = {}): string {
  const ngramMax = opts.ngramMax ?? 4
  const ngramMin = opts.ngramMin ?? 2
  const window = opts.window ?? 16_000
  const text = context.length > window ? context.slice(context.length - window) : context
  const p = pieces(text)
  // matched without their leading whitespace: a word at the start of a line matches the same word
  // mid-sentence; the continuation keeps its own spacing
  const key = p.map(x => x.trimStart() || x)
  if (p.length < ngramMin + 1 || maxDraft < 1) return ''
  for (let n = Math.min(ngramMax, p.length - 1); n >= ngramMin; n--) {
    const tail = key.slice(key.length - n)
    // the most recent earlier occurrence whose continuation is not the tail itself
    for (let start = p.length - n - 1; start >= 0; start--) {
      let match = true
      for (let k = 0; k < n; k++) {
        if (key[start + k] !== tail[k]) { match = false; break }
      }
      if (!match) continue
      const from = start + n
      const to = Math.min(from + maxDraft, p.length)
      if (to > from) return p.slice(from, to).join('')
    }
  }
  return ''
}
