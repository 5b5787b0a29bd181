// mtls-gateway console: the only script. It runs a form's "check" button in place (the
// PKCS#12 tester): the answer replaces the element named by data-inplace, and the chosen file
// stays selected for "Save". Without this script the same button posts the whole form and the
// page comes back with the verdict. Same origin only (the page's Content-Security-Policy).
"use strict";
document.addEventListener("click", async (ev) => {
  const button = ev.target.closest("button[data-inplace]");
  if (!button || !button.form) return;
  const out = document.getElementById(button.dataset.inplace);
  if (!out) return;
  ev.preventDefault();
  if (!button.form.reportValidity()) return;
  const data = new FormData(button.form);
  data.set(button.name, button.value);
  out.setAttribute("aria-busy", "true");
  out.textContent = "Checking\u2026";
  try {
    // button.formAction, not form.action: a control named "action" (the buttons' name=action)
    // shadows the form's action property.
    const resp = await fetch(button.formAction, {
      method: "POST",
      body: data,
      credentials: "same-origin",
      headers: { "X-Console-Fragment": "1" },
    });
    out.innerHTML = await resp.text();
  } catch (e) {
    out.textContent = "The check could not be run (" + e + "); try again.";
  }
  out.removeAttribute("aria-busy");
  out.focus();
});
