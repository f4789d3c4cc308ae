// Every call to the admin API goes through here. The session cookie rides
// along (same origin); a change also carries X-Veto-CSRF, which the server
// requires of cookie-authenticated changes so that no other site can make
// one in an operator's name. A 401 means the session ended: back to login.

let unauthorized = () => {};

export function onUnauthorized(f) {
  unauthorized = f;
}

export class ApiError extends Error {
  constructor(status, reason) {
    super(reason);
    this.status = status;
  }
}

export async function api(path, { method = 'GET', body } = {}) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET') headers['X-Veto-CSRF'] = '1';
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'same-origin',
    cache: 'no-store',
  });
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  if (res.status === 401 && !path.startsWith('/v1/login') && !path.startsWith('/v1/whoami')) {
    unauthorized();
  }
  if (!res.ok) throw new ApiError(res.status, (data && data.reason) || `${res.status} ${res.statusText}`);
  return data;
}

/** A query string from the non-empty values of an object. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== '' && v != null) q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
}
