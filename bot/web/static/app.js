// The page's live updates: one EventSource per page (server-sent events from
// /live), each message a set of regions (id -> HTML rendered by the server, every
// user's text escaped there). A region is patched block by block: its children
// carry data-key, and a child whose HTML did not change is left in place, so a
// playing video keeps playing while the step counter beside it moves on.
"use strict";

function patch(region, html) {
  const fresh = document.createElement("template");
  fresh.innerHTML = html;
  const old = new Map();
  for (const child of region.children) {
    if (child.dataset.key) old.set(child.dataset.key, child);
  }
  const next = [];
  for (const child of Array.from(fresh.content.children)) {
    const kept = old.get(child.dataset.key);
    const busy = kept && kept.contains(document.activeElement);  // the host is typing there
    next.push(kept && (busy || kept.outerHTML === child.outerHTML) ? kept : child);
  }
  next.forEach((child, index) => {
    if (region.children[index] !== child) region.insertBefore(child, region.children[index] || null);
  });
  while (region.children.length > next.length) region.lastElementChild.remove();
}

function connect() {
  const view = document.body.dataset.view;
  if (!document.querySelector("[data-live]")) return;
  const params = new URLSearchParams({ view: view });
  if (document.body.dataset.job) params.set("job", document.body.dataset.job);
  const state = document.getElementById("live-state");
  const source = new EventSource("/live?" + params.toString());
  source.addEventListener("regions", (event) => {
    const regions = JSON.parse(event.data);
    for (const [id, html] of Object.entries(regions)) {
      const region = document.getElementById(id);
      if (region) patch(region, html);
    }
  });
  source.addEventListener("open", () => { if (state) state.dataset.on = "yes"; });
  source.addEventListener("error", () => { if (state) state.dataset.on = "no"; });
  source.addEventListener("login", () => { window.location.assign("/login"); });
}

document.addEventListener("DOMContentLoaded", connect);
