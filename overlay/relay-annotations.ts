// The UDP relay's published port: a relay node (labelled edgemesh.io/relay=true) runs a UDP
// relay (dataplane/udp-relay.ts) on its own port and announces it here, so members know where
// to send their allocate datagrams and sealed session datagrams. The relay's IP is its public
// multiaddr's; only the port needs publishing. Parsed like the other annotations: anything but
// a port 1–65535 refuses the Node (a hostile or garbled value must not aim members' datagrams
// at port 0 or a random service).

export const RELAY_PORT_ANNOTATION = 'edgemesh.io/udp-relay-port';

/** The relay port a Node publishes: undefined when absent, an error text when invalid. */
export function parseRelayPort(text: string | undefined): { port: number | undefined } | { error: string } {
  if (text === undefined || text === '') return { port: undefined };
  if (!/^[0-9]{1,5}$/.test(text)) return { error: `${RELAY_PORT_ANNOTATION} "${text.slice(0, 32)}" is not a UDP port` };
  const port = Number(text);
  if (port < 1 || port > 65535) return { error: `${RELAY_PORT_ANNOTATION} "${text}" is not a UDP port` };
  return { port };
}

export function relayPortAnnotation(port: number | undefined): Record<string, string> {
  return port === undefined ? {} : { [RELAY_PORT_ANNOTATION]: String(port) };
}
