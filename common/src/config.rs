//! Settings every binary shares, and how they are shown in messages.

/// The broker URL used when none is configured: this machine's RabbitMQ.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// The database URL used when none is configured: this machine's Postgres.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/tributary";
/// The namespace used when none is configured.
pub const DEFAULT_NAMESPACE: &str = "tributary";
/// Where the coordinator listens, and where workers and the CLI find it.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";

/// `url` with any password replaced by `***`, for logs and error messages.
pub fn mask_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let masked = match userinfo.find(':') {
        Some(colon) => format!("{}:***", &userinfo[..colon]),
        None => userinfo.to_owned(),
    };
    format!("{}{}{}", &url[..scheme_end + 3], masked, &rest[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            mask_url("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            mask_url("postgres://postgres@h/db"),
            "postgres://postgres@h/db"
        );
        assert_eq!(mask_url("postgres://h/db?x=a@b"), "postgres://h/db?x=a@b");
        assert_eq!(mask_url("not a url"), "not a url");
    }
}
