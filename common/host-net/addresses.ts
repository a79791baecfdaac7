// Addresses, MTU and up/down of an interface such as the TUN, over iproute2. Idempotent
// (`replace`, deletes that tolerate "already gone") so the agent can re-apply its state.
import { CommandError } from '../exec.ts';
import { checkDev, ip, isAlreadyGone, type NetnsOption, parseJson } from './iproute2.ts';

/** Sets address (replace), MTU and up on an interface such as the TUN. */
export async function configureInterface(
  opts: { dev: string; address?: string | string[]; mtu?: number; up?: boolean } & NetnsOption,
): Promise<void> {
  checkDev(opts.dev);
  const addresses = opts.address === undefined ? [] : Array.isArray(opts.address) ? opts.address : [opts.address];
  for (const a of addresses) await ip(['addr', 'replace', a, 'dev', opts.dev], opts);
  if (opts.mtu !== undefined) await ip(['link', 'set', 'dev', opts.dev, 'mtu', String(opts.mtu)], opts);
  if (opts.up ?? true) await ip(['link', 'set', 'dev', opts.dev, 'up'], opts);
}

/** Removes an address from an interface; no error when it is not there. */
export async function removeAddress(opts: { dev: string; address: string } & NetnsOption): Promise<void> {
  checkDev(opts.dev);
  try {
    await ip(['addr', 'del', opts.address, 'dev', opts.dev], opts);
  } catch (err) {
    if (
      !(
        err instanceof CommandError &&
        (isAlreadyGone(err.stderr) || /Cannot assign|address not found/.test(err.stderr))
      )
    )
      throw err;
  }
}

/**
 * The MTU of the interface that has `address` (the node's own IP): the underlay MTU the
 * tunnel's datagrams leave with. undefined when no interface has that address.
 */
export async function mtuOfInterfaceWith(address: string, opts: NetnsOption = {}): Promise<number | undefined> {
  const links = parseJson<{ mtu?: number; addr_info?: Array<{ local?: string }> }>(
    await ip(['-j', 'addr', 'show'], opts),
  );
  return links.find((l) => l.addr_info?.some((a) => a.local === address))?.mtu;
}
