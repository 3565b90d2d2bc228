// Shared page furniture: toasts, the confirmation dialog, error reports, the token.

import { getToken, setToken } from "./api.js";
import { h } from "./dom.js";

let onTokenChange = () => {};

/** What to do once the token changed (the app re-renders the current view). */
export function setTokenListener(listener) {
  onTokenChange = listener;
}

/** Show a short message at the bottom of the page. */
export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  const item = h("div", { class: `toast toast-${kind}` }, message);
  box.append(item);
  setTimeout(() => item.remove(), kind === "error" ? 8000 : 4000);
}

/**
 * Ask for confirmation (and optionally a line of text) in the page's dialog.
 * Resolves to the text entered (or "" without input), or null when dismissed.
 */
export function ask({ title, text = "", label = "", confirm = "Confirm", input = true, value = "", danger = true }) {
  const dialog = document.getElementById("dialog");
  const field = document.getElementById("dialog-input");
  const confirmButton = document.getElementById("dialog-confirm");
  document.getElementById("dialog-title").textContent = title;
  document.getElementById("dialog-text").textContent = text;
  document.getElementById("dialog-label").textContent = label;
  field.hidden = !input;
  document.getElementById("dialog-label").hidden = !input;
  field.value = value;
  confirmButton.textContent = confirm;
  confirmButton.className = danger ? "danger" : "primary";
  return new Promise((resolve) => {
    const form = document.getElementById("dialog-form");
    const close = document.getElementById("dialog-cancel");
    let settled = false;
    const finish = (result) => {
      if (settled) return;
      settled = true;
      form.removeEventListener("submit", onSubmit);
      close.removeEventListener("click", onClose);
      dialog.removeEventListener("close", onClosed);
      if (dialog.open) dialog.close();
      resolve(result);
    };
    const onSubmit = (event) => {
      event.preventDefault();
      finish(input ? field.value : "");
    };
    const onClose = () => finish(null);
    // The "close" event is dispatched after the fact: one left over from the previous
    // question must not dismiss this one, asked right after it (the dialog is open again).
    const onClosed = () => {
      if (!dialog.open) finish(null);
    };
    form.addEventListener("submit", onSubmit);
    close.addEventListener("click", onClose);
    dialog.addEventListener("close", onClosed);
    dialog.showModal();
    (input ? field : confirmButton).focus();
  });
}

/** Report an API failure; a 401 asks for the token. */
export function reportError(error, what) {
  if (error.status === 401) {
    toast(`${what}: a bearer token is required (${error.message})`, "error");
    askToken();
    return;
  }
  toast(`${what}: ${error.message}${error.code ? ` [${error.code}]` : ""}`, "error");
}

export async function askToken() {
  const token = await ask({
    title: "Bearer token",
    text: "The token this server was started with. It is kept in this tab only (sessionStorage).",
    label: "Token",
    confirm: "Save",
    value: getToken(),
    danger: false,
  });
  if (token === null) return;
  setToken(token.trim());
  updateTokenButton();
  onTokenChange();
}

export function updateTokenButton() {
  const button = document.getElementById("token-button");
  button.textContent = getToken() ? "Token ✓" : "Token";
}

