// Numbers with units and times relative to now, the way an operator reads them.

export function bytes(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return '—';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  let v = n;
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return `${i === 0 ? v : v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

export const kib = (n) => bytes(n * 1024);
export const mib = (n) => bytes(n * 1024 * 1024);

export function percent(part, whole) {
  if (!whole) return '—';
  return `${Math.round((100 * part) / whole)} %`;
}

// cpu_permille: 1000 is one core fully busy.
export const cpu = (permille) => (permille === undefined ? '—' : `${(permille / 10).toFixed(1)} %`);

export function temp(deci) {
  return deci === null || deci === undefined ? '—' : `${(deci / 10).toFixed(1)} °C`;
}

export function duration(seconds) {
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
  return `${Math.floor(seconds / 86400)} d ${Math.floor((seconds % 86400) / 3600)} h`;
}

export function ago(unix) {
  if (!unix) return 'never';
  const s = Math.round(Date.now() / 1000 - unix);
  if (s < 10) return 'just now';
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export function clock(unix) {
  return new Date(unix * 1000).toLocaleString([], { hour: '2-digit', minute: '2-digit', month: 'short', day: 'numeric' });
}

export function shortDigest(digest) {
  return digest ? digest.replace('sha256:', '').slice(0, 12) : '—';
}

// Readable words for the API's enum values (`rolled_back`, `Running`).
export function words(text) {
  return String(text).replace(/_/g, ' ').replace(/([a-z])([A-Z])/g, '$1 $2').toLowerCase();
}
