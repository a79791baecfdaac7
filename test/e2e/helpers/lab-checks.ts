// Shared checks of the lab e2e tests: what "left nothing behind" means, compared between a
// snapshot taken before the lab and one taken after it was taken down.
import { expect } from 'vitest';
import { childrenOf, type HostSnapshot, newProcessesMatching } from './host-snapshot.ts';

export function expectNothingLeft(
  before: HostSnapshot,
  after: HostSnapshot,
  marks: { prefix: string; dir: string; id: string },
): void {
  expect(
    after.netns.filter((n) => n.startsWith(marks.prefix)),
    'lab namespaces left',
  ).toEqual([]);
  // Namespaces that are not ours may come and go (other test runs): only ours must be gone,
  // and every namespace that existed before and was not ours must still exist.
  expect(before.netns.filter((n) => !after.netns.includes(n) && n.startsWith(marks.prefix))).toEqual([]);
  expect(after.links, 'root namespace links').toEqual(before.links);
  expect(after.iptables, 'root iptables').toEqual(before.iptables);
  expect(after.ip6tables, 'root ip6tables').toEqual(before.ip6tables);
  expect(after.hostPaths, "the agent's default host paths").toEqual(before.hostPaths);
  expect(newProcessesMatching(before, after, [marks.dir, marks.prefix, marks.id]), 'lab processes left').toEqual([]);
  expect(childrenOf(after), 'children of the test process').toEqual(childrenOf(before));
}
