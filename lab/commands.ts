// CLI commands contributed by lab/ (registered by bin/cli.ts).
import type { Command } from 'commander';

export function register(_program: Command): void {}
