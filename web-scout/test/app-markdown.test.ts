// @vitest-environment jsdom
import { describe, expect, it } from 'vitest'
import { renderMarkdown } from '../src/app/markdown'

function dom (html: string): HTMLElement {
  const div = document.createElement('div')
  div.innerHTML = html
  return div
}

describe('rendering model output', () => {
  it('renders Markdown: emphasis, lists, tables and fenced code', () => {
    const d = dom(renderMarkdown('**bold** and `x`\n\n- one\n- two\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```js\nconst a = 1 < 2\n```'))
    expect(d.querySelector('strong')?.textContent).toBe('bold')
    expect(d.querySelectorAll('li')).toHaveLength(2)
    expect(d.querySelector('td')?.textContent).toBe('1')
    expect(d.querySelector('pre code')?.textContent).toBe('const a = 1 < 2\n')
  })
  it('never lets script, event handlers or javascript: URLs through', () => {
    const attacks = [
      '<script>window.pwned = 1</script>',
      '<img src=x onerror="window.pwned = 1">',
      '[click](javascript:window.pwned=1)',
      '<a href="javascript:window.pwned=1">x</a>',
      '<iframe src="https://example.com"></iframe>',
      '<svg><script>window.pwned = 1</script></svg>',
      '<div onclick="window.pwned = 1" style="position:fixed">x</div>',
      '<form action="https://example.com"><input name=a></form>',
      '![x](https://example.com/track.png)',
      '<a href="data:text/html,<script>1</script>">d</a>'
    ]
    for (const a of attacks) {
      const html = renderMarkdown(a)
      const d = dom(html)
      expect(html).not.toMatch(/<script|onerror|onclick|javascript:|<iframe|<svg|<form|<input|<img|style=|data:text/i)
      expect(d.querySelectorAll('script, iframe, img, svg, form, input')).toHaveLength(0)
    }
  })
  it('opens web links in a new tab without an opener', () => {
    const a = dom(renderMarkdown('[docs](https://example.com/a)')).querySelector('a')!
    expect(a.getAttribute('href')).toBe('https://example.com/a')
    expect(a.getAttribute('target')).toBe('_blank')
    expect(a.getAttribute('rel')).toContain('noopener')
  })
  it('shows HTML in code as text', () => {
    const d = dom(renderMarkdown('```html\n<script>alert(1)</script>\n```'))
    expect(d.querySelector('script')).toBeNull()
    expect(d.querySelector('code')?.textContent).toContain('<script>alert(1)</script>')
  })
})
