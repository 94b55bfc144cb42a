// Two pages, each its own bundle: the account pages under /account/ and the
// console under /console/. `accountable serve` embeds `dist/` and answers
// every path under each with its page's index.html (routes are client-side).
import { resolve } from 'node:path';
import { defineConfig } from 'vite';

export default defineConfig({
  base: '/',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    assetsDir: 'ui',
    // Nothing inlined as data: URLs, so the pages' CSP can stay strict.
    assetsInlineLimit: 0,
    rollupOptions: {
      input: {
        account: resolve(import.meta.dirname, 'account/index.html'),
        console: resolve(import.meta.dirname, 'console/index.html'),
      },
    },
  },
});
