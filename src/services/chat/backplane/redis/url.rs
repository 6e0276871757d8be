//! [`RedisUrl`]: where the cluster's Redis is and how a node logs in to it, read from
//! `--redis`'s URL in the form Redis clients share:
//!
//! ```text
//!   redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]
//!   redis://127.0.0.1                 default user, no password, port 6379, db 0
//!   redis://:s3cret@redis.lan:6380    the default user with a password
//!   redis://alice:s3cret@[::1]:6379/2 the ACL user alice, database 2
//!   rediss://redis.lan:6380           the same over TLS: the certificate must name
//!                                     redis.lan
//! ```
//!
//! USER and PASSWORD are percent-decoded (`%40` is `@`, `%3A` is `:`, `%2F` is `/`,
//! `%25` is `%`), so any password can be written; `+` stays a `+`. A URL is shown
//! ([`fmt::Display`]) with its password masked (`redis://alice:***@host:6379/2`), and
//! no error names the password, so neither reaches a log. Parsing knows nothing of
//! sockets: HOST is resolved by the caller.

use std::fmt;

/// The port when the URL names none.
pub const DEFAULT_PORT: u16 = 6379;

/// A password: its bytes are sent in `AUTH` and never shown (`Debug` prints `***`).
#[derive(Clone, PartialEq, Eq)]
pub struct Password(Vec<u8>);

impl Password {
    /// A password of these bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Password {
        Password(bytes.into())
    }

    /// The bytes to send in `AUTH`.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// A `redis://` or `rediss://` URL, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// `rediss://`: the connection speaks TLS, and Redis's certificate must name HOST.
    pub tls: bool,
    /// The host name or address (an IPv6 address without its brackets).
    pub host: String,
    /// The port ([`DEFAULT_PORT`] when the URL names none).
    pub port: u16,
    /// The ACL user to log in as; `None` is Redis's `default` user.
    pub user: Option<String>,
    /// The password; `None` when the URL has none (or an empty one).
    pub password: Option<Password>,
    /// The database the node's keys go to (`SELECT`); 0 when the URL names none.
    pub db: u32,
}

/// Why a URL is not a usable `redis://` URL. Never holds the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlError {
    /// It begins with neither `redis://` nor `rediss://` (what it begins with instead,
    /// if a scheme).
    Scheme(String),
    /// No host after the scheme (and the user and password).
    NoHost,
    /// The port is not a number from 1 to 65535.
    Port(String),
    /// The path is not a database number (0 to 4294967295).
    Db(String),
    /// A `?query` or `#fragment`, which no setting here reads.
    Query,
    /// A `%` in the user or password not followed by two hex digits, or a user name
    /// that is not UTF-8 once decoded.
    Escape {
        /// `"user"` or `"password"`.
        part: &'static str,
    },
    /// An IPv6 address opened with `[` and not closed.
    Bracket,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let form = "redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB]";
        match self {
            UrlError::Scheme(scheme) if !scheme.is_empty() => {
                write!(f, "{scheme}:// is not a Redis URL: expected {form}")
            }
            UrlError::Scheme(_) => write!(f, "not a Redis URL: expected {form}"),
            UrlError::NoHost => write!(f, "no host in the URL: expected {form}"),
            UrlError::Port(port) => {
                write!(f, "port '{port}' is not a number from 1 to 65535")
            }
            UrlError::Db(db) => write!(
                f,
                "database '{db}' is not a number from 0 to {} (the URL's path is /DB)",
                u32::MAX
            ),
            UrlError::Query => {
                write!(f, "a ?query or #fragment is not supported: expected {form}")
            }
            UrlError::Escape { part } => write!(
                f,
                "the {part} has a '%' not followed by two hex digits (write '%' as %25){}",
                if *part == "user" {
                    ", or is not UTF-8"
                } else {
                    ""
                }
            ),
            UrlError::Bracket => f.write_str("an IPv6 host opened with '[' is not closed"),
        }
    }
}

impl std::error::Error for UrlError {}

impl RedisUrl {
    /// Parses a `redis://` URL, or a `rediss://` one (TLS).
    ///
    /// ```
    /// use switchboard::services::chat::redis::url::{Password, RedisUrl};
    ///
    /// let url = RedisUrl::parse("redis://alice:p%40ss@cache.lan/2").unwrap();
    /// assert_eq!((url.host.as_str(), url.port, url.db), ("cache.lan", 6379, 2));
    /// assert_eq!(url.user.as_deref(), Some("alice"));
    /// assert_eq!(url.password, Some(Password::new("p@ss")));
    /// assert_eq!(url.to_string(), "redis://alice:***@cache.lan:6379/2");
    /// ```
    pub fn parse(url: &str) -> Result<RedisUrl, UrlError> {
        let (tls, rest) = match url.split_once("://") {
            Some(("redis", rest)) => (false, rest),
            Some(("rediss", rest)) => (true, rest),
            Some((scheme, _)) => return Err(UrlError::Scheme(scheme.to_owned())),
            None => return Err(UrlError::Scheme(String::new())),
        };
        if rest.contains(['?', '#']) {
            return Err(UrlError::Query);
        }
        // The last '@' ends the user and password, so one written unescaped in the
        // password still works (the host, port and database never hold one).
        let (userinfo, location) = match rest.rsplit_once('@') {
            Some((userinfo, location)) => (Some(userinfo), location),
            None => (None, rest),
        };
        let (user, password) = userinfo
            .map(split_userinfo)
            .transpose()?
            .unwrap_or_default();
        let (hostport, db) = match location.split_once('/') {
            Some((hostport, db)) => (hostport, parse_db(db)?),
            None => (location, 0),
        };
        let (host, port) = split_host_port(hostport)?;
        Ok(RedisUrl {
            tls,
            host,
            port,
            user,
            password,
            db,
        })
    }
}

/// Shows the URL with the password masked: `redis://alice:***@host:6379/2`.
impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.tls { "rediss://" } else { "redis://" })?;
        if let Some(user) = &self.user {
            f.write_str(&percent_encode(user))?;
        }
        if self.password.is_some() {
            f.write_str(":***")?;
        }
        if self.user.is_some() || self.password.is_some() {
            f.write_str("@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)?;
        } else {
            write!(f, "{}:{}", self.host, self.port)?;
        }
        if self.db != 0 {
            write!(f, "/{}", self.db)?;
        }
        Ok(())
    }
}

/// `USER:PASSWORD`, `:PASSWORD` or `USER`, each decoded; empty parts are absent.
fn split_userinfo(userinfo: &str) -> Result<(Option<String>, Option<Password>), UrlError> {
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let user = percent_decode(user).ok_or(UrlError::Escape { part: "user" })?;
    let user = String::from_utf8(user).map_err(|_| UrlError::Escape { part: "user" })?;
    let password = percent_decode(password).ok_or(UrlError::Escape { part: "password" })?;
    Ok((
        Some(user).filter(|u| !u.is_empty()),
        Some(Password(password)).filter(|p| !p.0.is_empty()),
    ))
}

/// `HOST`, `HOST:PORT`, `[V6]` or `[V6]:PORT`.
fn split_host_port(hostport: &str) -> Result<(String, u16), UrlError> {
    let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').ok_or(UrlError::Bracket)?;
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err(UrlError::Port(after.to_owned())),
        }
    } else {
        match hostport.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(UrlError::NoHost);
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0 && port.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| UrlError::Port(port.to_owned()))?,
    };
    Ok((host.to_owned(), port))
}

/// The path after the host: empty for database 0, else its number.
fn parse_db(path: &str) -> Result<u32, UrlError> {
    if path.is_empty() {
        return Ok(0);
    }
    // Digits only: `u32::from_str` would also take a leading '+'.
    let digits = !path.is_empty() && path.bytes().all(|b| b.is_ascii_digit());
    path.parse::<u32>()
        .ok()
        .filter(|_| digits)
        .ok_or_else(|| UrlError::Db(path.to_owned()))
}

/// `%XX` to the byte XX; `None` when a `%` is not followed by two hex digits.
fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The user name as a URL holds it: the characters that would end it (and controls
/// and spaces) escaped.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | ':' | '@' | '/' | '?' | '#' | '[' | ']' | ' ') || c.is_ascii_control()
        {
            out.push_str(&format!("%{:02X}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(host: &str, port: u16, user: Option<&str>, password: Option<&str>, db: u32) -> RedisUrl {
        RedisUrl {
            tls: false,
            host: host.into(),
            port,
            user: user.map(Into::into),
            password: password.map(Password::new),
            db,
        }
    }

    #[test]
    fn golden_urls() {
        let cases = [
            ("redis://127.0.0.1", url("127.0.0.1", 6379, None, None, 0)),
            ("redis://127.0.0.1/", url("127.0.0.1", 6379, None, None, 0)),
            ("redis://h:6380", url("h", 6380, None, None, 0)),
            ("redis://h:6380/0", url("h", 6380, None, None, 0)),
            ("redis://h/15", url("h", 6379, None, None, 15)),
            ("redis://h/4294967295", url("h", 6379, None, None, u32::MAX)),
            ("redis://:pw@h", url("h", 6379, None, Some("pw"), 0)),
            ("redis://:@h", url("h", 6379, None, None, 0)),
            ("redis://@h", url("h", 6379, None, None, 0)),
            ("redis://alice@h", url("h", 6379, Some("alice"), None, 0)),
            (
                "redis://alice:apass@h:1/3",
                url("h", 1, Some("alice"), Some("apass"), 3),
            ),
            (
                "redis://default:pw@h",
                url("h", 6379, Some("default"), Some("pw"), 0),
            ),
            // Percent-escapes in both parts; '+' is not a space.
            (
                "redis://al%69ce:p%40ss%3Aw%2Frd%25+x@h",
                url("h", 6379, Some("alice"), Some("p@ss:w/rd%+x"), 0),
            ),
            // An '@' or '/' left unescaped in the password.
            (
                "redis://u:p@ss/w@h:7/2",
                url("h", 7, Some("u"), Some("p@ss/w"), 2),
            ),
            // Only the first ':' parts the user from the password.
            ("redis://u:a:b@h", url("h", 6379, Some("u"), Some("a:b"), 0)),
            ("redis://[::1]", url("::1", 6379, None, None, 0)),
            (
                "redis://:pw@[::1]:6390/1",
                url("::1", 6390, None, Some("pw"), 1),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(RedisUrl::parse(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn rediss_is_the_same_url_over_tls() {
        let tls = |text: &str| {
            let parsed = RedisUrl::parse(text).unwrap();
            assert!(parsed.tls, "{text}");
            RedisUrl {
                tls: false,
                ..parsed
            }
        };
        assert_eq!(tls("rediss://h"), url("h", 6379, None, None, 0));
        assert_eq!(
            tls("rediss://alice:p%40ss@10.0.0.7:6380/2"),
            url("10.0.0.7", 6380, Some("alice"), Some("p@ss"), 2)
        );
        assert_eq!(tls("rediss://[::1]:7"), url("::1", 7, None, None, 0));
        assert!(!RedisUrl::parse("redis://h").unwrap().tls);
        let shown = RedisUrl::parse("rediss://:SECRET@h:6380/1")
            .unwrap()
            .to_string();
        assert_eq!(shown, "rediss://:***@h:6380/1");
        assert_eq!(RedisUrl::parse("rediss://:pw@"), Err(UrlError::NoHost));
    }

    #[test]
    fn a_password_may_be_any_bytes() {
        let parsed = RedisUrl::parse("redis://:%00%FF%e9@h").unwrap();
        assert_eq!(parsed.password, Some(Password::new(vec![0, 0xff, 0xe9])));
    }

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
        let cases = [
            ("127.0.0.1:6379", UrlError::Scheme(String::new())),
            ("http://h", UrlError::Scheme("http".into())),
            ("redis+tls://h", UrlError::Scheme("redis+tls".into())),
            ("redis://", UrlError::NoHost),
            ("redis://:pw@", UrlError::NoHost),
            ("redis://:6379", UrlError::NoHost),
            ("redis://h:", UrlError::Port(String::new())),
            ("redis://h:0", UrlError::Port("0".into())),
            ("redis://h:65536", UrlError::Port("65536".into())),
            ("redis://h:+1", UrlError::Port("+1".into())),
            ("redis://h:port", UrlError::Port("port".into())),
            ("redis://h:1:2", UrlError::Port("1:2".into())),
            ("redis://h/x", UrlError::Db("x".into())),
            ("redis://h/-1", UrlError::Db("-1".into())),
            ("redis://h/+1", UrlError::Db("+1".into())),
            ("redis://h/4294967296", UrlError::Db("4294967296".into())),
            ("redis://h/1/2", UrlError::Db("1/2".into())),
            ("redis://h?db=1", UrlError::Query),
            ("redis://h#x", UrlError::Query),
            ("redis://:p%4@h", UrlError::Escape { part: "password" }),
            ("redis://:p%zz@h", UrlError::Escape { part: "password" }),
            ("redis://%@h", UrlError::Escape { part: "user" }),
            ("redis://%FF@h", UrlError::Escape { part: "user" }),
            ("redis://[::1", UrlError::Bracket),
            ("redis://[::1]6379", UrlError::Port("6379".into())),
            ("redis://[]:1", UrlError::NoHost),
        ];
        for (text, want) in cases {
            assert_eq!(RedisUrl::parse(text), Err(want), "{text}");
        }
    }

    #[test]
    fn no_error_and_no_display_shows_the_password() {
        for text in [
            "redis://u:SECRET@h:0",
            "redis://u:SECRET@h/x",
            "redis://u:SECRET%zz@h",
            "redis://u:SECRET@[::1",
            "redis://u:SECRET@",
            "redis://u:SECRET@h?x",
        ] {
            let err = RedisUrl::parse(text).unwrap_err();
            assert!(!err.to_string().contains("SECRET"), "{text}: {err}");
        }
        let parsed = RedisUrl::parse("redis://u:SECRET@h").unwrap();
        assert!(!parsed.to_string().contains("SECRET"));
        assert!(!format!("{parsed:?}").contains("SECRET"));
    }

    #[test]
    fn display_masks_the_password() {
        let shown = |text: &str| RedisUrl::parse(text).unwrap().to_string();
        assert_eq!(shown("redis://h"), "redis://h:6379");
        assert_eq!(shown("redis://:pw@h:1"), "redis://:***@h:1");
        assert_eq!(shown("redis://alice:pw@h/2"), "redis://alice:***@h:6379/2");
        assert_eq!(shown("redis://alice@h"), "redis://alice@h:6379");
        assert_eq!(
            shown("redis://a%40b:pw@[::1]:7"),
            "redis://a%40b:***@[::1]:7"
        );
        assert_eq!(shown("redis://%C3%A9t%C3%A9@h"), "redis://été@h:6379");
        // What is shown parses back to the same URL, the password aside.
        let back = RedisUrl::parse(&shown("redis://a%3Ab%25:pw@h/9")).unwrap();
        assert_eq!(back.user.as_deref(), Some("a:b%"));
        assert_eq!(back.db, 9);
    }
}
