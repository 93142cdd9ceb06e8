// The Shard web app (served by the node at /): chat, the network sidebar, and the tab's scout.
import './app.css'
import { Api } from './api'
import { Chat } from './chat'
import { TabScout } from './scouting'
import { Sidebar } from './sidebar'
import { Store } from './store'

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => document.getElementById(id) as T
const store = new Store(localStorage)
const api = new Api(() => store.get('api_key'))

// -- theme: the system's unless the user picked one ---------------------------------------------
const dark = matchMedia('(prefers-color-scheme: dark)')
function effectiveTheme (): 'light' | 'dark' {
  const t = document.documentElement.dataset.theme
  return t === 'light' || t === 'dark' ? t : (dark.matches ? 'dark' : 'light')
}
function showTheme (): void {
  const next = effectiveTheme() === 'dark' ? 'light' : 'dark'
  $('theme').setAttribute('aria-label', `Switch to ${next} theme`)
  $('theme-icon').textContent = next === 'dark' ? '☾' : '☀'
}
$('theme').addEventListener('click', () => {
  const next = effectiveTheme() === 'dark' ? 'light' : 'dark'
  document.documentElement.dataset.theme = next
  store.set('theme', next)
  showTheme()
})
dark.addEventListener('change', showTheme)
showTheme()

// -- the panels (drawers on narrow screens) -----------------------------------------------------
function drawer (button: string, cls: string, panel: string): void {
  const b = $(button)
  b.addEventListener('click', () => {
    const open = !document.body.classList.contains(cls)
    document.body.classList.remove('chats-open', 'net-open')
    document.body.classList.toggle(cls, open)
    b.setAttribute('aria-expanded', String(open))
    if (open) ($(panel).querySelector('button, summary, input, select') as HTMLElement | null)?.focus()
  })
}
drawer('chats-toggle', 'chats-open', 'chats')
drawer('net-toggle', 'net-open', 'network')
document.addEventListener('keydown', (e) => {
  if (e.key === 'Escape' && (document.body.classList.contains('chats-open') || document.body.classList.contains('net-open'))) {
    document.body.classList.remove('chats-open', 'net-open')
    for (const id of ['chats-toggle', 'net-toggle']) $(id).setAttribute('aria-expanded', 'false')
  }
})

// -- chat, sidebar, scout ---------------------------------------------------------------------
const keyBox = document.querySelector('.keybox') as HTMLDetailsElement
const chat = new Chat(api, store, () => { keyBox.open = true })
const sidebar = new Sidebar(api)
const scout = new TabScout(store, () => store.get('api_key'), () => {
  sidebar.scout = scout.state
  sidebar.tabPeers = scout.peers()
  sidebar.scoutNote = scout.reason()
  sidebar.renderScout()
})

const keyInput = $<HTMLInputElement>('api-key')
keyInput.value = store.get('api_key') ?? ''
$('key-form').addEventListener('submit', (e) => {
  e.preventDefault()
  store.set('api_key', keyInput.value.trim())
  void chat.refreshModels()
  void sidebar.refresh()
})

const contribute = $<HTMLInputElement>('contribute')
const pauseHidden = $<HTMLInputElement>('pause-hidden')
contribute.checked = scout.contribute
pauseHidden.checked = scout.pauseHidden
contribute.addEventListener('change', () => scout.setContribute(contribute.checked))
pauseHidden.addEventListener('change', () => scout.setPauseHidden(pauseHidden.checked))

// For tests and the curious: the page's state (no prompt text in it).
;(window as any).shardApp = { chat, sidebar, scout }

async function poll (): Promise<void> {
  for (;;) {
    if (document.visibilityState === 'visible') {
      await Promise.all([chat.refreshModels(), sidebar.refresh()])
    }
    await new Promise(resolve => setTimeout(resolve, chat.state === 'connecting' ? 1000 : 3000))
  }
}
void poll()
scout.apply()
