// The chat: conversations (localStorage), the model picker, streaming answers with stop,
// regenerate and copy. Model output is rendered only through renderMarkdown (sanitised).
import { Api, ApiError } from './api'
import { renderMarkdown } from './markdown'
import { newConversation, Store, titleOf, type Conversation, type Message } from './store'

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => document.getElementById(id) as T

export type ChatState = 'connecting' | 'key' | 'no-model' | 'ready' | 'queued' | 'answering' | 'error'

export class Chat {
  private list: Conversation[]
  private current: Conversation
  private abort: AbortController | null = null
  private models: string[] = []
  state: ChatState = 'connecting'
  stateText = ''
  private rendering = 0

  constructor (private readonly api: Api, private readonly store: Store, private readonly onKeyNeeded: () => void) {
    this.list = store.conversations()
    this.current = this.list[0] ?? newConversation('')
    this.wire()
    this.renderList()
    this.renderMessages()
  }

  // -- the node's models and this page's state line -----------------------------------------

  async refreshModels (): Promise<void> {
    try {
      const models = await this.api.models()
      const select = $<HTMLSelectElement>('model')
      if (models.join('\n') !== this.models.join('\n') || select.options.length === 0 || select.value === '') {
        // rebuilt only when the list changed: a picker the user has open stays open
        this.models = models
        const keep = select.value !== '' ? select.value : (this.store.get('model') ?? '')
        select.replaceChildren(...models.map(m => new Option(m, m)))
        if (models.length === 0) select.append(new Option('no model', ''))
        select.value = models.includes(keep) ? keep : (models[0] ?? '')
      }
      if (this.busy()) return
      if (this.models.length === 0) this.setState('no-model', 'No model yet: this node has none loaded and sees no Oracle on the network. Start it with a model, or connect it to a peer.')
      else this.setState('ready', '')
    } catch (err) {
      if (this.busy()) return
      const e = err as ApiError
      if (e.status === 401) {
        this.setState('key', 'This node needs an API key: enter it under "API key".')
        this.onKeyNeeded()
      } else if (e.status === 503) {
        this.setState('no-model', `No model yet: ${e.message}`)
      } else {
        this.setState('connecting', 'Connecting to the node…')
      }
    }
  }

  private busy (): boolean { return this.abort !== null }

  private setState (state: ChatState, text: string): void {
    this.state = state
    this.stateText = text
    const el = $('state')
    el.textContent = text
    el.dataset.state = state
    el.hidden = text === ''
    $<HTMLButtonElement>('send').disabled = state === 'connecting' || state === 'key' || state === 'no-model' || this.busy()
  }

  // -- wiring ------------------------------------------------------------------------------

  private wire (): void {
    const prompt = $<HTMLTextAreaElement>('prompt')
    $('composer').addEventListener('submit', (e) => { e.preventDefault(); void this.send() })
    prompt.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); void this.send() }
    })
    prompt.addEventListener('input', () => this.grow())
    document.addEventListener('keydown', (e) => { if (e.key === 'Escape' && this.busy()) this.stop() })
    $('stop').addEventListener('click', () => this.stop())
    $('new-chat').addEventListener('click', () => {
      this.stop()
      this.current = newConversation(this.model())
      this.renderList()
      this.renderMessages()
      prompt.focus()
    })
    $<HTMLSelectElement>('model').addEventListener('change', (e) => this.store.set('model', (e.target as HTMLSelectElement).value))
  }

  private grow (): void {
    const prompt = $<HTMLTextAreaElement>('prompt')
    prompt.style.height = 'auto'
    prompt.style.height = `${Math.min(prompt.scrollHeight, 240)}px`
  }

  private model (): string { return $<HTMLSelectElement>('model').value }

  // -- sending, stopping, regenerating -------------------------------------------------------

  async send (): Promise<void> {
    const prompt = $<HTMLTextAreaElement>('prompt')
    const text = prompt.value.trim()
    if (text === '' || this.busy() || $<HTMLButtonElement>('send').disabled) return
    prompt.value = ''
    this.grow()
    if (this.current.messages.length === 0) this.current.title = titleOf(text)
    this.current.messages.push({ role: 'user', content: text })
    await this.answer()
  }

  async regenerate (): Promise<void> {
    if (this.busy()) return
    const last = this.current.messages[this.current.messages.length - 1]
    if (last?.role === 'assistant') this.current.messages.pop()
    await this.answer()
  }

  stop (): void { this.abort?.abort() }

  private async answer (): Promise<void> {
    const conv = this.current
    const history = conv.messages.filter(m => m.error === undefined || m.content !== '').map(m => ({ role: m.role, content: m.content }))
    const reply: Message = { role: 'assistant', content: '' }
    conv.messages.push(reply)
    conv.model = this.model()
    conv.updated = Date.now()
    if (!this.list.includes(conv)) this.list.unshift(conv)
    this.save()
    this.renderList()
    this.renderMessages()
    const abort = new AbortController()
    this.abort = abort
    this.streaming(true)
    this.setState('answering', 'Waiting for the model…')
    try {
      for await (const e of this.api.chat(conv.model, history, abort.signal)) {
        if (e.kind === 'queued') {
          this.setState('queued', `Queued at an Oracle on the network: place ${e.place}${e.etaS !== null ? `, about ${Math.ceil(e.etaS)} s` : ''}.`)
        } else if (e.kind === 'delta') {
          if (this.state !== 'answering' || this.stateText !== 'Answering…') this.setState('answering', 'Answering…')
          reply.content += e.text
          this.paint(reply)
        } else if (e.kind === 'error') {
          reply.error = e.message
        }
      }
      if (abort.signal.aborted) reply.stopped = true
    } catch (err) {
      reply.error = (err as Error).message
      if ((err as ApiError).status === 401) this.onKeyNeeded()
    } finally {
      this.abort = null
      this.streaming(false)
      conv.updated = Date.now()
      this.save()
      this.renderMessages()
      this.setState('ready', '')
      // the answer is not read out while it streams (aria-live off): say when it is there
      $('announce').textContent = reply.error !== undefined ? `The answer failed: ${reply.error}` : reply.stopped === true ? 'Answer stopped.' : 'Answer complete.'
      void this.refreshModels()
    }
  }

  private streaming (on: boolean): void {
    $('send').hidden = on
    $('stop').hidden = !on
    $('messages').setAttribute('aria-busy', String(on))
    if (!on) $<HTMLTextAreaElement>('prompt').focus()
  }

  private save (): void { this.store.save(this.list) }

  // -- rendering ---------------------------------------------------------------------------

  /** Repaint the streaming message at most once a frame. */
  private paint (msg: Message): void {
    if (this.rendering !== 0) return
    this.rendering = requestAnimationFrame(() => {
      this.rendering = 0
      const items = $('messages').children
      const li = items[items.length - 1] as HTMLElement | undefined
      const body = li?.querySelector('.body')
      if (body !== null && body !== undefined) {
        body.innerHTML = renderMarkdown(msg.content)
        this.decorateCode(body as HTMLElement)
      }
      this.scroll()
    })
  }

  private scroll (): void {
    const main = $('messages')
    main.scrollTop = main.scrollHeight
  }

  renderMessages (): void {
    cancelAnimationFrame(this.rendering)
    this.rendering = 0
    const ol = $('messages')
    const msgs = this.current.messages
    $('empty').hidden = msgs.length > 0
    ol.replaceChildren(...msgs.map((m, i) => this.messageItem(m, i === msgs.length - 1)))
    this.scroll()
  }

  private messageItem (m: Message, last: boolean): HTMLElement {
    const li = document.createElement('li')
    li.className = `msg ${m.role}`
    const who = document.createElement('span')
    who.className = 'who sr'
    who.textContent = m.role === 'user' ? 'You said:' : 'The model said:'
    const body = document.createElement('div')
    body.className = 'body'
    if (m.role === 'user') {
      body.textContent = m.content
    } else {
      body.innerHTML = renderMarkdown(m.content)
      this.decorateCode(body)
    }
    li.append(who, body)
    if (m.role === 'assistant' && (m.error !== undefined || m.stopped === true)) {
      const note = document.createElement('p')
      note.className = m.error !== undefined ? 'note error' : 'note'
      note.textContent = m.error !== undefined ? `Error: ${m.error}` : 'Stopped.'
      li.append(note)
    }
    if (m.role === 'assistant' && !(last && this.busy())) {
      const actions = document.createElement('div')
      actions.className = 'actions'
      actions.append(this.copyButton(() => m.content, 'Copy answer'))
      if (last) {
        const again = document.createElement('button')
        again.type = 'button'
        again.className = 'regenerate'
        again.textContent = 'Regenerate'
        again.addEventListener('click', () => { void this.regenerate() })
        actions.append(again)
      }
      li.append(actions)
    }
    return li
  }

  private copyButton (text: () => string, label: string): HTMLButtonElement {
    const b = document.createElement('button')
    b.type = 'button'
    b.className = 'copy'
    b.textContent = 'Copy'
    b.setAttribute('aria-label', label)
    b.addEventListener('click', () => {
      void copyText(text()).then((ok) => {
        b.textContent = ok ? 'Copied' : 'Copy failed'
        setTimeout(() => { b.textContent = 'Copy' }, 1500)
      })
    })
    return b
  }

  /** A copy button on each code block (added as DOM nodes, after sanitising). */
  private decorateCode (body: HTMLElement): void {
    for (const pre of Array.from(body.querySelectorAll('pre'))) {
      const wrap = document.createElement('div')
      wrap.className = 'code'
      pre.replaceWith(wrap)
      pre.tabIndex = 0
      wrap.append(this.copyButton(() => pre.textContent ?? '', 'Copy code'), pre)
    }
  }

  renderList (): void {
    const ul = $('chat-list')
    ul.replaceChildren(...this.list.map((c) => {
      const li = document.createElement('li')
      const open = document.createElement('button')
      open.type = 'button'
      open.className = 'open'
      open.textContent = c.title
      if (c === this.current) open.setAttribute('aria-current', 'true')
      open.addEventListener('click', () => {
        if (this.busy()) this.stop()
        this.current = c
        this.renderList()
        this.renderMessages()
        document.body.classList.remove('chats-open')
      })
      const del = document.createElement('button')
      del.type = 'button'
      del.className = 'delete icon'
      del.textContent = '×'
      del.setAttribute('aria-label', `Delete "${c.title}"`)
      del.addEventListener('click', () => {
        if (c === this.current) { this.stop(); this.current = newConversation(this.model()) }
        this.list = this.list.filter(x => x !== c)
        this.save()
        this.renderList()
        this.renderMessages()
      })
      li.append(open, del)
      return li
    }))
  }
}

async function copyText (text: string): Promise<boolean> {
  try {
    await navigator.clipboard.writeText(text)
    return true
  } catch {
    const area = document.createElement('textarea')
    area.value = text
    document.body.append(area)
    area.select()
    const ok = document.execCommand('copy')
    area.remove()
    return ok
  }
}
