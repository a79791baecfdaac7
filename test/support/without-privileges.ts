// Runs a command as root with every capability gone (empty bounding, inheritable and ambient
// sets), the way a container without --privileged runs it. Tests use this instead of another
// user (`nobody`): another user cannot read a checkout whose parent directory is 0700 (e.g.
// one cloned under /root), while root without capabilities still owns the files it reads
// and is refused everything that needs CAP_NET_ADMIN / CAP_SYS_ADMIN.
export function withoutPrivileges(argv: readonly string[]): [string, string[]] {
  return ['setpriv', ['--bounding-set=-all', '--inh-caps=-all', '--ambient-caps=-all', ...argv]];
}
