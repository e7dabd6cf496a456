// runwatch dashboard: live progress (server-sent events), confirmations, the submit page's wait.
// No framework and no inline script: the Content-Security-Policy allows only this file.
"use strict";

const FINAL = new Set(["succeeded", "rejected", "failed", "cancelled", "needs_attention"]);

function updateJob(el, job) {
  const state = el.querySelector('[data-field="state"]');
  if (state && state.textContent !== job.state.replace(/_/g, " ")) {
    state.textContent = job.state.replace(/_/g, " ");
    state.className = state.className.replace(/state-\S+/, "state-" + job.state);
  }
  const bar = el.querySelector('[data-field="progress"]');
  if (bar) {
    if (FINAL.has(job.state)) {
      bar.hidden = true;
    } else if (job.progress !== null && job.progress !== undefined) {
      bar.value = Math.round(job.progress * 100);
      bar.textContent = Math.round(job.progress * 100) + " %";
      bar.hidden = false;
    } else if (job.state !== "running") {
      bar.hidden = true;
    }
  }
}

function follow(main) {
  const source = new EventSource(main.dataset.live);
  const page = document.querySelector(".job[data-state]");
  source.onmessage = (message) => {
    const data = JSON.parse(message.data);
    for (const [id, job] of Object.entries(data.jobs)) {
      if (page && page.dataset.job === id && page.dataset.state !== job.state) {
        // A job's page shows its new state's buttons, error and outputs: read it again.
        source.close();
        window.location.reload();
        return;
      }
      document.querySelectorAll('[data-job="' + CSS.escape(id) + '"]').forEach((el) => updateJob(el, job));
    }
    const fresh = document.getElementById("fresh");
    if (fresh && data.fresh) fresh.hidden = false;
  };
  window.addEventListener("pagehide", () => source.close());
}

function confirmations() {
  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) {
        event.preventDefault();
        return;
      }
      form.querySelector('input[name="confirmed"]').value = "1";
    });
  });
}

function waitForJob(el) {
  const look = () => {
    fetch(el.dataset.wait, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then((answer) => (answer.ok ? answer.json() : null))
      .then((found) => {
        if (found && found.url) window.location.assign(found.url);
        else window.setTimeout(look, 1000);
      })
      .catch(() => window.setTimeout(look, 3000));
  };
  window.setTimeout(look, 500);
}

document.addEventListener("DOMContentLoaded", () => {
  const main = document.getElementById("main");
  if (main && main.dataset.live) follow(main);
  confirmations();
  const waiting = document.getElementById("waiting");
  if (waiting) waitForJob(waiting);
});
