export function StateBadge({ state }: { state: string }) {
  return <span className={`badge state-${state}`}>{state}</span>;
}

export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
