//! Settings every binary shares, and how they are shown in messages.

use url::{Position, Url};

/// The broker URL used when none is configured: this machine's RabbitMQ.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// The database URL used when none is configured: this machine's Postgres.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/tributary";
/// The namespace used when none is configured.
pub const DEFAULT_NAMESPACE: &str = "tributary";
/// Where the coordinator listens, and where workers and the CLI find it.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";

/// What replaces a secret in a shown URL.
const MASK: &str = "***";

/// `url` with any password replaced by `***`, for logs and error messages.
///
/// The URL is read with a real URL parser (the one sqlx and lapin use), so
/// percent-encoded passwords, IPv6 hosts and ports are handled as the
/// client libraries see them. Query parameters that carry secrets
/// (`password=`, `sslpassword=`, any key naming a password, secret or
/// token) are masked too.
///
/// Whenever the text does not read as one unambiguous URL, it errs on the
/// side of hiding: if it does not parse, or if an `@` remains after the
/// host (a password holding a raw `/`, `?` or `#` makes a parser end the
/// authority early and spill the rest into the path), everything from the
/// scheme's `//` up to the **last** `@` is shown as `***`. That can hide a
/// harmless part of an odd URL; it never shows a possible password.
pub fn mask_url(url: &str) -> String {
    if !url.contains('@') {
        // No userinfo is possible; only the query can carry a secret.
        return mask_query_secrets(url);
    }
    match Url::parse(url) {
        // Every `@` was taken by the authority: the parse is unambiguous.
        Ok(mut parsed) if !parsed[Position::BeforeHost..].contains('@') => {
            if parsed.password().is_some() && parsed.set_password(Some(MASK)).is_err() {
                return mask_up_to_last_at(url);
            }
            mask_query_secrets(parsed.as_str())
        }
        _ => mask_up_to_last_at(url),
    }
}

/// The fallback of [`mask_url`]: everything between the scheme's `//` (or
/// the start, without one) and the last `@` becomes `***`.
fn mask_up_to_last_at(url: &str) -> String {
    let start = url.find("//").map_or(0, |i| i + 2);
    match url[start..].rfind('@') {
        Some(at) => {
            let rest = &url[start + at..];
            format!("{}{MASK}{}", &url[..start], mask_query_secrets(rest))
        }
        None => mask_query_secrets(url),
    }
}

/// Whether a query key names a secret (`password`, `sslpassword`, …).
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "passwd", "secret", "token"]
        .iter()
        .any(|word| key.contains(word))
}

/// `text` with the values of secret query parameters replaced by `***`.
/// The query is whatever follows the first `?`, up to a `#`.
fn mask_query_secrets(text: &str) -> String {
    let Some(q) = text.find('?') else {
        return text.to_owned();
    };
    let (head, rest) = text.split_at(q + 1);
    let (query, fragment) = rest.split_at(rest.find('#').unwrap_or(rest.len()));
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| {
            let raw_key = pair.split('=').next().unwrap_or_default();
            // Decode the key as the client library will (`pass%77ord` is a password).
            let key: String = url::form_urlencoded::parse(raw_key.as_bytes())
                .map(|(k, _)| k.into_owned())
                .collect();
            if pair.contains('=') && is_secret_key(&key) {
                format!("{raw_key}={MASK}")
            } else {
                pair.to_owned()
            }
        })
        .collect();
    format!("{head}{}{fragment}", pairs.join("&"))
}

/// `error` and every cause under it, joined with `: `, for one line of a
/// message. Give it an error that does not quote secrets (for reqwest,
/// `error.without_url()`, then mask the URL yourself).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The secret parts of the test URLs: none may appear in any output.
    const SECRETS: [&str; 5] = ["s3cret", "pa/ss", "p%2Fss", "pa#ss", "pa?ss"];

    fn masked(url: &str) -> String {
        let out = mask_url(url);
        for secret in SECRETS {
            assert!(!out.contains(secret), "{url:?} shown as {out:?}");
        }
        out
    }

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            masked("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            masked("postgres://app:s3cret@db.internal:5432/tributary"),
            "postgres://app:***@db.internal:5432/tributary"
        );
        assert_eq!(
            masked("postgres://postgres@h/db"),
            "postgres://postgres@h/db"
        );
        assert_eq!(masked("not a url"), "not a url");
        assert_eq!(masked("http://127.0.0.1:7070"), "http://127.0.0.1:7070");
    }

    #[test]
    fn percent_encoded_passwords_are_masked() {
        assert_eq!(
            masked("postgres://app:p%2Fss%40%23%3F@h:5432/db"),
            "postgres://app:***@h:5432/db"
        );
        assert_eq!(
            masked("amqps://us%40er:p%2Fss@rabbit:5671/%2f"),
            "amqps://us%40er:***@rabbit:5671/%2f"
        );
    }

    #[test]
    fn raw_delimiters_in_the_password_hide_everything_up_to_the_last_at() {
        // A raw `/`, `#` or `?` ends the authority early: the URL either
        // does not parse (port "pa") or parses into a different host.
        for url in [
            "postgres://app:pa/ss@h:5432/db",
            "postgres://app:pa#ss@h:5432/db",
            "postgres://app:pa?ss@h:5432/db",
            "amqp://guest:1234/pa/ss@h:5672/%2f",
            "amqp://guest:1234?s3cret@h:5672/%2f",
            "amqp://guest:1234#s3cret@h:5672/%2f",
        ] {
            let out = masked(url);
            assert!(out.ends_with("***@h:5432/db") || out.ends_with("***@h:5672/%2f"));
            assert!(out.starts_with("postgres://***@") || out.starts_with("amqp://***@"));
        }
        // Raw `@` in the password: the last `@` of the authority ends it.
        assert_eq!(
            masked("postgres://app:s3@cret@h/db"),
            "postgres://app:***@h/db"
        );
        // An `@` after the host may be the tail of a password with a raw `/`.
        assert_eq!(
            masked("postgres://app:p@ss/s3cret@h/db"),
            "postgres://***@h/db"
        );
        assert_eq!(masked("postgres://h/db?x=a@b"), "postgres://***@b");
    }

    #[test]
    fn ipv6_hosts_keep_their_brackets() {
        assert_eq!(
            masked("postgres://app:s3cret@[::1]:5432/db"),
            "postgres://app:***@[::1]:5432/db"
        );
        assert_eq!(
            masked("amqps://guest:s3cret@[2001:db8::7]/%2f"),
            "amqps://guest:***@[2001:db8::7]/%2f"
        );
    }

    #[test]
    fn unparsable_urls_never_show_the_userinfo() {
        assert_eq!(
            masked("postgres://app:s3cret@h:99999/db"),
            "postgres://***@h:99999/db"
        );
        assert_eq!(masked("app:s3cret@h"), "***@h");
        assert_eq!(masked("::s3cret@"), "***@");
        assert_eq!(masked("//app:s3cret@h"), "//***@h");
        assert_eq!(
            masked("postgres://app:s3cret@[::1/db"),
            "postgres://***@[::1/db"
        );
    }

    #[test]
    fn secret_query_parameters_are_masked() {
        assert_eq!(
            masked("postgres://h/db?sslmode=require&password=s3cret&application_name=x"),
            "postgres://h/db?sslmode=require&password=***&application_name=x"
        );
        assert_eq!(
            masked("postgres://u@h/db?sslpassword=s3cret#frag"),
            "postgres://u@h/db?sslpassword=***#frag"
        );
        assert_eq!(
            masked("postgres://u@h/db?pass%77ord=s3cret"),
            "postgres://u@h/db?pass%77ord=***"
        );
        // The fallback masks the query too.
        assert_eq!(
            masked("postgres://u:pa/ss@h/db?password=s3cret"),
            "postgres://***@h/db?password=***"
        );
    }

    #[test]
    fn tls_urls_are_shown_whole() {
        assert_eq!(
            masked("postgres://app:s3cret@db:5432/t?sslmode=verify-full&sslrootcert=/etc/ca.pem"),
            "postgres://app:***@db:5432/t?sslmode=verify-full&sslrootcert=/etc/ca.pem"
        );
        assert_eq!(
            masked("amqps://guest:s3cret@rabbit.internal:5671/%2f?heartbeat=10"),
            "amqps://guest:***@rabbit.internal:5671/%2f?heartbeat=10"
        );
        assert_eq!(masked("https://coord:7443"), "https://coord:7443");
    }
}
