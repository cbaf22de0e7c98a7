// mwl-bridge console: the dashboard's polling, confirmations, a keyboard shortcut.
// Plain JavaScript, no build step, no external code.
"use strict";

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

function lookup(data, path) {
  return path.split(".").reduce((v, k) => (v == null ? v : v[k]), data);
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

function renderErrors(rows) {
  const body = document.querySelector("#last-errors tbody");
  if (!body) return;
  body.replaceChildren();
  if (!rows.length) {
    const tr = body.insertRow();
    const td = tr.insertCell();
    td.colSpan = 4;
    td.textContent = "No rejected messages.";
    return;
  }
  for (const e of rows) {
    const tr = body.insertRow();
    const a = document.createElement("a");
    a.href = "/messages/" + encodeURIComponent(e.id);
    a.textContent = (e.received_at || "").slice(0, 19).replace("T", " ");
    tr.insertCell().append(a);
    tr.insertCell().textContent = e.message_type || "not HL7";
    tr.insertCell().textContent = e.ack_code || "-";
    tr.insertCell().textContent = e.error;
  }
}

async function pollDashboard() {
  const box = document.getElementById("dashboard");
  if (!box) return;
  try {
    const res = await fetch("/api/dashboard", {credentials: "same-origin",
                                               headers: {"Accept": "application/json"}});
    if (res.status === 401) { window.location.assign("/login"); return; }
    if (!res.ok) return;
    const data = await res.json();
    for (const el of document.querySelectorAll("[data-k]")) {
      const v = lookup(data, el.dataset.k);
      if (v !== undefined && v !== null) setText(el, String(v));
    }
    renderErrors(data.last_errors || []);
  } catch (err) {
    // the daemon is restarting: try again on the next tick
  }
}

document.addEventListener("DOMContentLoaded", () => {
  if (document.getElementById("dashboard")) {
    setInterval(pollDashboard, 5000);
  }
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (ev) => {
      if (!window.confirm(form.dataset.confirm)) ev.preventDefault();
    });
  }
  // "/" jumps to the first search or message box, as in many consoles.
  document.addEventListener("keydown", (ev) => {
    const tag = (ev.target && ev.target.tagName) || "";
    if (ev.key === "/" && !/INPUT|TEXTAREA|SELECT/.test(tag)) {
      const field = document.querySelector("#worklist-search input, #message");
      if (field) { ev.preventDefault(); field.focus(); }
    }
  });
  window.mwlCsrf = csrfToken;
});
