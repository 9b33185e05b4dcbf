// supertokens-node verifySession() under express, for bench/edge_bench.py.
//
//   CORE_URL=http://127.0.0.1:3567 API_KEY=k PORT=8001 WORKERS=2 node bench/node/verify.js
//
// A node cluster of WORKERS processes (the primary hands out connections round-robin and serves
// nothing itself). GET /verify: verifySession() with the Session recipe pointed at the core (JWKS
// verified locally, as the SDK does by default), then 200 with X-User-Id and an empty body; a bad
// or missing token gets the SDK's own 401 through its express errorHandler.
"use strict";
const cluster = require("node:cluster");

const workers = Number(process.env.WORKERS || "2");

if (cluster.isPrimary && workers > 1) {
    for (let i = 0; i < workers; i++) cluster.fork();
    cluster.on("exit", (worker, code) => {
        console.error(`worker ${worker.process.pid} exited with ${code}`);
        process.exit(1);
    });
} else {
    const express = require("express");
    const supertokens = require("supertokens-node");
    const Session = require("supertokens-node/recipe/session");
    const { middleware, errorHandler } = require("supertokens-node/framework/express");
    const { verifySession } = require("supertokens-node/recipe/session/framework/express");

    supertokens.init({
        framework: "express",
        supertokens: { connectionURI: process.env.CORE_URL, apiKey: process.env.API_KEY || undefined },
        appInfo: { appName: "bench", apiDomain: "http://127.0.0.1", websiteDomain: "http://127.0.0.1",
                   apiBasePath: "/auth" },
        // the service's default on a same-site http app (anti-CSRF NONE), as the Python SDK apps
        recipeList: [Session.init({ antiCsrf: "NONE" })],
        telemetry: false,
    });

    const app = express();
    app.disable("x-powered-by");
    app.disable("etag");
    app.use(middleware());
    app.get("/healthz", (req, res) => res.status(200).end());
    app.all("/verify", verifySession(), (req, res) => {
        res.set("Cache-Control", "no-store");
        res.set("X-User-Id", req.session.getUserId());
        res.status(200).end();
    });
    app.use(errorHandler());
    const server = app.listen(Number(process.env.PORT), process.env.HOST || "127.0.0.1");
    server.keepAliveTimeout = 75000; // as the service's gunicorn keepalive: nginx's pool keeps its connections
}
