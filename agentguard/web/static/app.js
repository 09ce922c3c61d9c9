// agentguard web approvals: WebAuthn ceremonies and the countdown. No third-party code.
"use strict";

function say(text, isError) {
  const el = document.getElementById("status");
  if (el) { el.textContent = text; el.className = isError ? "error" : ""; }
}

async function postJSON(url, body) {
  const response = await fetch(url, {
    method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  });
  let data = {};
  try { data = await response.json(); } catch (e) { data = {error: "bad answer from server"}; }
  data.httpStatus = response.status;
  return data;
}

async function getAssertion(options) {
  const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(options);
  const credential = await navigator.credentials.get({publicKey});
  return credential.toJSON();
}

// One vote: ask the server for the statement and its options, confirm with the passkey,
// send the assertion back. Returns the server's answer. `shown` is the hash of the call this
// page displayed: the statement signs it, and the server refuses if the call changed since.
async function vote(requestId, decision, reason, grantTtl, shown) {
  const base = "/api/requests/" + encodeURIComponent(requestId);
  const opened = await postJSON(base + "/options",
                                {decision, reason, grant_ttl: grantTtl, shown});
  if (!opened.options) return opened;
  const credential = await getAssertion(opened.options);
  return postJSON(base + "/vote", {nonce: opened.nonce, credential});
}

// A passkey step-up for a held call: the server makes the statement, the passkey signs it.
async function stepUp(requestId) {
  const base = "/api/stepup/" + encodeURIComponent(requestId);
  const opened = await postJSON(base + "/options", {});
  if (!opened.options) return opened;
  const credential = await getAssertion(opened.options);
  return postJSON(base + "/verify", {nonce: opened.nonce, credential});
}

async function login(approver) {
  const opened = await postJSON("/api/login/options", {approver});
  if (!opened.options) return opened;
  const credential = await getAssertion(opened.options);
  return postJSON("/api/login/verify", {nonce: opened.nonce, credential});
}

async function enroll(token, label) {
  const opened = await postJSON("/api/enroll/options", {token, label});
  if (!opened.options) return opened;
  const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(opened.options);
  const credential = await navigator.credentials.create({publicKey});
  return postJSON("/api/enroll/verify", {nonce: opened.nonce, credential: credential.toJSON()});
}

function tick() {
  const now = Date.now() / 1000;
  for (const el of document.querySelectorAll(".countdown")) {
    let left = Math.floor(Number(el.dataset.expires) - now);
    if (!(left > 0)) { el.textContent = "expired"; continue; }
    const h = Math.floor(left / 3600), m = Math.floor(left % 3600 / 60), s = left % 60;
    el.textContent = (h ? h + "h" : "") + (h || m ? m + "m" : "") + s + "s left";
  }
}

function guarded(fn) {
  return async (event) => {
    event.preventDefault();
    try {
      const answer = await fn(event);
      if (answer && answer.error) say(answer.error, true);
      return answer;
    } catch (e) {
      say("passkey failed: " + e.name + ": " + e.message, true);
    }
  };
}

window.agentguard = {postJSON, getAssertion, vote, stepUp, login, enroll};

document.addEventListener("DOMContentLoaded", () => {
  tick();
  setInterval(tick, 1000);
  const loginForm = document.getElementById("login-form");
  if (loginForm) loginForm.addEventListener("submit", guarded(async () => {
    say("confirm with your passkey...");
    const answer = await login(document.getElementById("approver").value);
    if (answer.ok) { say("signed in"); location.href = "/"; }
    return answer;
  }));
  const voteForm = document.getElementById("vote-form");
  if (voteForm) voteForm.addEventListener("submit", guarded(async (event) => {
    const button = event.submitter;
    const decision = button.value;
    const grant = Number(button.dataset.grant || 0);
    const reason = decision === "deny" ? document.getElementById("reason").value : "";
    say("confirm with your passkey...");
    const answer = await vote(voteForm.dataset.request, decision, reason, grant,
                              voteForm.dataset.shown);
    if (answer.ok) {
      say(answer.message);
      document.getElementById("request-status").textContent = answer.status;
      if (answer.status !== "pending") voteForm.remove();
    }
    return answer;
  }));
  const stepUpForm = document.getElementById("stepup-form");
  if (stepUpForm) stepUpForm.addEventListener("submit", guarded(async () => {
    say("confirm with your passkey...");
    const answer = await stepUp(stepUpForm.dataset.request);
    if (answer.ok) { say(answer.message); stepUpForm.remove(); }
    return answer;
  }));
  const enrollForm = document.getElementById("enroll-form");
  if (enrollForm) enrollForm.addEventListener("submit", guarded(async () => {
    const token = decodeURIComponent(location.hash.slice(1));
    say("create your passkey...");
    const answer = await enroll(token, document.getElementById("label").value);
    if (answer.ok) say("passkey registered for " + answer.approver + "; you can sign in now");
    return answer;
  }));
});
