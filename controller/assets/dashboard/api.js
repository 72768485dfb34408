// The JSON API from the browser. The session cookie authenticates; the extra header marks
// requests as the dashboard's own (the server refuses cookie writes without it). A 401
// sends the operator back to the login page.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let onUnauthorized = () => {};
export function setUnauthorizedHandler(handler) { onUnauthorized = handler; }

async function errorFrom(response) {
  let code = 'http_' + response.status;
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error) { code = body.error.code; message = body.error.message; }
  } catch (_) { /* not JSON: keep the status line */ }
  return new ApiError(response.status, code, message);
}

export async function request(path, { method = 'GET', body } = {}) {
  let response;
  try {
    response = await fetch(path, {
      method,
      credentials: 'same-origin',
      headers: { 'x-coracle-dashboard': '1', ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
  } catch (err) {
    throw new ApiError(0, 'network', 'Cannot reach the controller: ' + err.message);
  }
  if (response.status === 401 && !path.startsWith('/dashboard/login')) {
    onUnauthorized();
  }
  if (!response.ok) throw await errorFrom(response);
  if (response.status === 204) return null;
  return response.json();
}

export const api = {
  get: (path) => request('/api/v1' + path),
  post: (path, body) => request('/api/v1' + path, { method: 'POST', body: body ?? {} }),
  patch: (path, body) => request('/api/v1' + path, { method: 'PATCH', body: body ?? {} }),
};
