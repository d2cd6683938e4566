//! Tokens and scopes through the real server: the authorization matrix walked from the
//! router's own table, the actor taken from the token, revocation, expiry, rate limits,
//! the bootstrap file and the CLI.

use std::time::Duration;

use orderlog::api::scoped::RouteScope;
use orderlog::auth::{Scope, Scopes};
use orderlog::store::reader::{read_after, Cursor};
use orderlog::store::Database;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{
    client_for, eventually, expect_error, expect_status, fixture, fresh_database, spawn_app,
    spawn_app_on, Backend, TestApp,
};
use crate::on_both_backends;
use crate::settings::orderlog;

on_both_backends!(
    every_route_needs_its_scope_and_only_its_scope,
    the_actor_is_the_tokens_name,
    revoked_and_expired_tokens_are_refused,
    a_token_cannot_grant_or_revoke_beyond_its_scopes,
    a_rate_limited_token_gets_429_with_retry_after,
    the_first_start_writes_an_admin_token_to_a_private_file,
);

/// A token made through the API with these scopes; returns its text.
async fn token(app: &TestApp, name: &str, scopes: Scopes, extra: Value) -> String {
    let mut body = json!({ "name": name, "scopes": scopes.names() });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let created = expect_status(app.post("/v1/tokens", &body).await, StatusCode::CREATED).await;
    assert_eq!(created["name"], name);
    created["token"].as_str().unwrap().to_owned()
}

/// A path the route matches: every parameter filled with a plain value.
fn concrete(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').unwrap() + start;
        out.push_str("x1");
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

async fn call(client: &reqwest::Client, app: &TestApp, route: &RouteScope) -> reqwest::Response {
    let url = app.url(&concrete(&route.path));
    let request = client.request(route.method.clone(), url);
    let request = if route.method == Method::GET || route.method == Method::DELETE {
        request
    } else {
        request.json(&json!({}))
    };
    request.send().await.expect("the request is answered")
}

async fn every_route_needs_its_scope_and_only_its_scope(backend: Backend) {
    let app = spawn_app(backend).await;
    let table = orderlog::api::route_table();
    assert!(
        table.len() >= 40,
        "the router declares {} routes",
        table.len()
    );
    let scopes: Vec<Scope> = {
        let mut s: Vec<Scope> = table.iter().map(|r| r.scope).collect();
        s.sort();
        s.dedup();
        s
    };
    let mut only = std::collections::HashMap::new();
    let mut all_but = std::collections::HashMap::new();
    for scope in &scopes {
        let name = scope.as_str().replace(':', "-");
        only.insert(
            *scope,
            client_for(
                &token(
                    &app,
                    &format!("only-{name}"),
                    Scopes::of([*scope]),
                    json!({}),
                )
                .await,
            ),
        );
        let others = Scopes::of(Scopes::all_but_admin().iter().filter(|s| s != scope));
        all_but.insert(
            *scope,
            client_for(&token(&app, &format!("all-but-{name}"), others, json!({})).await),
        );
    }
    let anonymous = reqwest::Client::new();
    let stranger = client_for("olk_9ndKJC08SGgtlfeEqTLwfqcHreB_Sv9jFdTxQFih2Yd");

    for route in &table {
        let what = format!("{} {}", route.method, route.path);
        for client in [&anonymous, &stranger] {
            let response = call(client, &app, route).await;
            let challenge = response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned());
            let body = expect_error(response, StatusCode::UNAUTHORIZED, "unauthenticated").await;
            assert!(
                challenge
                    .as_deref()
                    .is_some_and(|c| c.starts_with("Bearer")),
                "{what}: {challenge:?} {body}"
            );
        }
        let body = expect_error(
            call(&all_but[&route.scope], &app, route).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;
        assert_eq!(body["field"], route.scope.as_str(), "{what}: {body}");
    }

    // Nothing refused wrote anything: no event, no subscription, no extra token.
    let db = Database::connect(&app.database_url, 1).await.unwrap();
    let log = read_after(&db, Cursor::START, 10).await.unwrap();
    assert!(
        log.is_empty(),
        "refused requests appended {} events",
        log.len()
    );
    db.close().await;
    let subscriptions = expect_status(app.get("/v1/subscriptions").await, StatusCode::OK).await;
    assert_eq!(subscriptions["subscriptions"], json!([]), "{subscriptions}");
    let tokens = expect_status(app.get("/v1/tokens").await, StatusCode::OK).await;
    assert_eq!(
        tokens["tokens"].as_array().unwrap().len(),
        1 + 2 * scopes.len(),
        "{tokens}"
    );

    for route in &table {
        let response = call(&only[&route.scope], &app, route).await;
        let status = response.status();
        assert!(
            status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
            "{} {} with {}: {status} {}",
            route.method,
            route.path,
            route.scope,
            response.text().await.unwrap_or_default()
        );
    }
    // Open to anyone: what load balancers probe.
    for path in ["/health", "/ready"] {
        expect_status(
            anonymous.get(app.url(path)).send().await.unwrap(),
            StatusCode::OK,
        )
        .await;
    }
}

async fn the_actor_is_the_tokens_name(backend: Backend) {
    let app = spawn_app(backend).await;
    let storefront = client_for(
        &token(
            &app,
            "shopify-prod",
            Scopes::of([Scope::OrdersWrite]),
            json!({}),
        )
        .await,
    );
    let r = storefront
        .post(app.url("/v1/orders"))
        .header("x-actor", "staff:ana@example.com")
        .json(&fixture("place_order.json", "ord-actor"))
        .send()
        .await
        .unwrap();
    expect_status(r, StatusCode::CREATED).await;
    let events = app.events("ord-actor").await;
    assert!(!events.is_empty());
    for event in events {
        assert_eq!(event["metadata"]["actor"], "shopify-prod", "{event}");
        assert_eq!(event["metadata"]["on_behalf_of"], "staff:ana@example.com");
    }
}

async fn revoked_and_expired_tokens_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let reader =
        client_for(&token(&app, "reader", Scopes::of([Scope::OrdersRead]), json!({})).await);
    expect_status(
        reader.get(app.url("/v1/orders")).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;

    let r = app
        .client
        .delete(app.url("/v1/tokens/reader"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let body = expect_error(
        reader.get(app.url("/v1/orders")).send().await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("revoked"),
        "{body}"
    );
    // A revoked name stays taken: events name their actor by it.
    let again = app
        .post(
            "/v1/tokens",
            &json!({"name": "reader", "scopes": ["orders:read"]}),
        )
        .await;
    expect_error(again, StatusCode::CONFLICT, "token_exists").await;

    let brief = client_for(
        &token(
            &app,
            "brief",
            Scopes::of([Scope::OrdersRead]),
            json!({"expires_in": "1s"}),
        )
        .await,
    );
    expect_status(
        brief.get(app.url("/v1/orders")).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let body = expect_error(
        brief.get(app.url("/v1/orders")).send().await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("expired"),
        "{body}"
    );

    let listed = expect_status(app.get("/v1/tokens").await, StatusCode::OK).await;
    assert!(
        !listed.to_string().contains("olk_"),
        "no token is ever listed: {listed}"
    );
    let reader = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "reader")
        .unwrap();
    assert!(reader["revoked_at"].is_string(), "{reader}");
    assert!(
        reader["last_used_at"].is_string(),
        "its one use is recorded: {reader}"
    );
}

async fn a_token_cannot_grant_or_revoke_beyond_its_scopes(backend: Backend) {
    let app = spawn_app(backend).await;
    let manager = client_for(
        &token(
            &app,
            "manager",
            Scopes::of([Scope::TokensManage, Scope::OrdersRead]),
            json!({}),
        )
        .await,
    );
    let grant = |scopes: Value| {
        manager
            .post(app.url("/v1/tokens"))
            .json(&json!({"name": "child", "scopes": scopes}))
            .send()
    };
    let body = expect_error(
        grant(json!(["orders:read", "orders:write"])).await.unwrap(),
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert_eq!(body["field"], "orders:write");
    expect_error(
        grant(json!(["admin"])).await.unwrap(),
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    expect_status(
        grant(json!(["orders:read"])).await.unwrap(),
        StatusCode::CREATED,
    )
    .await;

    let revoke_bootstrap = manager
        .delete(app.url("/v1/tokens/bootstrap"))
        .send()
        .await
        .unwrap();
    let body = expect_error(revoke_bootstrap, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(body["field"], "admin");
    expect_status(app.get("/v1/orders").await, StatusCode::OK).await;

    for (body, field) in [
        (json!({"name": "a b", "scopes": ["orders:read"]}), "name"),
        (json!({"name": "ok", "scopes": ["orders:reed"]}), "scopes"),
        (json!({"name": "ok", "scopes": []}), "scopes"),
        (
            json!({"name": "ok", "scopes": ["orders:read"], "rate": "fast"}),
            "rate",
        ),
        (
            json!({"name": "ok", "scopes": ["orders:read"], "expires_in": "soon"}),
            "expires_in",
        ),
    ] {
        let refused = expect_error(
            app.post("/v1/tokens", &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        )
        .await;
        assert_eq!(refused["field"], field, "{body}: {refused}");
    }
    let r = app
        .client
        .delete(app.url("/v1/tokens/nobody"))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "token_not_found").await;
}

async fn a_rate_limited_token_gets_429_with_retry_after(backend: Backend) {
    let app = spawn_app(backend).await;
    let limited = client_for(
        &token(
            &app,
            "limited",
            Scopes::of([Scope::OrdersRead]),
            json!({"rate": "3/min"}),
        )
        .await,
    );
    for _ in 0..3 {
        expect_status(
            limited.get(app.url("/v1/orders")).send().await.unwrap(),
            StatusCode::OK,
        )
        .await;
    }
    let refused = limited.get(app.url("/v1/orders")).send().await.unwrap();
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=20).contains(&retry_after),
        "Retry-After: {retry_after}"
    );
    expect_error(refused, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // Other tokens are not held back by it.
    expect_status(app.get("/v1/orders").await, StatusCode::OK).await;
}

async fn the_first_start_writes_an_admin_token_to_a_private_file(backend: Backend) {
    let url = fresh_database(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secrets").join("admin.token");
    let first_file = file.clone();
    let app = spawn_app_on(&url, move |s| {
        s.bootstrap_token = None;
        s.bootstrap_token_file = Some(first_file);
    })
    .await;
    let text = std::fs::read_to_string(&file).unwrap();
    let token = text.trim();
    assert!(token.starts_with("olk_"), "{token}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    }
    let admin = client_for(token);
    let listed = expect_status(
        admin.get(app.url("/v1/tokens")).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(listed["tokens"][0]["name"], "bootstrap");
    assert_eq!(listed["tokens"][0]["scopes"], json!(["admin"]));
    app.stop().await;

    // A database that holds a token gets no new one, nor a new file.
    std::fs::remove_file(&file).unwrap();
    let again = file.clone();
    let app = spawn_app_on(&url, move |s| {
        s.bootstrap_token = None;
        s.bootstrap_token_file = Some(again);
    })
    .await;
    assert!(!file.exists());
    expect_status(
        admin.get(app.url("/v1/orders")).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    // The suite's usual token was never stored here.
    expect_error(
        app.get("/v1/orders").await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await;
}

on_both_backends!(tokens_are_managed_from_the_cli);

async fn tokens_are_managed_from_the_cli(backend: Backend) {
    let url = fresh_database(backend).await;
    let app = spawn_app_on(&url, |_| {}).await;
    let env = [("ORDERLOG_DATABASE_URL", url.as_str())];
    let created = orderlog(
        &[
            "tokens",
            "create",
            "--name",
            "ci",
            "--scopes",
            "orders:read,views:read",
            "--expires",
            "90d",
        ],
        &env,
    );
    let stdout = String::from_utf8(created.stdout).unwrap();
    assert!(
        created.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let token = stdout.lines().last().unwrap().trim().to_owned();
    assert!(token.starts_with("olk_") && token.len() >= 47, "{stdout}");
    let ci = client_for(&token);
    expect_status(
        ci.get(app.url("/v1/orders")).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    expect_error(
        ci.post(app.url("/v1/orders"))
            .json(&fixture("place_order.json", "ord-ci"))
            .send()
            .await
            .unwrap(),
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;

    let listed = orderlog(&["tokens", "list"], &env);
    assert!(listed.status.success());
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(
        listed.contains("ci ") && listed.contains("orders:read,views:read"),
        "{listed}"
    );
    assert!(listed.contains("bootstrap"), "{listed}");
    assert!(
        !listed.contains("olk_"),
        "no token is ever listed:\n{listed}"
    );

    let bad = orderlog(
        &["tokens", "create", "--name", "x", "--scopes", "orders:reed"],
        &env,
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("`orders:reed` is not a scope"));

    let revoked = orderlog(&["tokens", "revoke", "ci"], &env);
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    // Another process revoked it: this server sees it once its cached copy is stale.
    eventually(
        "the revocation to reach the server",
        Duration::from_secs(15),
        || async {
            match ci.get(app.url("/v1/orders")).send().await.unwrap().status() {
                StatusCode::UNAUTHORIZED => Ok(()),
                other => Err(other),
            }
        },
    )
    .await;
    let again = orderlog(&["tokens", "revoke", "nobody"], &env);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("no token is named `nobody`"));
}
