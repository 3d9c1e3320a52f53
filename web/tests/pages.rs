//! The explorer's pages and assets through the router: every page (and the
//! entity routes the Grafana dashboards link to) is the HTML shell with its
//! own script, under the CSP; every asset it names is served, gzip-encoded
//! with a one-year cache to clients that accept gzip, plain to others; the
//! request path never reaches the HTML.

mod common;

use std::io::Read;

use axum::{
    body::{to_bytes, Body},
    http::{header, Request, StatusCode},
};
use common::{checks::*, *};
use tower::ServiceExt;

/// The `/assets/...` names a page refers to.
fn assets_of(html: &str) -> Vec<String> {
    html.split("\"/assets/")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .map(|s| format!("/assets/{s}"))
        .collect()
}

async fn raw(
    app: &axum::Router,
    uri: &str,
    gzip: bool,
) -> (StatusCode, header::HeaderMap, Vec<u8>) {
    let mut b = Request::builder().uri(uri);
    if gzip {
        b = b.header(header::ACCEPT_ENCODING, "gzip, deflate, br");
    }
    let r = app
        .clone()
        .oneshot(b.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let (s, h) = (r.status(), r.headers().clone());
    let body = to_bytes(r.into_body(), 64 << 20).await.expect("body");
    (s, h, body.to_vec())
}

#[tokio::test]
async fn every_page_is_the_shell_with_its_script_and_every_asset_is_served() {
    let dir = TempDir::new("pages");
    let app = app(embedded(&dir));
    let pages = [
        ("/", "overview.", true),
        ("/visualize", "visualize.", true),
        ("/conversations", "conversations.", false),
        ("/topology", "topology.", true),
        ("/container/web", "entity.", true),
        ("/process/python3.11", "entity.", true),
        ("/user/nobody", "entity.", true),
        ("/remote/203.0.113.7", "entity.", true),
        ("/host/node-1", "entity.", true),
        (
            "/container/%3Cscript%3Ealert(1)%3C%2Fscript%3E",
            "entity.",
            true,
        ),
    ];
    let mut seen = Vec::new();
    for (path, script, charts) in pages {
        let (s, h, body) = get_raw(&app, path, &[]).await;
        assert_eq!(s, StatusCode::OK, "{path}");
        assert_eq!(
            h[header::CONTENT_TYPE],
            "text/html; charset=utf-8",
            "{path}"
        );
        assert_eq!(h[header::CACHE_CONTROL], "no-cache", "{path}");
        assert!(h[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .is_ok_and(|c| c.contains("script-src 'self'")));
        assert!(
            !body.contains("<script>") && !body.contains("alert(1)"),
            "{path}: {body}"
        );
        let assets = assets_of(&body);
        assert!(
            assets
                .iter()
                .any(|a| a.starts_with(&format!("/assets/{script}"))),
            "{path}: {assets:?}"
        );
        assert_eq!(
            assets.iter().any(|a| a.contains("echarts")),
            charts,
            "{path}: {assets:?}"
        );
        seen.extend(assets);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 9, "{seen:?}");
    for a in &seen {
        let (s, h, plain) = raw(&app, a, false).await;
        assert_eq!(s, StatusCode::OK, "{a}");
        assert!(h.get(header::CONTENT_ENCODING).is_none(), "{a}");
        assert_eq!(
            h[header::CACHE_CONTROL],
            "public, max-age=31536000, immutable"
        );
        let (s, h, gz) = raw(&app, a, true).await;
        assert_eq!(s, StatusCode::OK, "{a}");
        assert_eq!(h[header::CONTENT_ENCODING], "gzip", "{a}");
        assert_eq!(h[header::VARY], "Accept-Encoding", "{a}");
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(gz.as_slice())
            .read_to_end(&mut out)
            .expect("gzip");
        assert_eq!(out, plain, "{a}");
        assert!(gz.len() < plain.len(), "{a}");
    }
    // A wrong hash, a page that does not exist.
    let (s, _, _) = get_raw(&app, "/assets/app.000000000000.js", &[]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = get_raw(&app, "/container", &[]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = get_raw(&app, "/nope/x", &[]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
