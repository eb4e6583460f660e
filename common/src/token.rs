//! Bearer tokens for the coordinator's API, as configuration holds them:
//! never shown (`Debug` and `Display` print `***`), compared in constant
//! time, and checked at start-up with a message that names the variable
//! but never the value.
//!
//! Parsing never fails, on purpose: a parse error in the argument parser
//! would echo the rejected value, secret included. [`Token::check`] says
//! what is wrong instead.

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

use subtle::ConstantTimeEq;

/// A secret bearer token from configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

/// Why a configured token is unusable.
#[derive(Debug, thiserror::Error)]
pub enum InvalidToken {
    /// Nothing configured.
    #[error("a token must not be empty")]
    Empty,
    /// A character a client could not send in an `Authorization` header
    /// (a trailing newline from `echo` or a secret file is the usual one).
    #[error(
        "a token may hold only visible ASCII characters (no spaces, newlines or other control characters)"
    )]
    Characters,
}

impl FromStr for Token {
    type Err = Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Token {
    /// Whether the token can be sent and checked: not empty, visible ASCII.
    pub fn check(&self) -> Result<(), InvalidToken> {
        if self.0.is_empty() {
            return Err(InvalidToken::Empty);
        }
        if !self.0.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidToken::Characters);
        }
        Ok(())
    }

    /// Whether `presented` is this token, in time independent of where
    /// they differ (only a difference in length returns early).
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }

    /// The secret itself, for a client that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(s: &str) -> Token {
        s.parse().unwrap_or_else(|e: Infallible| match e {})
    }

    #[test]
    fn tokens_never_print() {
        let t = token("hunter2hunter2");
        assert_eq!(format!("{t:?}"), "Token(***)");
        assert_eq!(format!("{t}"), "***");
        let err = token("hunter2\n").check().expect_err("newline");
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn tokens_must_be_sendable() {
        assert!(token("").check().is_err());
        assert!(token("a b").check().is_err());
        assert!(token("a\nb").check().is_err());
        assert!(token("é").check().is_err());
        assert!(token("abc-DEF_123.~+/=").check().is_ok());
    }

    #[test]
    fn matching_is_exact() {
        let t = token("abcdef");
        assert!(t.matches(b"abcdef"));
        assert!(!t.matches(b"abcdeg"));
        assert!(!t.matches(b"abcde"));
        assert!(!t.matches(b""));
    }
}
