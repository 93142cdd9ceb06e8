// Open the web scout page in Debian's headless Chromium (playwright-core, no downloaded browser)
// and report the page's state (window.shardScout) as one JSON line on stdout every 500 ms, until
// stdin closes or --seconds pass. Used by tests/test_web_scout.py and bench/web_scout_bench.py.
//   node e2e/scout.mjs --url http://127.0.0.1:8000/scout/ [--seconds 600] [--chromium /usr/bin/chromium]
//     [--secure-origin http://10.0.0.1:8000] (a plain-http origin Chromium treats as secure, as
//     it does localhost: for a page from another machine's node in tests)
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium } from 'playwright-core'

const args = Object.fromEntries(process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []))
const url = args.url ?? 'http://127.0.0.1:8000/scout/'
const seconds = Number(args.seconds ?? 600)
const executablePath = args.chromium ?? process.env.CHROMIUM ?? '/usr/bin/chromium'

const profile = mkdtempSync(join(tmpdir(), 'shard-scout-chromium-'))
const browser = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run',
    ...(args['secure-origin'] !== undefined ? [`--unsafely-treat-insecure-origin-as-secure=${args['secure-origin']}`] : [])]
})
let stopping = false
const stop = async (code) => {
  if (stopping) return
  stopping = true
  await browser.close().catch(() => {})
  rmSync(profile, { recursive: true, force: true })
  process.exit(code)
}
process.stdin.on('end', () => void stop(0))
process.stdin.resume()
process.on('SIGTERM', () => void stop(0))
setTimeout(() => void stop(0), seconds * 1000)

const page = browser.pages()[0] ?? await browser.newPage()
page.on('console', (msg) => { if (msg.type() === 'error' || msg.type() === 'warning') process.stderr.write(`[page ${msg.type()}] ${msg.text()}\n`) })
page.on('pageerror', (err) => process.stderr.write(`[page error] ${err.message}\n`))
await page.goto(url)
for (;;) {
  try {
    const state = await page.evaluate(() => ({ ...window.shardScout, isolated: globalThis.crossOriginIsolated, error: window.shardScoutError ?? null }))
    process.stdout.write(JSON.stringify(state) + '\n')
  } catch (err) {
    process.stdout.write(JSON.stringify({ error: String(err) }) + '\n')
  }
  await new Promise(resolve => setTimeout(resolve, 500))
}
