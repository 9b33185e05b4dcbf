// supertokens-node 24.0.3 as the behavioural oracle (tests/sdk_node.py starts it):
//
//   TEST_MODE=testing NODE_PATH=bench/node/node_modules CORE_URL=... API_KEY=... node tests/node_oracle.js
//
// One express app; each route is verifySession() with one per-route option the service offers as
// a query parameter (the same routes as tests/sdk_oracle.py), for every method. Prints
// "listening <port>" once it serves. POST /__init {antiCsrf, useDynamicAccessTokenSigningKey,
// sessionExpiredStatusCode} re-initialises the SDK with that Session configuration (the SDK is
// process-global, as the Python one). POST /__login {userId, payload} creates a session
// (st-auth-mode chooses cookies or headers); POST /auth/session/refresh is the SDK's own.
"use strict";
const express = require("express");
const supertokens = require("supertokens-node");
const Session = require("supertokens-node/recipe/session");
const { UserRoleClaim, PermissionClaim } = require("supertokens-node/recipe/userroles");
const { EmailVerificationClaim } = require("supertokens-node/recipe/emailverification");
const { middleware, errorHandler } = require("supertokens-node/framework/express");
const { verifySession } = require("supertokens-node/recipe/session/framework/express");

const RESET = ["supertokens", "recipe/session/recipe", "recipe/multitenancy/recipe", "recipe/accountlinking/recipe",
               "recipe/usermetadata/recipe", "recipe/userroles/recipe", "recipe/emailverification/recipe"];

function init(session) {
    for (const path of RESET) require(`supertokens-node/lib/build/${path}`).default.reset();
    require("supertokens-node/lib/build/processState").ProcessState.getInstance().reset();
    supertokens.init({
        framework: "express",
        supertokens: { connectionURI: process.env.CORE_URL, apiKey: process.env.API_KEY || undefined },
        appInfo: { appName: "oracle", apiDomain: "http://127.0.0.1", websiteDomain: "http://127.0.0.1",
                   apiBasePath: "/auth" },
        recipeList: [Session.init(session)],
        telemetry: false,
    });
}

const claims = (...validators) => ({ overrideGlobalClaimValidators: () => validators });
const ROUTES = {
    required: {},
    optional: { sessionRequired: false },
    checkdb: { checkDatabase: true },
    csrf_on: { antiCsrfCheck: true },
    csrf_off: { antiCsrfCheck: false },
    role_admin: claims(UserRoleClaim.validators.includes("admin")),
    roles_admin_editor: claims(UserRoleClaim.validators.includes("admin"), UserRoleClaim.validators.includes("editor")),
    perm_edit: claims(PermissionClaim.validators.includes("edit")),
    email_verified: claims(EmailVerificationClaim.validators.isVerified()),
    roles_all: claims(UserRoleClaim.validators.includesAll(["admin", "editor"])),
    roles_any: claims(UserRoleClaim.validators.includesAny(["admin", "editor"])),
    roles_excludes: claims(UserRoleClaim.validators.excludes("banned")),
    roles_excludes_all: claims(UserRoleClaim.validators.excludesAll(["banned", "suspended"])),
    perm_all_ev_fresh: claims(PermissionClaim.validators.includesAll(["read", "write"]),
                              EmailVerificationClaim.validators.isVerified(10, 3600)),
};

init({ antiCsrf: "NONE" });
const app = express();
app.disable("x-powered-by");
app.disable("etag");
app.post("/__init", express.json(), (req, res) => {
    init(req.body);
    res.json({ ok: true });
});
app.use(middleware());
app.post("/__login", express.json(), async (req, res, next) => {
    try {
        const session = await Session.createNewSession(req, res, "public",
            supertokens.convertToRecipeUserId(req.body.userId), req.body.payload || {});
        res.json({ userId: session.getUserId(), handle: session.getHandle() });
    } catch (err) {
        next(err);
    }
});
for (const [name, options] of Object.entries(ROUTES)) {
    app.all(`/${name}`, verifySession(options), (req, res) => {
        const s = req.session;
        res.json(s === undefined ? { userId: null }
            : { userId: s.getUserId(), tenantId: s.getTenantId(), recipeUserId: s.getRecipeUserId().getAsString(),
                handle: s.getHandle() });
    });
}
app.use(errorHandler());
app.use((err, req, res, next) => res.status(500).json({ message: "oracle error: " + err.message }));
const server = app.listen(0, "127.0.0.1", () => console.log(`listening ${server.address().port}`));
