"use strict";
// Exchanges an operator token for a session cookie, then opens the dashboard.
document.getElementById("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = document.getElementById("login-error");
  const button = document.getElementById("login-button");
  error.textContent = "";
  button.disabled = true;
  try {
    const response = await fetch("/ui/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      credentials: "same-origin",
      body: JSON.stringify({ token: document.getElementById("token").value }),
    });
    if (response.ok) {
      window.location.assign("/ui");
      return;
    }
    const body = await response.json().catch(() => ({}));
    error.textContent = response.status === 401
      ? "That token is unknown, revoked or mistyped."
      : (body.message || `Sign-in failed (${response.status}).`);
  } catch (failure) {
    error.textContent = `The operations API is unreachable: ${failure.message}`;
  } finally {
    button.disabled = false;
  }
});
