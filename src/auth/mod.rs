//! Who is asking, and what they may do: API tokens with scopes and optional rate
//! limits. The API asks [`Tokens::authenticate`] on every request but `/health` and
//! `/ready`; the CLI and `/v1/tokens` manage them.
//!
//! Only SHA-256 hashes are stored. Tokens that authenticated are cached in memory for
//! [`CACHE_FOR`], so a request costs a hash and a map lookup, not a database read; a
//! token revoked through another process stops working within that time, one revoked
//! through this one at once. This module never sees HTTP.

mod rate;
mod scope;
pub mod store;
mod token;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

pub use rate::{Limiter, Rate};
pub use scope::{Scope, Scopes};
use store::TokenRecord;
pub use token::{Token, TokenHash, TokenName};

use crate::store::{Database, StoreError};

/// How long an authenticated token is trusted from memory before it is read again.
pub const CACHE_FOR: Duration = Duration::from_secs(5);
/// A token's `last_used_at` is written at most this often.
const TOUCH_EVERY_MS: i64 = 60_000;
/// The name of the admin token made on first start.
pub const BOOTSTRAP_NAME: &str = "bootstrap";

/// The token behind a request: its name is the actor on every event it appends.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: Arc<str>,
    pub scopes: Scopes,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("this route needs a bearer token: send `Authorization: Bearer olk_…`")]
    Missing,
    #[error("the bearer token is not one this server knows")]
    Unknown,
    #[error("the token `{name}` expired at {at}")]
    Expired { name: String, at: DateTime<Utc> },
    #[error("the token `{name}` was revoked at {at}")]
    Revoked { name: String, at: DateTime<Utc> },
    #[error(
        "the token `{name}` is over its rate limit of {rate}; retry after the delay in Retry-After"
    )]
    RateLimited {
        name: String,
        rate: Rate,
        retry_after: Duration,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What managing tokens can refuse.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("a token named `{0}` exists (or existed: names of revoked tokens are not reused, since events record them as their actor)")]
    Exists(TokenName),
    #[error("no token is named `{0}`")]
    NotFound(TokenName),
    /// The acting token lacks a scope it tried to grant, or that the token it tried
    /// to revoke holds.
    #[error(
        "this token does not hold `{0}`, so it cannot grant it or revoke a token that holds it"
    )]
    Beyond(Scope),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A token to make, its fields already parsed.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub name: TokenName,
    pub scopes: Scopes,
    pub expires_in: Option<Duration>,
    pub rate: Option<Rate>,
}

struct Cached {
    record: TokenRecord,
    name: Arc<str>,
    loaded: Instant,
    limiter: Option<Arc<Limiter>>,
    /// Unix ms of the last `last_used_at` written (or read).
    touched: AtomicI64,
}

/// Authenticated tokens, by [`TokenHash::lookup_key`].
type Cache = HashMap<[u8; 8], Vec<Arc<Cached>>>;

/// The tokens: authentication with its cache, and their management.
#[derive(Clone)]
pub struct Tokens {
    db: Database,
    /// By the first 8 bytes of the hash; the whole hash is compared in constant time.
    cache: Arc<RwLock<Cache>>,
}

impl Tokens {
    pub fn new(db: Database) -> Tokens {
        Tokens {
            db,
            cache: Arc::default(),
        }
    }

    /// The token a request presented, checked: known, not revoked, not expired, within
    /// its rate. Writes nothing on the request's path.
    pub async fn authenticate(&self, presented: &str) -> Result<Principal, AuthError> {
        let hash = TokenHash::of(presented.as_bytes());
        let now = Instant::now();
        let cached = self.cached(&hash);
        let entry = match cached {
            Some(entry) if now.duration_since(entry.loaded) < CACHE_FOR => entry,
            stale => self.load(&hash, stale).await?,
        };
        let record = &entry.record;
        if let Some(at) = record.revoked_at {
            return Err(AuthError::Revoked {
                name: record.name.to_string(),
                at,
            });
        }
        let wall = Utc::now();
        if let Some(at) = record.expires_at.filter(|at| *at <= wall) {
            return Err(AuthError::Expired {
                name: record.name.to_string(),
                at,
            });
        }
        if let Some(limiter) = &entry.limiter {
            limiter
                .take(now)
                .map_err(|retry_after| AuthError::RateLimited {
                    name: record.name.to_string(),
                    rate: limiter.rate(),
                    retry_after,
                })?;
        }
        self.touch(&entry, wall);
        Ok(Principal {
            name: entry.name.clone(),
            scopes: record.scopes,
        })
    }

    fn cached(&self, hash: &TokenHash) -> Option<Arc<Cached>> {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        cache
            .get(&hash.lookup_key())?
            .iter()
            .find(|c| c.record.hash.matches(hash))
            .cloned()
    }

    async fn load(
        &self,
        hash: &TokenHash,
        stale: Option<Arc<Cached>>,
    ) -> Result<Arc<Cached>, AuthError> {
        let found = store::candidates(&self.db, hash)
            .await?
            .into_iter()
            .find(|record| record.hash.matches(hash));
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        let bucket = cache.entry(hash.lookup_key()).or_default();
        bucket.retain(|c| !c.record.hash.matches(hash));
        let Some(record) = found else {
            return Err(AuthError::Unknown);
        };
        // A reload keeps the bucket's level, or a limit would reset every few seconds.
        let limiter = match (record.rate, stale.and_then(|old| old.limiter.clone())) {
            (Some(rate), Some(old)) if old.rate() == rate => Some(old),
            (rate, _) => rate.map(|rate| Arc::new(Limiter::new(rate))),
        };
        let entry = Arc::new(Cached {
            name: Arc::from(record.name.as_str()),
            touched: AtomicI64::new(record.last_used_at.map_or(0, |t| t.timestamp_millis())),
            record,
            loaded: Instant::now(),
            limiter,
        });
        bucket.push(entry.clone());
        Ok(entry)
    }

    /// Records the use at most once a minute, off the request's path.
    fn touch(&self, entry: &Arc<Cached>, now: DateTime<Utc>) {
        let ms = now.timestamp_millis();
        let last = entry.touched.load(Ordering::Relaxed);
        if ms - last < TOUCH_EVERY_MS
            || entry
                .touched
                .compare_exchange(last, ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let db = self.db.clone();
        let name = entry.record.name.clone();
        tokio::spawn(async move {
            if let Err(e) = store::touch(&db, &name, now).await {
                tracing::warn!(token = %name, error = %e, "could not record a token's last use");
            }
        });
    }

    fn forget(&self, name: &TokenName) {
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        for bucket in cache.values_mut() {
            bucket.retain(|c| &c.record.name != name);
        }
    }

    /// Makes a token, granted by a holder of `granter`; the token's text is returned
    /// here and never again.
    pub async fn create(
        &self,
        new: NewToken,
        granter: Scopes,
    ) -> Result<(TokenRecord, Token), TokenError> {
        if let Some(missing) = granter.first_missing(new.scopes) {
            return Err(TokenError::Beyond(missing));
        }
        let token = Token::generate();
        let now = Utc::now();
        let record = TokenRecord {
            name: new.name,
            hash: token.hash(),
            scopes: new.scopes,
            rate: new.rate,
            created_at: now,
            expires_at: new
                .expires_in
                .map(|d| now + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)),
            revoked_at: None,
            last_used_at: None,
        };
        if !store::insert(&self.db, &record).await? {
            return Err(TokenError::Exists(record.name));
        }
        Ok((record, token))
    }

    pub async fn list(&self) -> Result<Vec<TokenRecord>, TokenError> {
        Ok(store::list(&self.db).await?)
    }

    /// Revokes a token, by a holder of `by`, who must hold everything it holds. Revoking
    /// twice is not an error: the first time is kept.
    pub async fn revoke(&self, name: &TokenName, by: Scopes) -> Result<TokenRecord, TokenError> {
        let record = store::get(&self.db, name)
            .await?
            .ok_or_else(|| TokenError::NotFound(name.clone()))?;
        if let Some(missing) = by.first_missing(record.scopes) {
            return Err(TokenError::Beyond(missing));
        }
        store::revoke(&self.db, name, Utc::now()).await?;
        self.forget(name);
        Ok(store::get(&self.db, name).await?.unwrap_or(record))
    }

    /// On a database without any token: makes the `bootstrap` admin token, from
    /// `given` or generated and written to `file` (mode 0600). Several servers
    /// starting at once make one between them.
    pub async fn bootstrap(
        &self,
        given: Option<&Token>,
        file: &Path,
    ) -> Result<Bootstrap, BootstrapError> {
        if store::any(&self.db).await? {
            return Ok(match given {
                Some(token) if !self.knows(token).await? => Bootstrap::Ignored,
                _ => Bootstrap::Existing,
            });
        }
        let token = given.cloned().unwrap_or_else(Token::generate);
        // The file first, under a name of its own: a token in the database that nobody
        // can read would lock everyone out.
        let staged = (given.is_none())
            .then(|| write_private_file(file, "tmp", token.as_str()))
            .transpose()
            .map_err(|source| BootstrapError::File {
                path: file.to_path_buf(),
                source,
            })?;
        let record = TokenRecord {
            name: TokenName::parse(BOOTSTRAP_NAME).expect("a valid name"),
            hash: token.hash(),
            scopes: Scopes::of([Scope::Admin]),
            rate: None,
            created_at: Utc::now(),
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
        };
        let inserted = store::insert(&self.db, &record).await;
        let Some(staged) = staged else {
            return Ok(if inserted? {
                Bootstrap::Provisioned
            } else {
                Bootstrap::Existing
            });
        };
        match inserted {
            Ok(true) => {
                std::fs::rename(&staged, file).map_err(|source| BootstrapError::File {
                    path: file.to_path_buf(),
                    source,
                })?;
                Ok(Bootstrap::Written(file.to_path_buf()))
            }
            other => {
                let _ = std::fs::remove_file(&staged);
                other?;
                Ok(Bootstrap::Existing)
            }
        }
    }

    async fn knows(&self, token: &Token) -> Result<bool, StoreError> {
        let hash = token.hash();
        Ok(store::candidates(&self.db, &hash)
            .await?
            .iter()
            .any(|r| r.hash.matches(&hash)))
    }
}

/// What the first start did about tokens.
#[derive(Debug, PartialEq, Eq)]
pub enum Bootstrap {
    /// A token was generated and written to this file.
    Written(PathBuf),
    /// `ORDERLOG_BOOTSTRAP_TOKEN` was stored.
    Provisioned,
    /// The database already held tokens.
    Existing,
    /// The database already held tokens, and not the one given.
    Ignored,
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("writing the bootstrap token to {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Writes `contents` to a new file beside `path` (its name plus `.suffix`), readable
/// by its owner alone, and returns that file's path.
pub fn write_private_file(path: &Path, suffix: &str, contents: &str) -> std::io::Result<PathBuf> {
    let mut staged = path.as_os_str().to_owned();
    staged.push(".");
    staged.push(suffix);
    let staged = PathBuf::from(staged);
    let _ = std::fs::remove_file(&staged);
    let mut file = crate::store::files::create_private(&staged)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    Ok(staged)
}
