// The comparison bed as one unit: kernel, wireguard-go and nebula between the same pair
// of namespaces.
import type { Bed } from '../network.ts';
import { startNebula } from './nebula.ts';
import { createPair, kernelScenario } from './pair.ts';
import { startWireguardGo } from './wireguard-go.ts';

export async function comparisonBed(prefix: string): Promise<Bed> {
  const pair = await createPair(prefix);
  const stops: Array<() => Promise<void>> = [];
  const destroy = async () => {
    for (const stop of stops.reverse()) await stop().catch(() => {});
    await pair.destroy();
  };
  try {
    const wg = await startWireguardGo(pair);
    stops.push(wg.stop);
    const nebula = await startNebula(pair);
    stops.push(nebula.stop);
    return { name: 'comparison', scenarios: [kernelScenario(pair), wg.scenario, nebula.scenario], destroy };
  } catch (err) {
    await destroy();
    throw err;
  }
}
