import { defineConfig } from 'vitest/config';

// Three layers that run alone (`npm run test:unit` ...) or together (`npm test`).
// The privileged layers refuse to run without root instead of skipping silently.
const report = process.env.EDGEMESH_TEST_REPORT;

export default defineConfig({
  test: {
    // CI also writes a JSON report, from which .ci/run prints a plain "N passed, N failed".
    reporters: report ? ['default', 'json'] : ['default'],
    ...(report ? { outputFile: { json: report } } : {}),
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          environment: 'node',
          // The layers run one after the other: namespaces, agents and iperf3 of the
          // integration and e2e layers would otherwise compete for two cores.
          sequence: { groupOrder: 0 },
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          globalSetup: ['test/support/require-root.ts'],
          sequence: { groupOrder: 1 },
          // Namespaces, TUN devices and iperf3 share two cores: one file at a time.
          fileParallelism: false,
          testTimeout: 120_000,
          hookTimeout: 60_000,
        },
      },
      {
        test: {
          name: 'e2e',
          include: ['test/e2e/**/*.test.ts'],
          globalSetup: ['test/support/require-root.ts'],
          sequence: { groupOrder: 2 },
          fileParallelism: false,
          testTimeout: 300_000,
          hookTimeout: 180_000,
        },
      },
    ],
  },
});
