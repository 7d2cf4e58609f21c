// Hooklane portal: small progressive enhancements; every page works without them.
"use strict";

// Pages that answer a form post (a new secret, a test outcome) take their GET address,
// so reloading shows the page again instead of posting the form a second time.
if (document.body.dataset.canonical) {
  history.replaceState(null, "", document.body.dataset.canonical);
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source || !navigator.clipboard) return;
  navigator.clipboard.writeText(source.textContent.trim()).then(() => {
    button.textContent = "Copied";
  });
});

document.addEventListener("submit", (event) => {
  const question = event.target.dataset.confirm;
  if (question && !window.confirm(question)) event.preventDefault();
});

document.addEventListener("change", (event) => {
  if (event.target.matches("select[data-autosubmit]")) event.target.form.requestSubmit();
});
