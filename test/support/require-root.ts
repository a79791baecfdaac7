// Global setup of the privileged test layers (integration, e2e): they create network
// namespaces, TUN devices and iptables rules, which need root. Without root the run fails
// with a clear message rather than reporting a green run that tested nothing.
export default function requireRoot(): void {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
    throw new Error(
      'the integration and e2e layers need root (network namespaces, TUN, iptables): ' +
        'run `sudo npm test`, or `npm run test:unit` for the unprivileged layer only',
    );
  }
}
