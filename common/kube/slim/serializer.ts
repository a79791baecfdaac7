// What client-node's ListWatch (dist/cache.js) uses of its object serializer: turning a
// label or field selector, a string, into a query parameter. The real serializer loads
// every generated model for it (agent/kube-client.ts); a string serializes to itself.
export const ObjectSerializer = {
  serialize(data: unknown, _type: string): unknown {
    return data;
  },
};
