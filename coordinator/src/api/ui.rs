//! The dashboard at `/ui/`: a few static files embedded in the binary
//! (`coordinator/ui/`), served without a token; the page asks for one and
//! sends it on every API call it makes, so the API's rules apply as to any
//! client.
//!
//! ```text
//!  GET /ui            ─► 308 /ui/
//!  GET /ui/           ─► index.html: no-cache, ETag; names the assets by hash
//!  GET /ui/assets/app.<hash>.js|css ─► immutable for a year, gzip when accepted
//! ```
//!
//! Cache-busting: an asset's name carries a hash of its bytes, computed at
//! compile time, so a new build is a new name and the old one can be cached
//! forever. Compression: each asset sits beside its gzip, made by
//! `scripts/ui-assets` (CI checks both match), so nothing is compressed at
//! run time and no compression crate is needed.
//!
//! Every answer carries a Content-Security-Policy that allows only this
//! origin's scripts, styles and requests: the page builds its DOM from text
//! (never HTML from data), and the policy is the second line of defence.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use super::ApiState;
use super::error::bad;

/// Where the dashboard lives; the auth layer leaves it open
/// ([`crate::auth::is_open`]).
pub const PREFIX: &str = "/ui";

/// One embedded file.
struct Asset {
    /// Its name in `coordinator/ui/` (and in a template's `{{name}}`).
    name: &'static str,
    /// Its content type.
    mime: &'static str,
    /// Its bytes.
    body: &'static [u8],
    /// The same, gzipped by `scripts/ui-assets`.
    gzip: &'static [u8],
    /// A hash of `body`, in hex: part of the served name.
    hash: &'static str,
}

/// FNV-1a, 64 bits: at compile time, so the asset names are constants.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

/// `hash` as 16 hex digits, at compile time.
const fn hex(hash: u64) -> [u8; 16] {
    let digits = b"0123456789abcdef";
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        out[i] = digits[((hash >> (60 - 4 * i)) & 0xf) as usize];
        i += 1;
    }
    out
}

macro_rules! asset {
    ($name:literal, $mime:literal) => {{
        const BODY: &[u8] = include_bytes!(concat!("../../ui/", $name));
        const HEX: [u8; 16] = hex(fnv1a(BODY));
        Asset {
            name: $name,
            mime: $mime,
            body: BODY,
            gzip: include_bytes!(concat!("../../ui/", $name, ".gz")),
            hash: match std::str::from_utf8(&HEX) {
                Ok(s) => s,
                Err(_) => panic!("hex digits are ASCII"),
            },
        }
    }};
}

static ASSETS: [Asset; 2] = [
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
];

/// The page's template: `{{app.js}}` becomes the asset's hashed name.
const INDEX: &str = include_str!("../../ui/index.html");

impl Asset {
    /// The name it is served under: `app.<hash>.js`.
    fn served_name(&self) -> String {
        match self.name.rsplit_once('.') {
            Some((stem, ext)) => format!("{stem}.{}.{ext}", self.hash),
            None => format!("{}.{}", self.name, self.hash),
        }
    }
}

/// The page, with the assets' hashed names filled in, and its ETag.
static PAGE: LazyLock<(String, String)> = LazyLock::new(|| {
    let page = ASSETS.iter().fold(INDEX.to_owned(), |page, a| {
        page.replace(
            &format!("{{{{{}}}}}", a.name),
            &format!("{PREFIX}/assets/{}", a.served_name()),
        )
    });
    let etag = format!(
        "\"{}\"",
        std::str::from_utf8(&hex(fnv1a(page.as_bytes()))).unwrap_or("0")
    );
    (page, etag)
});

/// What the page may load: only this origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The dashboard's routes, to merge into the API's router (inside its
/// layers). They are not API operations, so the OpenAPI document leaves
/// them out.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route(PREFIX, get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(index))
        .route("/ui/assets/{name}", get(asset))
}

fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

async fn index(headers: HeaderMap) -> Response {
    let (page, etag) = &*PAGE;
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            page.clone(),
        )
            .into_response()
    };
    let mut response = secure(response);
    let h = response.headers_mut();
    // Revalidated each time (a 304 while unchanged): it names the assets.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    response
}

/// Whether the client takes gzip (`Accept-Encoding`, a `q=0` refuses).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    let Some(a) = ASSETS.iter().find(|a| a.served_name() == name) else {
        return bad(
            StatusCode::NOT_FOUND,
            format!("no asset {name:?}: reload /ui/ for the current names"),
        )
        .into_response();
    };
    let gzip = accepts_gzip(&headers);
    let body = if gzip { a.gzip } else { a.body };
    let mut response = secure(([(header::CONTENT_TYPE, a.mime)], body).into_response());
    let h = response.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if gzip {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_every_asset_by_its_hash() {
        let (page, etag) = &*PAGE;
        assert!(!page.contains("{{"), "a placeholder left: {page}");
        for a in &ASSETS {
            let name = a.served_name();
            assert!(page.contains(&format!("/ui/assets/{name}")), "{name}");
            assert_eq!(a.hash.len(), 16);
            assert!(name.contains(a.hash));
        }
        assert!(etag.starts_with('"') && etag.ends_with('"'));
    }

    #[test]
    fn a_change_of_one_byte_is_a_new_name() {
        assert_ne!(fnv1a(b"app"), fnv1a(b"apq"));
        assert_eq!(&hex(0x0123_4567_89ab_cdef), b"0123456789abcdef");
    }

    #[test]
    fn every_gzip_is_a_gzip() {
        for a in &ASSETS {
            // The magic number and "deflate": scripts/ui-assets checks the
            // contents match.
            assert_eq!(&a.gzip[..3], &[0x1f, 0x8b, 8], "{}", a.name);
            assert!(a.gzip.len() < a.body.len(), "{} compresses", a.name);
        }
    }

    #[test]
    fn gzip_is_sent_only_to_clients_that_take_it() {
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(v));
            accepts_gzip(&h)
        };
        assert!(with("gzip, deflate, br"));
        assert!(with("br;q=1.0, GZIP;q=0.5"));
        assert!(with("*"));
        assert!(!with("gzip;q=0"));
        assert!(!with("br, identity"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
