//! The dashboard: one page at `/` and its script and style sheet, embedded in the binary so that
//! it works with no internet. The page and its assets are public; the API calls the page makes
//! carry the bearer token a user entered, and answer for themselves.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");
const ICON_SVG: &str = include_str!("icon.svg");

/// `GET /` and `GET /dashboard/{asset}`: the page, its script, its style sheet and its icon.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/dashboard/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/dashboard/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route(
            "/dashboard/icon.svg",
            get(|| async { asset("image/svg+xml", ICON_SVG) }),
        )
}

/// A static text asset. `no-cache` makes a browser revalidate, so an upgraded server's page is
/// seen at once; the files are small.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    #[tokio::test]
    async fn the_page_links_only_assets_the_router_serves() {
        let app: Router = router();
        let page = app
            .clone()
            .oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        assert!(page.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"));

        // Every local src= and href= of the page answers 200 with a fitting type.
        let links: Vec<&str> = INDEX_HTML
            .split(['"', '\''])
            .filter(|s| s.starts_with("/dashboard/"))
            .collect();
        assert_eq!(links.len(), 3, "{links:?}");
        for link in links {
            let response = app
                .clone()
                .oneshot(Request::get(link).body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{link}");
            let kind = response.headers()[header::CONTENT_TYPE].to_str().unwrap();
            let expected = match link.rsplit('.').next() {
                Some("js") => "text/javascript",
                Some("css") => "text/css",
                _ => "image/svg+xml",
            };
            assert!(kind.starts_with(expected), "{link}: {kind}");
        }
    }
}
