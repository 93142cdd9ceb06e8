import { defineConfig } from 'vite'

// Served by the node at /scout/ (app/shard/api/scout_routes.py), with COOP/COEP so that wllama
// can use threads; `npm run dev` sets the same headers.
const isolation = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp'
}

export default defineConfig({
  base: '/scout/',
  build: { target: 'es2022', outDir: 'dist', assetsInlineLimit: 0, chunkSizeWarningLimit: 8000 },
  worker: { format: 'es' },
  server: { headers: isolation },
  preview: { headers: isolation },
  test: { include: ['test/**/*.test.ts'], testTimeout: 20_000 }
})
