// The example page's code: supertokens-web-js with its fetch interception on, and a small API
// (window.fa) that the buttons and the browser tests call.
"use strict";

(function () {
  const params = new URLSearchParams(location.search);
  const mode = params.get("mode") === "header" ? "header" : "cookie";
  const expired = Number(params.get("expired") || "401");
  // Kept before init: the SDK replaces window.fetch with its intercepting version.
  const plainFetch = window.fetch.bind(window);
  const events = [];

  supertokens.init({
    appInfo: { appName: "forward-auth browser example", apiDomain: location.origin, apiBasePath: "/auth" },
    recipeList: [
      supertokensSession.init({
        tokenTransferMethod: mode,
        sessionExpiredStatusCode: expired,
        onHandleEvent: (event) => {
          events.push(event.action);
          const list = document.getElementById("events");
          if (list) list.textContent = events.join("\n");
        },
      }),
    ],
  });

  async function answer(response) {
    const text = await response.text();
    let body = text;
    try { body = JSON.parse(text); } catch (e) { /* not JSON: keep the text */ }
    return { status: response.status, body };
  }

  async function failure(error) {
    return { status: 0, error: String(error && error.message ? error.message : error) };
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.getElementById("mode").textContent = mode;
    document.getElementById("expired").textContent = String(expired);
  });

  window.fa = {
    mode, expired, events,
    // POST /auth/dev-login through the SDK, which stores the tokens it is given.
    login: (userId, roles) => fetch("/auth/dev-login", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ userId, roles }),
    }).then(answer, failure),
    // A call through the SDK's interception: it adds rid / Authorization and refreshes on expiry.
    call: (method, path) => fetch(path, { method }).then(answer, failure),
    // The same call without the SDK (no rid header, no Authorization header, no refresh).
    plainCall: (method, path) => plainFetch(path, { method }).then(answer, failure),
    refresh: () => supertokensSession.attemptRefreshingSession().then((refreshed) => ({ refreshed }), failure),
    signOut: () => supertokensSession.signOut().then(() => ({ signedOut: true }), failure),
    state: async () => {
      const exists = await supertokensSession.doesSessionExist();
      return { exists, userId: exists ? await supertokensSession.getUserId() : null, events: events.slice() };
    },
    invalidClaims: async (path) => {
      const response = await fetch(path);
      const errors = await supertokensSession.getInvalidClaimsFromResponse({ response });
      return { status: response.status, errors };
    },
  };
})();

function show(promise) {
  document.getElementById("out").textContent = "…";
  promise.then((value) => { document.getElementById("out").textContent = JSON.stringify(value, null, 2); });
}
