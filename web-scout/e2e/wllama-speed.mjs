// wllama's drafting speed in Debian's headless Chromium, through the scout page's own drafter
// worker (window.shardScoutDraft), with the GGUF the node serves. Prints one JSON object.
//   node e2e/wllama-speed.mjs --url 'http://127.0.0.1:8000/scout/?drafter=wllama&lookup_first=0' [--threads N]
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium } from 'playwright-core'

const args = Object.fromEntries(process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []))
const profile = mkdtempSync(join(tmpdir(), 'shard-scout-chromium-'))
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: args.chromium ?? process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run']
})
try {
  const page = browser.pages()[0] ?? await browser.newPage()
  await page.goto(args.url)
  await page.waitForFunction(() => window.shardScout?.drafter?.loaded === true, null, { timeout: 180_000 })
  const result = await page.evaluate(async () => {
    const draft = window.shardScoutDraft
    const base = '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\n' +
      'Write a short story about a lighthouse keeper who finds a message in a bottle, and what the message says.<|im_end|>\n<|im_start|>assistant\n'
    const runs = []
    // 1. a fresh prompt, 64 tokens: prefill and decode speed from wllama's timings
    const first = await draft(base, 64)
    runs.push(first)
    // 2. the scout's real pattern: the context grows by what was generated, 8-token drafts each time
    let ctx = base + first.text
    const grow = []
    for (let i = 0; i < 8; i++) {
      const r = await draft(ctx, 8)
      grow.push(r)
      ctx += r.text
    }
    return { drafter: window.shardScout.drafter, threads: window.shardScoutConfig.nThreads, isolated: crossOriginIsolated, first, grow }
  })
  const t = result.first.timings ?? {}
  const growMs = result.grow.map(r => r.ms)
  const growTokens = result.grow.reduce((a, r) => a + r.tokens, 0)
  console.log(JSON.stringify({
    drafter: result.drafter.name,
    load_ms: result.drafter.loadMs,
    threads: result.threads,
    isolated: result.isolated,
    prefill_tokens: t.prompt_n,
    prefill_tok_s: t.prompt_per_second,
    decode_tokens: t.predicted_n,
    decode_tok_s: t.predicted_per_second,
    first_draft_ms: Math.round(result.first.ms),
    incremental_8_token_draft_ms: growMs.map(Math.round),
    incremental_tok_s: Math.round((growTokens / growMs.reduce((a, b) => a + b, 0)) * 1000 * 10) / 10
  }))
} finally {
  await browser.close()
  rmSync(profile, { recursive: true, force: true })
}
