// SmartProxy web admin: small progressive enhancement. Every page works
// without this script.
"use strict";

// Elements with data-live="URL" are refreshed in place every few seconds
// with the server-rendered (and server-escaped) HTML that URL answers.
function refresh(el) {
  fetch(el.dataset.live, {credentials: "same-origin", headers: {"Accept": "text/html"}})
    .then(function (r) {
      if (r.status === 401) { window.location.assign("/admin/login"); return null; }
      return r.ok ? r.text() : null;
    })
    .then(function (html) { if (html !== null) { el.innerHTML = html; } })
    .catch(function () {});
}

document.querySelectorAll("[data-live]").forEach(function (el) {
  window.setInterval(function () { if (!document.hidden) { refresh(el); } }, 2000);
});

// Forms with data-confirm="question" ask before they are sent.
document.querySelectorAll("form[data-confirm]").forEach(function (f) {
  f.addEventListener("submit", function (e) {
    if (!window.confirm(f.dataset.confirm)) { e.preventDefault(); }
  });
});
