//! Static files built into the binary: the browser SDK under `/sdk/` and the agent console
//! under `/console/`.
//!
//! The files are embedded at compile time (`include_bytes!`), so a hub serves exactly the
//! SDK and console it was built with and needs nothing beside the binary. None of these
//! routes needs credentials (PROTOCOL.md section 6): the console asks for a key itself.
//! This module owns only the table of files and their headers; it knows nothing of the hub.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

/// One embedded file and how it is served.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// The SDK is loaded by pages of other origins (`<script type="module">` needs CORS);
    /// the console is only for the hub's own origin.
    cross_origin: bool,
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// A file of console/ served under /console/: the console's modules import one another by
/// these paths, so a new module needs only its line in the table.
macro_rules! console_file {
    ($file:literal, $content_type:expr) => {
        Asset {
            path: concat!("/console/", $file),
            content_type: $content_type,
            body: include_bytes!(concat!("../../console/", $file)),
            cross_origin: false,
        }
    };
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/sdk/actionhub.mjs",
        content_type: JS,
        body: include_bytes!("../../clients/js/dist/actionhub.mjs"),
        cross_origin: true,
    },
    Asset {
        path: "/sdk/actionhub.js",
        content_type: JS,
        body: include_bytes!("../../clients/js/dist/actionhub.js"),
        cross_origin: true,
    },
    Asset {
        path: "/console/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../console/index.html"),
        cross_origin: false,
    },
    console_file!("app.js", JS),
    console_file!("conn.js", JS),
    console_file!("model.js", JS),
    console_file!("util.js", JS),
    console_file!("customers.js", JS),
    console_file!("visitor.js", JS),
    console_file!("funnels.js", JS),
    console_file!("trends.js", JS),
    console_file!("directory.js", JS),
    console_file!("ops.js", JS),
    console_file!("style.css", CSS),
    // uPlot, copied from its npm package by clients/js/scripts/build.mjs.
    console_file!("vendor/uplot.min.js", JS),
    console_file!("vendor/uplot.min.css", CSS),
];

/// The console may talk only to the hub that served it, and may not be framed.
const CONSOLE_POLICY: &str = "default-src 'self'; connect-src 'self' ws: wss:; \
     img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The routes of every embedded file, for any router state.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut router = Router::new().route(
        "/console",
        get(|| async { Redirect::permanent("/console/") }),
    );
    for asset in ASSETS {
        router = router.route(asset.path, get(move || async move { respond(asset) }));
    }
    router
}

fn respond(asset: &'static Asset) -> Response {
    let mut response = (StatusCode::OK, asset.body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    // Revalidate every time: a rebuilt hub serves a new SDK at the same address.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if asset.cross_origin {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
    } else {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONSOLE_POLICY),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_present_unique_and_typed_by_its_extension() {
        let mut seen = std::collections::HashSet::new();
        for asset in ASSETS {
            assert!(seen.insert(asset.path), "{} listed twice", asset.path);
            assert!(!asset.body.is_empty(), "{} is empty", asset.path);
            let expected = match asset.path.rsplit('.').next() {
                Some("js" | "mjs") => JS,
                Some("css") => CSS,
                _ => "text/html; charset=utf-8",
            };
            assert_eq!(asset.content_type, expected, "{}", asset.path);
        }
    }

    #[test]
    fn every_file_the_console_loads_is_in_the_table() {
        // A module or file missing from the table is a 404 only a browser would notice.
        let served: std::collections::HashSet<_> = ASSETS.iter().map(|a| a.path).collect();
        for asset in ASSETS.iter().filter(|a| a.path.starts_with("/console/")) {
            let text = std::str::from_utf8(asset.body).expect("utf-8");
            for quote in ["from './", "src=\"", "href=\""] {
                for part in text.split(quote).skip(1) {
                    let name = part.split(['\'', '"']).next().unwrap_or_default();
                    if name.starts_with('#') || name.contains(':') || name.is_empty() {
                        continue;
                    }
                    let path = format!("/console/{}", name.trim_start_matches("./"));
                    assert!(
                        served.contains(path.as_str()),
                        "{} loads {path}, not served",
                        asset.path
                    );
                }
            }
        }
    }

    #[test]
    fn the_classic_sdk_sets_window_action_hub_and_the_module_exports_it() {
        let classic = std::str::from_utf8(ASSETS[1].body).expect("utf-8");
        assert!(classic.contains("window.ActionHub="));
        let module = std::str::from_utf8(ASSETS[0].body).expect("utf-8");
        assert!(module.contains("export{"));
    }
}
