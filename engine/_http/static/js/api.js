// The JSON API, with the bearer token kept in sessionStorage (gone when the tab closes).

const BASE = "/api/durable";
const TOKEN_KEY = "perdura.token";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

async function request(method, path, { body, query } = {}) {
  const url = new URL(BASE + path, window.location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
  }
  const headers = { Accept: "application/json" };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    throw new ApiError(0, "unreachable", `the server did not answer (${error.message})`);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = data && data.error ? data.error : { code: "http_" + response.status, message: text };
    throw new ApiError(response.status, error.code, error.message);
  }
  return { data, text };
}

const id = (value) => encodeURIComponent(value);

export const api = {
  list: (query) => request("GET", "/executions", { query }).then((r) => r.data),
  get: (ident) => request("GET", `/executions/${id(ident)}`).then((r) => r.data),
  history: (ident, query) =>
    request("GET", `/executions/${id(ident)}/history`, { query }).then((r) => r.data),
  timeline: (ident) => request("GET", `/executions/${id(ident)}/timeline`).then((r) => r.data),
  exportText: (ident) => request("GET", `/executions/${id(ident)}/export`).then((r) => r.text),
  cancel: (ident, reason) =>
    request("POST", `/executions/${id(ident)}/cancel`, { body: { reason } }).then((r) => r.data),
  terminate: (ident, reason) =>
    request("POST", `/executions/${id(ident)}/terminate`, { body: { reason } }).then((r) => r.data),
  recover: (ident, reason) =>
    request("POST", `/executions/${id(ident)}/recover`, { body: { reason } }).then((r) => r.data),
  reset: (ident, toEventId, reason) =>
    request("POST", `/executions/${id(ident)}/reset`, {
      body: { to_event_id: toEventId, reason },
    }).then((r) => r.data),
  signal: (ident, name, args) =>
    request("POST", `/executions/${id(ident)}/signals/${id(name)}`, { body: { args } })
      .then((r) => r.data),
};
