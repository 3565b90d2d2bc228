// The single-page app: hash routes (#/ and #/executions/ID).

import { clear } from "./dom.js";
import { renderExecution } from "./execution.js";
import { renderList } from "./list.js";
import { askToken, setTokenListener, updateTokenButton } from "./ui.js";

const view = document.getElementById("view");
let cleanup = null;

function route() {
  if (cleanup) cleanup();
  cleanup = null;
  clear(view);
  const hash = window.location.hash || "#/";
  const match = hash.match(/^#\/executions\/(.+)$/);
  if (match) {
    cleanup = renderExecution(view, decodeURIComponent(match[1]));
  } else {
    const params = new URLSearchParams(hash.includes("?") ? hash.slice(hash.indexOf("?") + 1) : "");
    cleanup = renderList(view, params);
  }
}

document.getElementById("token-button").addEventListener("click", askToken);
setTokenListener(route);
window.addEventListener("hashchange", route);
updateTokenButton();
route();
