// CLI: `edgemesh-cni bench`.
import type { Command } from 'commander';

export function register(program: Command): void {
  program
    .command('bench')
    .description('measure pod→pod paths against the kernel, wireguard-go and nebula (needs root)')
    .option('--rounds <n>', 'interleaved rounds per scenario', '3')
    .option('--seconds <n>', 'iperf3 duration per measurement', '5')
    .option('--udp-rate <rate>', 'offered UDP rate', '500M')
    .option('--pings <n>', 'pings per RTT measurement', '200')
    .option('--out <dir>', 'results folder (default bench/results/<date>)')
    .option('--no-lab', 'only the comparison bed (kernel, wireguard-go, nebula)')
    .option('--no-components', 'skip the component benchmarks (LPM, IPAM, CNI, ...)')
    .action(
      async (o: {
        rounds: string;
        seconds: string;
        udpRate: string;
        pings: string;
        out?: string;
        components: boolean;
        lab: boolean;
      }) => {
        const { runBench } = await import('./run.ts');
        await runBench({
          rounds: Number(o.rounds),
          seconds: Number(o.seconds),
          udpRate: o.udpRate,
          pings: Number(o.pings),
          components: o.components,
          lab: o.lab,
          ...(o.out ? { outDir: o.out } : {}),
        });
      },
    );
}
