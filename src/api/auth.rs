//! Who may call what. The operator hands the server bearer tokens, each with a scope: `read`
//! (inference, attacks, evaluations, reports, data listing) or `admin` (everything, including
//! uploading and removing models and data sets). Every route goes through [`authorize`], one
//! middleware that looks the route up in [`access`]; a route missing from that table needs the
//! admin scope, so a new route is closed until someone opens it.
//!
//! With no token configured every route is open; the server then refuses to listen on anything
//! but a loopback address unless told otherwise (see `serve`).

use std::fmt;
use std::path::Path;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::{ApiError, AppState};

/// Shortest token the server accepts: a guessable token is no token.
pub const MIN_TOKEN_LEN: usize = 16;

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Admin,
}

/// What a route demands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Health, the docs, the dashboard's static files: no token.
    Public,
    Needs(Scope),
}

/// One operator-supplied token. Its secret never leaves this type: `Debug` and the caller's
/// name show a short fingerprint instead.
#[derive(Clone)]
pub struct Token {
    /// sha256 of the secret: the server keeps no copy of the token itself.
    digest: [u8; 32],
    pub scope: Scope,
}

impl Token {
    fn new(secret: &str, scope: Scope, field: &str) -> Result<Self, String> {
        if secret.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "{field}: a token must hold at least {MIN_TOKEN_LEN} characters, got {}",
                secret.len()
            ));
        }
        if secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "{field}: a token must not hold spaces or control characters"
            ));
        }
        Ok(Self {
            digest: Sha256::digest(secret.as_bytes()).into(),
            scope,
        })
    }

    /// A name for logs and quotas: the scope and the first 8 hex digits of the token's sha256.
    pub fn fingerprint(&self) -> String {
        format!(
            "{}:{}",
            scope_name(self.scope),
            &hex::encode(self.digest)[..8]
        )
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({})", self.fingerprint())
    }
}

fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Read => "read",
        Scope::Admin => "admin",
    }
}

/// The tokens a server accepts.
#[derive(Debug, Clone, Default)]
pub struct Tokens(Vec<Token>);

impl Tokens {
    /// Parses `scope:token` entries separated by commas or new lines; blank lines and lines
    /// starting with `#` are skipped. `source` names where they came from in errors.
    pub fn parse(text: &str, source: &str) -> Result<Self, String> {
        let mut tokens = Vec::new();
        let entries = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .flat_map(|line| line.split(','))
            .map(str::trim)
            .filter(|entry| !entry.is_empty());
        for (i, entry) in entries.enumerate() {
            let (scope, secret) = entry.split_once(':').ok_or_else(|| {
                format!(
                    "{source}: entry {}: must be scope:token (scope read or admin)",
                    i + 1
                )
            })?;
            let scope = match scope.trim() {
                "read" => Scope::Read,
                "admin" => Scope::Admin,
                other => {
                    return Err(format!(
                        "{source}: entry {}: scope must be read or admin, got {other:?}",
                        i + 1
                    ))
                }
            };
            tokens.push(Token::new(
                secret.trim(),
                scope,
                &format!("{source}: entry {}", i + 1),
            )?);
        }
        Ok(Self(tokens))
    }

    /// The tokens of the settings: a file of entries, a list in the environment, and a lone
    /// admin token.
    pub fn from_settings(
        file: Option<&Path>,
        list: Option<&str>,
        admin: Option<&str>,
    ) -> Result<Self, String> {
        let mut tokens = Tokens::default();
        if let Some(file) = file {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("tokens file {}: {e}", file.display()))?;
            tokens
                .0
                .extend(Self::parse(&text, &format!("tokens file {}", file.display()))?.0);
        }
        if let Some(list) = list {
            tokens.0.extend(Self::parse(list, "--tokens")?.0);
        }
        if let Some(admin) = admin {
            tokens
                .0
                .push(Token::new(admin, Scope::Admin, "--admin-token")?);
        }
        Ok(tokens)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The token equal to `given`: digests compared in constant time against every token.
    fn find(&self, given: &str) -> Option<&Token> {
        let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        let mut found = None;
        for token in &self.0 {
            if constant_time_eq(&token.digest, &digest) {
                found = Some(token);
            }
        }
        found
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who is calling: a token's fingerprint, or `anonymous` when the server has no tokens.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
}

/// The access a route demands, by method and route template. The one table of it.
pub fn access(method: &Method, route: &str) -> Access {
    use Access::*;
    let read = Needs(Scope::Read);
    let admin = Needs(Scope::Admin);
    let is_get = method == Method::GET || method == Method::HEAD;
    match route {
        "/v2/health/live" | "/v2/health/ready" if is_get => Public,
        "/openapi.json" | "/docs" | "/docs/" | "/docs/{*rest}" | "/docs/openapi.json" if is_get => {
            Public
        }
        // The dashboard's page and static files; the page's API calls carry their own token.
        "/" if is_get => Public,
        r if is_get && r.starts_with("/dashboard/") => Public,
        "/v2" | "/metrics" if is_get => read,
        "/v2/models/{model}" | "/v2/models/{model}/ready" if is_get => read,
        "/v2/models/{model}/infer" | "/v2/models/{model}/attack" if method == Method::POST => read,
        "/v2/repository/index" if method == Method::POST => read,
        "/v2/datasets" | "/v2/datasets/{name}" if is_get => read,
        "/v2/evaluations" if is_get || method == Method::POST => read,
        "/v2/evaluations/{id}" if is_get || method == Method::DELETE => read,
        "/v2/evaluations/{id}/events"
        | "/v2/evaluations/{id}/adversarial.npy"
        | "/v2/evaluations/{id}/adversarial.safetensors"
        | "/v2/evaluations/{id}/inputs.safetensors"
            if is_get =>
        {
            read
        }
        // Model and data set uploads, removals, loads and unloads; and anything not listed.
        _ => admin,
    }
}

/// The middleware every route goes through: finds the route's access, checks the bearer token
/// against it, and hands the handlers the [`Caller`].
pub async fn authorize(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let Some(route) = route else {
        // No route matched: the fallback answers 404 and exposes nothing.
        return next.run(request).await;
    };
    let needed = access(request.method(), &route);
    match check(
        &state.tokens,
        needed,
        request.headers().get(header::AUTHORIZATION),
    ) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(e) => {
            let mut response = e.into_response();
            if response.status() == axum::http::StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"robustd\""),
                );
            }
            response
        }
    }
}

/// Whether a request with this `Authorization` header may do what `needed` demands.
pub fn check(
    tokens: &Tokens,
    needed: Access,
    authorization: Option<&HeaderValue>,
) -> Result<Caller, ApiError> {
    if tokens.is_empty() {
        return Ok(Caller {
            name: "anonymous".to_owned(),
        });
    }
    let given = authorization
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let token = match given {
        Some(given) => tokens.find(given),
        None => None,
    };
    let needed_scope = match needed {
        Access::Public => {
            return Ok(Caller {
                name: token.map_or_else(|| "anonymous".to_owned(), Token::fingerprint),
            })
        }
        Access::Needs(scope) => scope,
    };
    if given.is_none() {
        return Err(ApiError::Unauthorized(format!(
            "Authorization: this route needs a {} token; send Authorization: Bearer <token>",
            scope_name(needed_scope)
        )));
    }
    let Some(token) = token else {
        return Err(ApiError::Unauthorized(
            "Authorization: the token is not one this server accepts".to_owned(),
        ));
    };
    if token.scope < needed_scope {
        return Err(ApiError::Forbidden(format!(
            "Authorization: this route needs the {} scope; the token has {}",
            scope_name(needed_scope),
            scope_name(token.scope)
        )));
    }
    Ok(Caller {
        name: token.fingerprint(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::parse(
            "# operators\nread:rrrrrrrrrrrrrrrr\nadmin:aaaaaaaaaaaaaaaa, read:r2r2r2r2r2r2r2r2",
            "test",
        )
        .unwrap()
    }

    fn bearer(token: &str) -> HeaderValue {
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap()
    }

    #[test]
    fn entries_parse_from_lines_and_commas_and_bad_ones_are_named() {
        assert_eq!(tokens().0.len(), 3);
        let err = Tokens::parse("read:short", "file").unwrap_err();
        assert!(err.contains("at least 16 characters, got 5"), "{err}");
        let err = Tokens::parse("write:aaaaaaaaaaaaaaaa", "file").unwrap_err();
        assert!(
            err.contains("scope must be read or admin, got \"write\""),
            "{err}"
        );
        let err = Tokens::parse("aaaaaaaaaaaaaaaa", "file").unwrap_err();
        assert!(err.contains("entry 1: must be scope:token"), "{err}");
    }

    #[test]
    fn scopes_are_checked_against_the_route() {
        let tokens = tokens();
        let read = Access::Needs(Scope::Read);
        let admin = Access::Needs(Scope::Admin);
        assert!(check(&tokens, read, Some(&bearer("rrrrrrrrrrrrrrrr"))).is_ok());
        assert!(check(&tokens, read, Some(&bearer("aaaaaaaaaaaaaaaa"))).is_ok());
        let e = check(&tokens, admin, Some(&bearer("r2r2r2r2r2r2r2r2"))).unwrap_err();
        assert_eq!(e.status(), 403);
        let e = check(&tokens, read, None).unwrap_err();
        assert_eq!(e.status(), 401);
        let e = check(&tokens, read, Some(&bearer("rrrrrrrrrrrrrrrx"))).unwrap_err();
        assert_eq!(e.status(), 401);
        assert!(check(&tokens, Access::Public, None).is_ok());
        assert!(check(&Tokens::default(), admin, None).is_ok());
    }

    #[test]
    fn a_token_never_shows_in_its_debug_form_or_name() {
        let tokens = tokens();
        let shown = format!("{tokens:?}");
        assert!(!shown.contains("rrrrrrrrrrrrrrrr"), "{shown}");
        assert!(shown.contains("Token(read:"), "{shown}");
    }

    #[test]
    fn routes_not_in_the_table_need_admin() {
        assert_eq!(access(&Method::GET, "/v2/health/ready"), Access::Public);
        assert_eq!(
            access(&Method::POST, "/v2/health/ready"),
            Access::Needs(Scope::Admin)
        );
        assert_eq!(
            access(&Method::GET, "/v2/something/new"),
            Access::Needs(Scope::Admin)
        );
        assert_eq!(
            access(&Method::PUT, "/v2/datasets/{name}"),
            Access::Needs(Scope::Admin)
        );
        assert_eq!(
            access(&Method::POST, "/v2/models/{model}/attack"),
            Access::Needs(Scope::Read)
        );
    }
}
