// Drive the web app in Debian's headless Chromium (playwright-core, no downloaded browser), one
// command per stdin line, one JSON answer per stdout line (tests/test_webapp.py's Browser class):
//   {"id", "op": "goto", "url"}                    {"id", "op": "eval", "js"}  (an expression; awaited)
//   {"id", "op": "fill", "selector", "text"}        {"id", "op": "click", "selector"}
//   {"id", "op": "press", "key"}                    {"id", "op": "wait", "selector", "state"?, "timeout"?}
//   {"id", "op": "viewport", "width", "height"}     {"id", "op": "scheme", "value": "light"|"dark"}
//   {"id", "op": "screenshot", "path"}              {"id", "op": "metrics"}  (navigation timing)
//   {"id", "op": "axe"}  (axe-core's WCAG 2.1 A/AA violations)
// Answers: {"id", "ok": true, "value"} or {"id", "ok": false, "error"}.
//   node e2e/app.mjs [--chromium /usr/bin/chromium]
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'

const args = Object.fromEntries(process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []))
const axePath = fileURLToPath(new URL('../node_modules/axe-core/axe.min.js', import.meta.url))
const executablePath = args.chromium ?? process.env.CHROMIUM ?? '/usr/bin/chromium'
const profile = mkdtempSync(join(tmpdir(), 'shard-app-chromium-'))
const context = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  viewport: { width: 1280, height: 800 },
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run']
})
await context.grantPermissions(['clipboard-read', 'clipboard-write']).catch(() => {})
const page = context.pages()[0] ?? await context.newPage()
page.on('console', (msg) => { if (msg.type() === 'error' || msg.type() === 'warning') process.stderr.write(`[page ${msg.type()}] ${msg.text()}\n`) })
page.on('pageerror', (err) => process.stderr.write(`[page error] ${err.message}\n`))

const ops = {
  goto: async (c) => { await page.goto(c.url, { waitUntil: 'load' }); return page.url() },
  eval: async (c) => await page.evaluate(async (js) => await (0, eval)(js), c.js),
  fill: async (c) => await page.fill(c.selector, c.text),
  click: async (c) => await page.click(c.selector),
  press: async (c) => await page.keyboard.press(c.key),
  wait: async (c) => { await page.waitForSelector(c.selector, { state: c.state ?? 'visible', timeout: c.timeout ?? 30_000 }); return true },
  viewport: async (c) => await page.setViewportSize({ width: c.width, height: c.height }),
  scheme: async (c) => await page.emulateMedia({ colorScheme: c.value }),
  screenshot: async (c) => { await page.screenshot({ path: c.path, fullPage: false }); return c.path },
  // axe-core's WCAG 2.1 A/AA rules (labels, names, contrast, landmarks) on the page as it is now
  axe: async () => {
    if (!await page.evaluate(() => 'axe' in window)) await page.addScriptTag({ path: axePath })
    return await page.evaluate(async () => {
      const r = await window.axe.run(document, { runOnly: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] })
      return r.violations.map(v => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 5).map(n => `${n.target.join(' ')}: ${n.failureSummary}`) }))
    })
  },
  metrics: async () => await page.evaluate(() => {
    const nav = performance.getEntriesByType('navigation')[0]
    const fcp = performance.getEntriesByName('first-contentful-paint')[0]
    return { domContentLoadedMs: nav?.domContentLoadedEventEnd, loadMs: nav?.loadEventEnd, firstContentfulPaintMs: fcp?.startTime ?? null, transferBytes: performance.getEntriesByType('resource').reduce((n, r) => n + (r.transferSize ?? 0), nav?.transferSize ?? 0) }
  })
}

const close = async () => {
  await context.close().catch(() => {})
  rmSync(profile, { recursive: true, force: true })
  process.exit(0)
}
process.on('SIGTERM', () => void close())
const lines = createInterface({ input: process.stdin })
lines.on('close', () => void close())
process.stdout.write(JSON.stringify({ id: 0, ok: true, value: 'ready' }) + '\n')
for await (const line of lines) {
  let cmd
  try { cmd = JSON.parse(line) } catch { continue }
  try {
    const value = await ops[cmd.op](cmd)
    process.stdout.write(JSON.stringify({ id: cmd.id, ok: true, value: value ?? null }) + '\n')
  } catch (err) {
    process.stdout.write(JSON.stringify({ id: cmd.id, ok: false, error: String(err?.message ?? err) }) + '\n')
  }
}
