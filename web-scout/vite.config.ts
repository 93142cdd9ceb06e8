import { dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vitest/config'

const here = dirname(fileURLToPath(import.meta.url))

// Two pages from one build: the scout page (index.html, served by the node at /scout/) and the
// web app (app.html, served at /; app/shard/api/webapp_routes.py). Both load their assets from
// /scout/assets/, with COOP/COEP so that wllama can use threads; `npm run dev` sets the same headers.
const isolation = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp'
}

export default defineConfig({
  base: '/scout/',
  build: {
    target: 'es2022',
    outDir: 'dist',
    assetsInlineLimit: 0,
    chunkSizeWarningLimit: 8000,
    rollupOptions: { input: { scout: resolve(here, 'index.html'), app: resolve(here, 'app.html') } }
  },
  worker: { format: 'es' },
  server: { headers: isolation },
  preview: { headers: isolation },
  test: { include: ['test/**/*.test.ts'], testTimeout: 20_000 }
})
