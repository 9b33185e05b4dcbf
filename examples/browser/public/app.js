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
          setText("events", events.join("\n"));
          readSession();
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

  // The visible session state. Read when the SDK reports a change (sign-in, refresh, sign-out,
  // a new token) and at load, never on a timer: with an expired token the SDK's read refreshes,
  // and the page is there to show the gate answering try-refresh first.
  let expiresAt = null;
  function setText(id, value) { document.getElementById(id).textContent = value; }
  async function readSession() {
    let user = null, payload = null;
    try {
      [user, payload] = await Promise.all([supertokensSession.getUserId(),
                                           supertokensSession.getAccessTokenPayloadSecurely()]);
    } catch (e) { /* "No session exists" */ }
    expiresAt = payload ? payload.exp * 1000 : null;
    setText("signed-in", user ? "yes" : "no");
    setText("user", user || "none");
    tick();
  }
  function tick() {
    const left = expiresAt && Math.ceil((expiresAt - Date.now()) / 1000);
    setText("expires", expiresAt === null ? "no token" : left > 0 ? `${left} s`
      : "expired: the next call gets try-refresh, the SDK refreshes");
  }

  // A call to a gated path, its answer shown as the last gate answer.
  function gated(send, method, path) {
    return send(path, { method }).then((response) => {
      const reason = response.headers.get("X-Forward-Auth-Reason");
      setText("answer", `${method} ${path}: ${response.status}` + (reason ? `, X-Forward-Auth-Reason: ${reason}` : ""));
      return response;
    });
  }

  async function failure(error) {
    return { status: 0, error: String(error && error.message ? error.message : error) };
  }

  // Deferred (index.html): the document is parsed by now.
  setText("mode", mode);
  setText("expired", String(expired));
  readSession();
  setInterval(tick, 250);

  window.fa = {
    mode, expired, events,
    // POST /auth/dev-login through the SDK, which stores the tokens it is given.
    login: (userId, roles) => fetch("/auth/dev-login", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ userId, roles }),
    }).then(answer, failure),
    // A call through the SDK's interception: it adds rid / Authorization and refreshes on expiry.
    call: (method, path) => gated(fetch, method, path).then(answer, failure),
    // The same call without the SDK (no rid header, no Authorization header, no refresh).
    plainCall: (method, path) => gated(plainFetch, method, path).then(answer, failure),
    refresh: () => supertokensSession.attemptRefreshingSession().then((refreshed) => ({ refreshed }), failure),
    signOut: () => supertokensSession.signOut().then(() => ({ signedOut: true }), failure),
    state: async () => {
      const exists = await supertokensSession.doesSessionExist();
      return { exists, userId: exists ? await supertokensSession.getUserId() : null, events: events.slice() };
    },
    invalidClaims: async (path) => {
      const response = await gated(fetch, "GET", path);
      const errors = await supertokensSession.getInvalidClaimsFromResponse({ response });
      return { status: response.status, errors };
    },
  };
})();

function show(promise) {
  document.getElementById("out").textContent = "…";
  promise.then((value) => { document.getElementById("out").textContent = JSON.stringify(value, null, 2); });
}
