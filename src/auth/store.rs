//! The `api_tokens` table: the same SQL on both backends, times in Unix milliseconds.
//! It stores hashes, never tokens.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::rate::Rate;
use super::scope::Scopes;
use super::token::{TokenHash, TokenName};
use crate::store::views::{query, Param, Tx};
use crate::store::{from_millis as time, millis, Database, StoreError};

/// One token as stored.
#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub name: TokenName,
    pub hash: TokenHash,
    pub scopes: Scopes,
    pub rate: Option<Rate>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct Row {
    name: String,
    token_hash: String,
    scopes: String,
    rate: Option<String>,
    created_at: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    last_used_at: Option<i64>,
}

const COLUMNS: &[&str] = &[
    "name",
    "token_hash",
    "scopes",
    "rate",
    "created_at",
    "expires_at",
    "revoked_at",
    "last_used_at",
];
const SELECT: &str = "SELECT name, token_hash, scopes, rate, created_at, expires_at, revoked_at, last_used_at FROM api_tokens";

impl Row {
    fn parse(self) -> Result<TokenRecord, StoreError> {
        let corrupt =
            |what: &str| StoreError::Corrupt(format!("api_tokens.{what} of {}", self.name));
        Ok(TokenRecord {
            name: TokenName::parse(&self.name).map_err(|_| corrupt("name"))?,
            hash: TokenHash::from_hex(&self.token_hash).ok_or_else(|| corrupt("token_hash"))?,
            scopes: Scopes::parse_list(self.scopes.split(',')).map_err(|_| corrupt("scopes"))?,
            rate: self
                .rate
                .as_deref()
                .map(Rate::parse)
                .transpose()
                .map_err(|_| corrupt("rate"))?,
            created_at: time(self.created_at),
            expires_at: self.expires_at.map(time),
            revoked_at: self.revoked_at.map(time),
            last_used_at: self.last_used_at.map(time),
        })
    }
}

/// Stores a new token; `false` when its name is taken (by a live or a revoked token).
pub async fn insert(db: &Database, token: &TokenRecord) -> Result<bool, StoreError> {
    let mut tx = Tx::begin(db).await?;
    let inserted = tx
        .execute(
            "INSERT INTO api_tokens (name, lookup, token_hash, scopes, rate, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (name) DO NOTHING",
            &[
                Param::Text(token.name.as_str().to_owned()),
                Param::Text(token.hash.lookup()),
                Param::Text(token.hash.to_hex()),
                Param::Text(token.scopes.to_string()),
                Param::OptText(token.rate.map(|r| r.to_string())),
                Param::Int(millis(token.created_at)),
                Param::OptInt(token.expires_at.map(millis)),
            ],
        )
        .await?;
    tx.commit().await?;
    Ok(inserted == 1)
}

/// The tokens whose hash starts like `hash`: the caller compares the whole hash.
pub async fn candidates(db: &Database, hash: &TokenHash) -> Result<Vec<TokenRecord>, StoreError> {
    let rows: Vec<Row> = query(
        db,
        &format!("{SELECT} WHERE lookup = $1"),
        COLUMNS,
        &[Param::Text(hash.lookup())],
    )
    .await?;
    rows.into_iter().map(Row::parse).collect()
}

pub async fn get(db: &Database, name: &TokenName) -> Result<Option<TokenRecord>, StoreError> {
    let rows: Vec<Row> = query(
        db,
        &format!("{SELECT} WHERE name = $1"),
        COLUMNS,
        &[Param::Text(name.as_str().to_owned())],
    )
    .await?;
    rows.into_iter().next().map(Row::parse).transpose()
}

pub async fn list(db: &Database) -> Result<Vec<TokenRecord>, StoreError> {
    let rows: Vec<Row> = query(db, &format!("{SELECT} ORDER BY name"), COLUMNS, &[]).await?;
    rows.into_iter().map(Row::parse).collect()
}

pub async fn any(db: &Database) -> Result<bool, StoreError> {
    #[derive(Deserialize)]
    struct One {
        #[allow(dead_code)]
        name: String,
    }
    let rows: Vec<One> = query(db, "SELECT name FROM api_tokens LIMIT 1", &["name"], &[]).await?;
    Ok(!rows.is_empty())
}

/// Marks a token revoked; `false` when it was already (the first time is kept).
pub async fn revoke(
    db: &Database,
    name: &TokenName,
    at: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let mut tx = Tx::begin(db).await?;
    let changed = tx
        .execute(
            "UPDATE api_tokens SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL",
            &[
                Param::Text(name.as_str().to_owned()),
                Param::Int(millis(at)),
            ],
        )
        .await?;
    tx.commit().await?;
    Ok(changed == 1)
}

pub async fn touch(db: &Database, name: &TokenName, at: DateTime<Utc>) -> Result<(), StoreError> {
    let mut tx = Tx::begin(db).await?;
    tx.execute(
        "UPDATE api_tokens SET last_used_at = $2 WHERE name = $1",
        &[
            Param::Text(name.as_str().to_owned()),
            Param::Int(millis(at)),
        ],
    )
    .await?;
    tx.commit().await
}
