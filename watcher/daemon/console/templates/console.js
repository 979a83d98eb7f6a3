// The status page's live region: fetch the server-rendered fragment of this page every few
// seconds and swap it in. The fragment is HTML that Jinja2 escaped on the server; it is
// parsed into an inert document (no script in it runs) and its nodes are moved into the page.
// Nothing here builds markup from data.
"use strict";
(function () {
  const region = document.getElementById("live");
  const state = document.getElementById("live-state");
  if (!region || !region.dataset.src) {
    return;
  }
  const every = Math.max(500, Number(region.dataset.every) || 2000);
  let busy = false;

  function say(text, ok) {
    if (state) {
      state.textContent = text;
      state.classList.toggle("stale", !ok);
    }
  }

  // Someone selecting text in the region (to copy an error) would lose it to a swap.
  function selecting() {
    const selection = window.getSelection();
    return selection && !selection.isCollapsed && region.contains(selection.anchorNode);
  }

  // What the reader opened stays open: <details> by id.
  function swap(fresh) {
    const open = Array.from(region.querySelectorAll("details[open][id]"), (el) => el.id);
    region.replaceChildren(...fresh.childNodes);
    for (const id of open) {
      const again = document.getElementById(id);
      if (again) {
        again.open = true;
      }
    }
  }

  async function refresh() {
    if (busy || document.hidden || selecting()) {
      return;
    }
    busy = true;
    try {
      const response = await fetch(region.dataset.src, {
        cache: "no-store",
        credentials: "same-origin",
        headers: { Accept: "text/html" },
      });
      if (!response.ok) {
        say("not updating (HTTP " + response.status + ")", false);
        return;
      }
      const text = await response.text();
      const parsed = new DOMParser().parseFromString(text, "text/html");
      swap(parsed.body);
      say("live · " + new Date().toLocaleTimeString(), true);
    } catch (error) {
      say("not updating (offline)", false);
    } finally {
      busy = false;
    }
  }

  say("live", true);
  window.setInterval(refresh, every);
  document.addEventListener("visibilitychange", refresh);
})();
