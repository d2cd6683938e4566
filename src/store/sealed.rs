//! Secrets sealed at rest: the keys ([`SecretKey`], [`KeyRing`]), sealing and opening
//! one value (XChaCha20-Poly1305), and re-sealing every stored value of some columns
//! under the current key ([`reseal`]), for legacy plain text and key rotation.
//!
//! A sealed value is text, `sealed:v1:<key id>:<base64(nonce ‖ ciphertext)>`: the key id
//! (a fingerprint of the key) says which key opens it, and the associated data binds
//! it to the row and column it lives in, so a value copied elsewhere does not open.
//! This module never logs, prints or returns a key or an opened value except to its
//! caller, and never stores a value it did not seal. Where keys come from (settings, a
//! key file) is [`key_source`](super::key_source)'s business.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::views::{query, Param, Tx};
use super::{Database, StoreError};

const PREFIX: &str = "sealed:v1:";
const NONCE_LEN: usize = 24;
/// Poly1305's tag, after the ciphertext.
const TAG_LEN: usize = 16;

/// A 32-byte key. Its bytes leave this type only as base64, on purpose
/// ([`SecretKey::to_base64`]), and `Debug` shows only its id.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey([u8; 32]);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.id())
    }
}

/// Why some text is not a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyParseError {
    #[error("is empty; a key is 32 random bytes in base64 (make one with `orderlog secrets generate-key` or `head -c 32 /dev/urandom | base64`)")]
    Empty,
    #[error("is not base64 (standard alphabet, with `=` padding); a key is 32 random bytes in base64 (make one with `orderlog secrets generate-key`)")]
    NotBase64,
    #[error("decodes to {0} bytes; a key is exactly 32 bytes (make one with `orderlog secrets generate-key`)")]
    WrongLength(usize),
}

impl SecretKey {
    /// 32 bytes from the operating system's generator.
    pub fn generate() -> SecretKey {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        SecretKey(key)
    }

    /// Base64 (standard alphabet) of exactly 32 bytes; surrounding whitespace (a key
    /// file's newline) is ignored. The error never repeats the text.
    pub fn parse(raw: &str) -> Result<SecretKey, KeyParseError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(KeyParseError::Empty);
        }
        let bytes = BASE64.decode(raw).map_err(|_| KeyParseError::NotBase64)?;
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyParseError::WrongLength(bytes.len()))?;
        Ok(SecretKey(key))
    }

    /// The key as an operator writes it down: for a key file, or printed once by
    /// `orderlog secrets generate-key` and `rotate-key`.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }

    /// The first 8 bytes of the key's SHA-256: names the key in sealed values and logs
    /// without revealing it.
    pub fn id(&self) -> KeyId {
        let digest = Sha256::digest(self.0);
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        KeyId(id)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&self.0).into())
    }
}

/// A key's fingerprint, shown as 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; 8]);

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// Why a stored value did not open. Each has a stable [`code`](SealError::code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the stored value is sealed under key {key_id}, which this server does not hold (it holds {held}); give it that key (ORDERLOG_SECRET_KEY_PREVIOUS, or the key file it was sealed with)")]
    UnknownKey { key_id: String, held: String },
    #[error("the stored value does not open under key {key_id}: it was altered, or it was copied from another row")]
    Tampered { key_id: String },
    #[error("the stored value is not a sealed value: {reason}")]
    Malformed { reason: &'static str },
}

impl SealError {
    pub fn code(&self) -> &'static str {
        match self {
            SealError::UnknownKey { .. } => "sealed_unknown_key",
            SealError::Tampered { .. } => "sealed_tampered",
            SealError::Malformed { .. } => "sealed_malformed",
        }
    }
}

/// The keys of a server: one seals, and every one (that one included) opens.
#[derive(Clone)]
pub struct KeyRing {
    sealing: SecretKey,
    /// The sealing key first.
    opening: Vec<SecretKey>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "KeyRing(seals with {}, opens {})",
            self.sealing_id(),
            self.held()
        )
    }
}

impl KeyRing {
    pub fn new(sealing: SecretKey) -> KeyRing {
        KeyRing {
            opening: vec![sealing.clone()],
            sealing,
        }
    }

    /// Adds a key that opens (a previous one) but never seals.
    pub fn with_opening(mut self, key: SecretKey) -> KeyRing {
        if !self.opening.contains(&key) {
            self.opening.push(key);
        }
        self
    }

    /// The ring of a rotation: `new` seals, and every key of this ring still opens.
    pub fn rotated_to(&self, new: SecretKey) -> KeyRing {
        self.opening
            .iter()
            .cloned()
            .fold(KeyRing::new(new), KeyRing::with_opening)
    }

    pub fn sealing_id(&self) -> KeyId {
        self.sealing.id()
    }

    fn held(&self) -> String {
        let ids: Vec<String> = self.opening.iter().map(|k| k.id().to_string()).collect();
        ids.join(", ")
    }

    /// Seals `plaintext` for the place `aad` names (`subscriptions.secret:<id>`), under
    /// a fresh random nonce: two seals of one value differ.
    pub fn seal(&self, plaintext: &str, aad: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .sealing
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            // Encryption fails only for messages beyond 256 GiB.
            .expect("XChaCha20-Poly1305 seals any secret");
        let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        format!("{PREFIX}{}:{}", self.sealing_id(), BASE64.encode(sealed))
    }

    /// Opens a value sealed for the place `aad` by any key of the ring.
    pub fn open(&self, sealed: &str, aad: &str) -> Result<String, SealError> {
        let (key_id, body) = split(sealed)?;
        let key = self
            .opening
            .iter()
            .find(|k| k.id().to_string() == key_id)
            .ok_or_else(|| SealError::UnknownKey {
                key_id: key_id.to_owned(),
                held: self.held(),
            })?;
        let bytes = BASE64.decode(body).map_err(|_| SealError::Malformed {
            reason: "its body is not base64",
        })?;
        if bytes.len() < NONCE_LEN + TAG_LEN {
            return Err(SealError::Malformed {
                reason: "its body is too short to hold a nonce and a tag",
            });
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let tampered = || SealError::Tampered {
            key_id: key_id.to_owned(),
        };
        let plaintext = key
            .cipher()
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| tampered())?;
        String::from_utf8(plaintext).map_err(|_| tampered())
    }

    /// Whether a stored value is already sealed under the sealing key.
    pub fn is_current(&self, stored: &str) -> bool {
        split(stored).is_ok_and(|(id, _)| id == self.sealing_id().to_string())
    }
}

/// Whether stored text is a sealed value at all (rather than legacy plain text).
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with("sealed:")
}

fn split(sealed: &str) -> Result<(&str, &str), SealError> {
    let rest = sealed.strip_prefix(PREFIX).ok_or(SealError::Malformed {
        reason: "it does not start with `sealed:v1:`",
    })?;
    let (key_id, body) = rest.split_once(':').ok_or(SealError::Malformed {
        reason: "it has no key id",
    })?;
    if key_id.len() != 16 || !key_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SealError::Malformed {
            reason: "its key id is not 16 hex digits",
        });
    }
    Ok((key_id, body))
}

/// A text column that holds sealed values, in a table whose text primary key `id`
/// names each row. Its values are sealed for the place `<table>.<column>:<id>`.
#[derive(Debug, Clone, Copy)]
pub struct SealedColumn {
    pub table: &'static str,
    pub id: &'static str,
    pub column: &'static str,
}

impl SealedColumn {
    /// The associated data of the value in row `id`.
    pub fn place(&self, id: &str) -> String {
        format!("{}.{}:{id}", self.table, self.column)
    }
}

/// What [`reseal`] did.
#[derive(Debug, Default)]
pub struct Resealed {
    /// Values sealed under another key of the ring, now under the sealing key.
    pub resealed: u64,
    /// Legacy plain text, now sealed.
    pub sealed_plain: u64,
    /// Already under the sealing key: left alone.
    pub current: u64,
    /// Values no key of the ring opens, by place (`subscriptions.secret:<id>`): left as
    /// they are.
    pub failed: Vec<(String, SealError)>,
}

/// How many passes [`reseal`] makes when rows change under it (another process
/// rotating a subscription's secret meanwhile).
const RESEAL_PASSES: usize = 10;

/// Brings every value of `columns` under the ring's sealing key, one row at a time:
/// legacy plain text is sealed, values under another key of the ring are opened and
/// sealed again, values already under the sealing key are skipped. Each row is written
/// with a compare-and-set on the text read, so a value changed meanwhile (by a running
/// server) is never overwritten: it is read again on the next pass. Interrupted, it
/// leaves every row either as it was or done, and running it again finishes the job.
pub async fn reseal(
    db: &Database,
    keys: &KeyRing,
    columns: &[SealedColumn],
) -> Result<Resealed, StoreError> {
    #[derive(Deserialize)]
    struct Row {
        id: String,
        value: String,
    }
    let mut done = Resealed::default();
    for column in columns {
        // Counted on the last pass only: an earlier one saw rows that changed since.
        let mut current = 0;
        let mut failed = Vec::new();
        for _ in 0..RESEAL_PASSES {
            failed.clear();
            let SealedColumn {
                table,
                id,
                column: name,
                ..
            } = column;
            // Only values not under the sealing key are read: a table of many rows
            // (customers' data keys, one an order) is counted, never loaded, when it is
            // all current, as it is on every start but the first after a rotation.
            let sealing = format!("{PREFIX}{}:%", keys.sealing_id());
            #[derive(Deserialize)]
            struct Count {
                n: i64,
            }
            let counted: Vec<Count> = query(
                db,
                &format!("SELECT COUNT(*) AS n FROM {table} WHERE {name} LIKE $1"),
                &["n"],
                &[Param::Text(sealing.clone())],
            )
            .await?;
            current = counted.first().map_or(0, |c| c.n as u64);
            let rows: Vec<Row> = query(
                db,
                &format!(
                    "SELECT {id} AS id, {name} AS value FROM {table}
                      WHERE {name} IS NOT NULL AND {name} NOT LIKE $1"
                ),
                &["id", "value"],
                &[Param::Text(sealing)],
            )
            .await?;
            let mut changed = false;
            for row in rows {
                if keys.is_current(&row.value) {
                    current += 1;
                    continue;
                }
                let place = column.place(&row.id);
                let (plain, legacy) = if is_sealed(&row.value) {
                    match keys.open(&row.value, &place) {
                        Ok(plain) => (plain, false),
                        Err(e) => {
                            failed.push((place, e));
                            continue;
                        }
                    }
                } else {
                    (row.value.clone(), true)
                };
                let mut tx = Tx::begin(db).await?;
                let n = tx
                    .execute(
                        &format!("UPDATE {table} SET {name} = $1 WHERE {id} = $2 AND {name} = $3"),
                        &[
                            Param::Text(keys.seal(&plain, &place)),
                            Param::Text(row.id.clone()),
                            Param::Text(row.value.clone()),
                        ],
                    )
                    .await?;
                tx.commit().await?;
                match (n, legacy) {
                    (0, _) => changed = true,
                    (_, true) => done.sealed_plain += 1,
                    (_, false) => done.resealed += 1,
                }
            }
            if !changed {
                break;
            }
        }
        done.current += current;
        done.failed.extend(failed);
    }
    if done.resealed + done.sealed_plain > 0 {
        scrub(db).await?;
    }
    Ok(done)
}

/// On SQLite, an updated row's old text stays in the file's free space and in the WAL
/// until overwritten: rebuild the file and empty the WAL, so that neither the plain
/// text just sealed nor values under a retired key stay behind. (PostgreSQL keeps old
/// row versions until its own VACUUM; see the README.)
async fn scrub(db: &Database) -> Result<(), StoreError> {
    if let Database::Sqlite(pool) = db {
        sqlx::query("VACUUM").execute(pool).await?;
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(pool)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLACE: &str = "subscriptions.secret:0190-a";

    #[test]
    fn a_sealed_value_opens_to_what_was_sealed() {
        let ring = KeyRing::new(SecretKey::generate());
        let sealed = ring.seal("whsec_abc", PLACE);
        assert!(sealed.starts_with(&format!("sealed:v1:{}:", ring.sealing_id())));
        assert!(!sealed.contains("whsec_abc"));
        assert_eq!(ring.open(&sealed, PLACE).unwrap(), "whsec_abc");
        assert!(ring.is_current(&sealed));
    }

    #[test]
    fn two_seals_of_one_value_differ() {
        let ring = KeyRing::new(SecretKey::generate());
        assert_ne!(ring.seal("whsec_abc", PLACE), ring.seal("whsec_abc", PLACE));
    }

    #[test]
    fn another_key_does_not_open_it_and_says_which_key_it_needs() {
        let a = KeyRing::new(SecretKey::generate());
        let b = KeyRing::new(SecretKey::generate());
        let sealed = a.seal("whsec_abc", PLACE);
        let error = b.open(&sealed, PLACE).unwrap_err();
        assert_eq!(
            error,
            SealError::UnknownKey {
                key_id: a.sealing_id().to_string(),
                held: b.sealing_id().to_string()
            }
        );
        assert!(error
            .to_string()
            .contains(&format!("sealed under key {}", a.sealing_id())));
        assert_eq!(error.code(), "sealed_unknown_key");
    }

    #[test]
    fn a_previous_key_opens_but_does_not_seal() {
        let old = SecretKey::generate();
        let sealed = KeyRing::new(old.clone()).seal("whsec_abc", PLACE);
        let ring = KeyRing::new(SecretKey::generate()).with_opening(old);
        assert_eq!(ring.open(&sealed, PLACE).unwrap(), "whsec_abc");
        assert!(!ring.is_current(&sealed));
        assert!(ring.is_current(&ring.seal("whsec_abc", PLACE)));
    }

    #[test]
    fn a_tampered_byte_does_not_open() {
        let ring = KeyRing::new(SecretKey::generate());
        let sealed = ring.seal("whsec_abc", PLACE);
        let (head, body) = sealed.rsplit_once(':').unwrap();
        let mut bytes = BASE64.decode(body).unwrap();
        for i in [0, NONCE_LEN, bytes.len() - 1] {
            bytes[i] ^= 1;
            let tampered = format!("{head}:{}", BASE64.encode(&bytes));
            let error = ring.open(&tampered, PLACE).unwrap_err();
            assert_eq!(error.code(), "sealed_tampered", "byte {i}");
            bytes[i] ^= 1;
        }
    }

    #[test]
    fn a_value_copied_to_another_place_does_not_open() {
        let ring = KeyRing::new(SecretKey::generate());
        let sealed = ring.seal("whsec_abc", PLACE);
        for other in [
            "subscriptions.secret:0190-b",
            "subscriptions.previous_secret:0190-a",
        ] {
            assert!(matches!(
                ring.open(&sealed, other),
                Err(SealError::Tampered { .. })
            ));
        }
    }

    #[test]
    fn malformed_values_are_told_apart() {
        let ring = KeyRing::new(SecretKey::generate());
        let id = ring.sealing_id();
        for bad in [
            "whsec_abc".to_owned(),
            "sealed:v2:0011223344556677:AAAA".to_owned(),
            "sealed:v1:nothex!!nothex!!:AAAA".to_owned(),
            format!("sealed:v1:{id}:not base64!"),
            format!("sealed:v1:{id}:AAAA"),
        ] {
            let error = ring.open(&bad, PLACE).unwrap_err();
            assert_eq!(error.code(), "sealed_malformed", "{bad}: {error}");
        }
    }

    #[test]
    fn keys_are_32_bytes_of_base64_and_never_shown() {
        let key = SecretKey::generate();
        let text = key.to_base64();
        assert_eq!(SecretKey::parse(&format!(" {text}\n")).unwrap(), key);
        assert_eq!(
            SecretKey::parse(&BASE64.encode([0u8; 31])),
            Err(KeyParseError::WrongLength(31))
        );
        assert_eq!(
            SecretKey::parse("not base64!"),
            Err(KeyParseError::NotBase64)
        );
        assert_eq!(SecretKey::parse(" "), Err(KeyParseError::Empty));
        let shown = format!("{key:?} {:?}", KeyRing::new(key.clone()));
        assert!(!shown.contains(&text), "{shown}");
        assert!(shown.contains(&key.id().to_string()));
        assert_eq!(key.id().to_string().len(), 16);
    }
}
