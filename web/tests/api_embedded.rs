//! The API through the router (`oneshot`) on the embedded store: every
//! endpoint with exact answers, errors and hostile inputs, security headers,
//! the token and Host guards, /metrics, the cache.

mod common;

use std::{sync::Arc, time::Duration};

use axum::http::StatusCode;
use common::{checks::*, *};
use flowlens_web::{
    health::MemoryHealthLog, metrics::NoMetrics, testdata::S, AppStateBuilder, Token,
};

#[tokio::test]
async fn every_endpoint_answers_exactly() {
    let dir = TempDir::new("every");
    let app = app(embedded(&dir));
    let s = Scenario {
        app: &app,
        records: scenario().concat(),
        range: range(),
    };
    s.every_endpoint().await;
}

#[tokio::test]
async fn errors_and_hostile_inputs_get_400_json() {
    let dir = TempDir::new("errors");
    let app = app(embedded(&dir));
    let s = Scenario {
        app: &app,
        records: scenario().concat(),
        range: range(),
    };
    s.errors_and_hostile_inputs().await;
    security_headers(&app).await;
}

#[tokio::test]
async fn the_rollup_and_the_records_give_the_same_rows() {
    let dir = TempDir::new("sources");
    let app = app(embedded(&dir));
    let r = range();
    for q in [
        "dims=container,process&top=50&points=13",
        "dims=user,peer&top=50&points=13&bidirectional=true",
        "dims=server_port,direction&top=50&points=7&unit=packets",
        "dims=proto,role&top=50&points=13&unit=conversations",
    ] {
        let rollup = ok(&app, &format!("/api/series?{r}&{q}")).await;
        assert_eq!(rollup["source"], "rollup", "{q}");
        // `pid >= 0` holds for every local end but only the records know pids.
        let f = enc("pid >= 0");
        let records = ok(&app, &format!("/api/series?{r}&{q}&filter={f}")).await;
        assert_eq!(records["source"], "records", "{q}");
        assert_eq!(rollup["series"], records["series"], "{q}");
        assert_eq!(rollup["totals"], records["totals"], "{q}");
    }
}

#[tokio::test]
async fn the_token_guards_the_api_and_metrics_and_the_host_check_guards_loopback() {
    let dir = TempDir::new("token");
    let store = embedded(&dir);
    let tok = "an-example-token-of-some-length";
    let app = flowlens_web::app(
        AppStateBuilder::new(
            store.clone(),
            Arc::new(NoMetrics),
            Arc::new(MemoryHealthLog::new(3600 * S, 1000)),
        )
        .token(Some(Token::new(tok)))
        .clock(now)
        .build(),
    );
    for uri in ["/api", "/api/series", "/metrics", "/api/nope"] {
        let (s, h, body) = get_raw(&app, uri, &[]).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{uri}: {body}");
        assert!(h.contains_key("www-authenticate"));
        assert!(body.contains("\"unauthorized\""), "{body}");
        let (s, _, _) = get_raw(
            &app,
            uri,
            &[("authorization", "Bearer wrong-token-wrong-token")],
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{uri}");
    }
    let bearer = format!("Bearer {tok}");
    let (s, _, _) = get_raw(&app, "/api", &[("authorization", &bearer)]).await;
    assert_eq!(s, StatusCode::OK);
    let cookie = format!("a=b; flowlens_token={tok}");
    let (s, _, body) = get_raw(&app, "/metrics", &[("cookie", &cookie)]).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, _, body) = get_raw(&app, "/", &[]).await;
    assert_eq!(s, StatusCode::OK, "the page itself is public: {body}");
    let (s, _, body) = get_raw(&app, "/login", &[]).await;
    assert!(s == StatusCode::OK && body.contains("<form"), "{body}");
    // POST /login sets the cookie.
    use tower::ServiceExt;
    let req = axum::http::Request::post("/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(axum::body::Body::from(format!("token={tok}")))
        .unwrap();
    let r = app.clone().oneshot(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let c = r.headers()["set-cookie"].to_str().unwrap();
    assert!(
        c.contains("HttpOnly") && c.contains("SameSite=Strict"),
        "{c}"
    );

    // Loopback without a token: only this server's names.
    let app = flowlens_web::app(
        AppStateBuilder::new(
            store,
            Arc::new(NoMetrics),
            Arc::new(MemoryHealthLog::new(3600 * S, 1000)),
        )
        .allowed_hosts(Some(flowlens_web::server::loopback_hosts(
            "127.0.0.1:8647".parse().unwrap(),
        )))
        .build(),
    );
    let (s, _, body) = get_raw(&app, "/api", &[("host", "evil.example:8647")]).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    for host in ["127.0.0.1:8647", "localhost:8647"] {
        let (s, _, _) = get_raw(&app, "/api", &[("host", host)]).await;
        assert_eq!(s, StatusCode::OK, "{host}");
    }
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let dir = TempDir::new("metrics");
    let app = app(embedded(&dir));
    let (s, h, body) = get_raw(&app, "/metrics", &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    for want in [
        "# TYPE flowlens_build_info gauge",
        "flowlens_build_info{version=\"",
        "# TYPE flowlens_web_live_records gauge",
        "flowlens_web_store_dropped_records_total 0",
        "flowlens_web_history_up 1",
    ] {
        assert!(body.contains(want), "{want} in:\n{body}");
    }
    let recs = scenario().concat().len();
    assert!(
        body.contains(&format!("flowlens_web_live_records {recs}\n")),
        "{body}"
    );
}

#[tokio::test]
async fn identical_requests_are_cached_briefly() {
    let dir = TempDir::new("cache");
    let store = embedded(&dir);
    let app = flowlens_web::app(
        AppStateBuilder::new(
            store.clone(),
            Arc::new(NoMetrics),
            Arc::new(MemoryHealthLog::new(3600 * S, 1000)),
        )
        .cache_ttl(Duration::from_secs(60))
        .clock(now)
        .build(),
    );
    let u = format!("/api/top?{}&dims=container", range());
    let (_, h1, b1) = get_raw(&app, &u, &[]).await;
    assert!(!h1.contains_key("x-flowlens-cache"));
    // New records: a cached answer does not see them yet.
    let w = store.writer();
    w.offer(&flowlens_web::testdata::small_host(start() + 5 * S, 1).concat());
    assert!(w.sync(Duration::from_secs(5)));
    let (_, h2, b2) = get_raw(&app, &u, &[]).await;
    assert_eq!(h2["x-flowlens-cache"], "hit");
    assert_eq!(b1, b2);
    let (_, h3, b3) = get_raw(&app, &format!("{u}&top=11"), &[]).await;
    assert!(!h3.contains_key("x-flowlens-cache"));
    assert_ne!(b1, b3);
}
