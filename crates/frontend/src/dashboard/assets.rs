//! The page, its script and its style sheet, built into the binary: nothing to install, build
//! or fetch at run time. Plain HTML, CSS and JavaScript with SVG charts, no library; the three
//! files weigh about 30 KB together (uncompressed), see the size test below.
//!
//! The page's policy allows only its own script, style, connections and `data:` images, so an
//! injected script or style could not run even if a stock name carried one (the script also
//! inserts every value as text, never as HTML).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::Dashboard;

const INDEX_HTML: &str = include_str!("../../assets/dashboard/index.html");
const APP_JS: &str = include_str!("../../assets/dashboard/app.js");
const APP_CSS: &str = include_str!("../../assets/dashboard/app.css");

/// The page's content security policy.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// Total size the three files may grow to before the page stops being small.
pub const ASSETS_LEN_MAX: usize = 48 * 1024;

/// The page as served: with demonstration controls its body carries the `demo` class from the
/// start, so their column is laid out before the first paint instead of appearing later.
#[must_use]
pub fn index_html(demo: bool) -> Arc<str> {
    if demo {
        INDEX_HTML
            .replacen("<body>", "<body class=\"demo\">", 1)
            .into()
    } else {
        INDEX_HTML.into()
    }
}

fn asset(body: impl IntoResponse, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // The files change only with the binary; revalidating costs one small request.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        ],
        body,
    )
        .into_response()
}

/// `GET /`.
pub async fn index_get(State(dashboard): State<Dashboard>) -> Response {
    asset(
        dashboard.inner.index_html.to_string(),
        "text/html; charset=utf-8",
    )
}

/// `GET /dashboard/app.js`.
pub async fn script_get() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8")
}

/// `GET /dashboard/app.css`.
pub async fn style_get() -> Response {
    asset(APP_CSS, "text/css; charset=utf-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_stays_small() {
        let total = INDEX_HTML.len() + APP_JS.len() + APP_CSS.len();
        assert!(total <= ASSETS_LEN_MAX, "assets weigh {total} bytes");
    }

    #[test]
    fn demonstration_controls_are_laid_out_from_the_start() {
        assert!(index_html(true).contains("<body class=\"demo\">"));
        assert!(index_html(false).contains("<body>"));
    }

    #[test]
    fn the_page_loads_only_its_own_files() {
        assert!(INDEX_HTML.contains(r#"src="/dashboard/app.js""#));
        assert!(INDEX_HTML.contains(r#"href="/dashboard/app.css""#));
        for inline in ["<script>", "style=\"", "onclick="] {
            assert!(
                !INDEX_HTML.contains(inline),
                "{inline} would be refused by the page's policy"
            );
        }
        assert!(
            !APP_JS.contains("innerHTML"),
            "values go in as text, never as HTML"
        );
    }
}
