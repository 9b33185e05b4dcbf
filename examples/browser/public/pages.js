// For pages the gate protects without any SuperTokens code on them: the sign-in and refresh
// pages it sends a browser to (login_url, refresh_url), built on supertokens-web-js.
"use strict";

supertokens.init({
  appInfo: { appName: "forward-auth browser example", apiDomain: location.origin, apiBasePath: "/auth" },
  // Navigations carry cookies only: pages need cookie mode.
  recipeList: [supertokensSession.init({ tokenTransferMethod: "cookie" })],
});

window.forwardAuthPages = (function () {
  // Where to go back to: redirectToPath, only when the browser itself reads it as this site.
  // Parsed, not prefix-checked: URL parsing drops tabs and newlines, so "/\t/evil.example"
  // passes a startsWith("/") check and yet leaves the site.
  function back() {
    const url = new URL(new URLSearchParams(location.search).get("redirectToPath") || "/", location.origin);
    return url.origin === location.origin ? url.pathname + url.search + url.hash : "/";
  }

  // One refresh, then back to the page; to sign-in when it fails, or when this page was already
  // here for the same page moments ago (a refreshed token the gate still refuses: no loop).
  async function refreshAndGoBack(signInPath) {
    const target = back();
    const key = "forward-auth-refresh:" + target;
    const last = Number(sessionStorage.getItem(key) || 0);
    sessionStorage.setItem(key, String(Date.now()));
    let refreshed = false;
    if (Date.now() - last > 10000) {
      try {
        refreshed = await supertokensSession.attemptRefreshingSession();
      } catch (e) {
        refreshed = false;
      }
    }
    location.replace(refreshed ? target : signInPath + "?redirectToPath=" + encodeURIComponent(target));
  }

  return { back, refreshAndGoBack };
})();
