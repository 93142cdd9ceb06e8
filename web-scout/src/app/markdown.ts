// Model output is untrusted text: Markdown is rendered by marked and the HTML is always passed
// through DOMPurify before it reaches the page. Links open in a new tab without an opener;
// images are dropped (a model's image URL would make the browser fetch from anywhere).
import DOMPurify from 'dompurify'
import { Marked } from 'marked'

const marked = new Marked({ gfm: true, breaks: false, async: false })

let hooked = false
function hook (): void {
  if (hooked) return
  hooked = true
  DOMPurify.addHook('afterSanitizeAttributes', (node) => {
    if (node.tagName === 'A') {
      const href = node.getAttribute('href') ?? ''
      if (!/^(https?:|mailto:|#)/i.test(href)) node.removeAttribute('href')
      node.setAttribute('target', '_blank')
      node.setAttribute('rel', 'noopener noreferrer nofollow')
    }
  })
}

export function renderMarkdown (text: string): string {
  hook()
  const html = marked.parse(text) as string
  return DOMPurify.sanitize(html, {
    USE_PROFILES: { html: true },
    FORBID_TAGS: ['img', 'style', 'form', 'input', 'button', 'textarea', 'select', 'iframe', 'video', 'audio', 'svg', 'math'],
    FORBID_ATTR: ['style', 'class', 'id']
  })
}
