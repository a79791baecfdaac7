// How the agent's process is started, wherever it runs (the entry shim re-executes itself
// with these; benchmarks that measure agent code outside the agent start their process
// the same way). Plain JavaScript: the entry shim loads it before it checks the Node version.

// The agent forwards packets through short-lived Buffers. V8 13.6 (Node 24) raised the
// young-generation cap from 8 to 32 MB, and since then V8 reclaims such Buffers by
// Mark-Compact instead of Scavenge (nodejs/node#61967): measured in the lab, tunnel
// throughput halved (1.54 → 0.80 Gbit/s) and forwarder CPU per GB doubled. The agent runs
// with the old cap.
// Without Sparkplug, V8's baseline compiler: it compiles every function that has run a
// little into machine code kept beside its bytecode, which in an agent is most of what runs
// now and then (libp2p's connections, keepalives, the control plane), while the per-packet
// code is hot enough for Maglev and Turbofan either way. An idle agent alone held 3 MiB
// less V8 heap (16.9 → 14.0 MiB used), the default lab's agents 2.8 and 3.6 MiB less RSS
// (medians of two series of five labs against `--sparkplug`). Through them, ping p50, their
// CPU per ping and TCP one stream over UDP direct and hole-punched stayed within the
// rounds' spread, either way round from series to series (`node bench/agent-flags.ts`,
// which compares `--sparkplug`; figures in docs/decisions.md).
export const AGENT_V8_FLAGS = ['--scavenger-max-new-space-capacity-mb=8', '--no-sparkplug'];

/** A V8 flag's name, whatever its spelling: `--no-x`, `--x=v` and `--x_y` name x and x-y. */
function flagName(arg) {
  return arg.replace(/^--/, '').split('=')[0].replaceAll('_', '-').replace(/^no-/, '');
}

// glibc's malloc, left to itself, raises its mmap and trim thresholds each time it frees a
// large block (up to 32 and 64 MB), so what start-up allocated stays in its heaps for good:
// an idle agent held 31 MB of heaps with 9 MB in use. Setting the thresholds fixes them
// (mallopt(3)); glibc reads them once, when the process starts. Blocks under 2 MiB come from
// the heaps (the TUN reader's 1 MiB batches among them: mapping each one on its own, which
// a 128 KiB threshold does, cost 50 % more CPU per GB through the TUN), and a heap gives
// back a free top above 2 MiB. Idle agent 122 → 116 MiB RSS, TUN CPU per GB within noise.
// Every thread that allocates (V8's workers, libuv's pool, the TUN and UDP threads) gets an
// arena of its own by default, each keeping its own free memory: one arena for all holds
// about 1.5 MiB less in a lab agent than two, and two about 1 MiB less than glibc's
// default; the threads allocate per batch, not per packet (and on two CPUs the agent reads
// its TUN and UDP socket on the event loop, agent/readers.ts), and the UDP path's
// throughput and CPU per GB stayed within their run-to-run spread. Figures: "Memory, idle
// and with many Nodes" in docs/decisions.md.
export const AGENT_MALLOC_ENV = {
  MALLOC_MMAP_THRESHOLD_: '2097152',
  MALLOC_TRIM_THRESHOLD_: '2097152',
  MALLOC_ARENA_MAX: '1',
};

/** The flags of AGENT_V8_FLAGS that `execArgv` does not set itself (an operator's own value wins, `--sparkplug` too). */
export function missingAgentFlags(execArgv) {
  const own = new Set(execArgv.filter((a) => a.startsWith('--')).map(flagName));
  return AGENT_V8_FLAGS.filter((flag) => !own.has(flagName(flag)));
}

/** The variables of AGENT_MALLOC_ENV that `env` does not set itself (an operator's own value wins). */
export function missingAgentEnv(env) {
  return Object.fromEntries(Object.entries(AGENT_MALLOC_ENV).filter(([name]) => env[name] === undefined));
}
