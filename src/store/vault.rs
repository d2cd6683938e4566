//! Customers' data keys: sealing personal data for the log, opening it for readers, and
//! forgetting it for good (crypto-shredding).
//!
//! Every order's personal data (`domain::personal`) is sealed at the edge under a data
//! key made for it ([`Vault::seal`]): XChaCha20-Poly1305, in `store::sealed`'s form, so
//! the log holds only `sealed:v1:<data key id>:…`. The data key belongs to the customer
//! and is itself sealed by the server's key in `customer_keys`; its row commits in the
//! same transaction as the order's events ([`DataKeyWrite`], ridden by `store::writer`),
//! so there is never data without its key, nor a key without data.
//!
//! One key per order rather than one per customer: a node never caches "the customer's
//! key" for writing, so an erasure on another node can never be followed by new data
//! sealed under a key it destroyed. Erasing a customer deletes all of their keys at once.
//!
//! Readers open through [`Vault::open`] (a typed order) and [`Vault::reveal`] (stored
//! JSON: a payload, a delivery's body, a kept answer), which put the [`FIELDS`] where the
//! sealed field was, or, once the key is gone, each as `null` with `"erased": true`.
//! Opened keys are kept in memory briefly ([`OPEN_FOR`]): an erasure on this node drops
//! them at once ([`Vault::forget`]); on another node within that time.
//!
//! Nothing here logs or returns a key, and opened data only to the caller.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use tokio::time::Instant;

use super::sealed::{KeyRing, SealedColumn, SecretKey};
use super::views::{query, Param};
use super::{Database, StoreError};
use crate::domain::personal::{Personal, PersonalData, SealedPersonal, FIELDS, SEALED_FIELD};
use crate::domain::values::{reading_stored, CustomerId};

/// The data keys' column, resealed with the others by `secrets rotate-key`.
pub const SEALED_COLUMNS: &[SealedColumn] = &[SealedColumn {
    table: "customer_keys",
    id: "key_id",
    column: "sealed_key",
}];

/// What personal data is sealed for: the data key opens nothing else.
const AAD: &str = "order.personal";

/// How long an opened data key is kept in memory: the most that another node's
/// erasure takes to be seen here.
pub const OPEN_FOR: Duration = Duration::from_secs(10);

/// Keys held in memory at most; past that the cache starts again.
const CACHED_KEYS: usize = 65_536;

/// A write to `customer_keys`, in the same transaction as the events it rides with.
#[derive(Clone, PartialEq, Eq)]
pub enum DataKeyWrite {
    /// The data key one order's personal data is sealed under.
    Create {
        key_id: String,
        customer_id: String,
        /// Sealed by the server's key.
        sealed_key: String,
        at: DateTime<Utc>,
    },
    /// Every data key of the customer's: the erasure.
    DestroyAll { customer_id: String },
}

impl std::fmt::Debug for DataKeyWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataKeyWrite::Create { key_id, .. } => write!(f, "Create({key_id})"),
            DataKeyWrite::DestroyAll { customer_id } => write!(f, "DestroyAll({customer_id})"),
        }
    }
}

/// Personal data as a reader gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    Clear(Box<PersonalData>),
    /// The customer was erased: the key that opened it is gone.
    Erased,
}

/// Opens and seals personal data. Cheap to clone.
#[derive(Clone)]
pub struct Vault {
    db: Database,
    ring: Arc<KeyRing>,
    cache: Arc<Mutex<HashMap<String, Cached>>>,
}

#[derive(Clone)]
struct Cached {
    customer_id: String,
    /// `None`: the key is gone (erased), which never changes.
    key: Option<KeyRing>,
    until: Option<Instant>,
}

impl Vault {
    pub fn new(db: Database, ring: Arc<KeyRing>) -> Vault {
        Vault {
            db,
            ring,
            cache: Arc::default(),
        }
    }

    /// Seals `data` under a new data key of `customer`'s. The key's row must ride with
    /// the events that hold the sealed text (`CommandMetadata::data_key`).
    pub fn seal(&self, customer: &CustomerId, data: &PersonalData) -> (Personal, DataKeyWrite) {
        let key = SecretKey::generate();
        let key_id = key.id().to_string();
        // A struct of strings always serialises.
        let clear = serde_json::to_string(data).unwrap_or_default();
        let sealed = KeyRing::new(key.clone()).seal(&clear, AAD);
        let write = DataKeyWrite::Create {
            sealed_key: self
                .ring
                .seal(&key.to_base64(), &SEALED_COLUMNS[0].place(&key_id)),
            key_id,
            customer_id: customer.as_str().to_owned(),
            at: Utc::now(),
        };
        (Personal::Sealed(SealedPersonal::new(sealed)), write)
    }

    /// What `personal` holds, in the clear, or `Erased`.
    pub async fn open(&self, personal: &Personal) -> Result<Opened, StoreError> {
        match personal {
            Personal::Clear(data) => Ok(Opened::Clear(data.clone())),
            Personal::Sealed(sealed) => {
                let key_id = key_id_of(sealed.as_str())?;
                self.keys(vec![key_id.to_owned()])
                    .await?
                    .open(sealed.as_str())
            }
        }
    }

    /// Stored JSON (compact, as this engine writes it) with every object's sealed
    /// personal data opened in place ([`OpenKeys::reveal`]). Text without any is
    /// returned as it is, uncopied.
    pub async fn reveal<'a>(&self, json: &'a str) -> Result<Cow<'a, str>, StoreError> {
        // Most texts (every event but an order's creation) hold none: one search, no lock.
        if !json.contains(MEMBER) {
            return Ok(Cow::Borrowed(json));
        }
        self.keys_for([json]).await?.reveal(json)
    }

    /// The data keys that open the sealed personal data of `texts` (stored JSON): one
    /// query for all those not in memory, then no I/O to open them.
    pub async fn keys_for<'a>(
        &self,
        texts: impl IntoIterator<Item = &'a str>,
    ) -> Result<OpenKeys, StoreError> {
        let mut ids = Vec::new();
        for text in texts {
            for field in sealed_fields(text) {
                if let Value::Sealed(sealed) = field.value {
                    ids.push(key_id_of(sealed)?.to_owned());
                }
            }
        }
        self.keys(ids).await
    }

    /// Drops what this node holds of `customer`'s keys: after their erasure.
    pub fn forget(&self, customer: &CustomerId) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        for entry in cache.values_mut() {
            if entry.customer_id == customer.as_str() {
                entry.key = None;
                entry.until = None;
            }
        }
    }

    /// How many data keys `customer` has: 0 once erased (and nothing new since).
    pub async fn keys_of(&self, customer: &CustomerId) -> Result<i64, StoreError> {
        #[derive(Deserialize)]
        struct Count {
            n: i64,
        }
        let rows: Vec<Count> = query(
            &self.db,
            "SELECT COUNT(*) AS n FROM customer_keys WHERE customer_id = $1",
            &["n"],
            &[Param::Text(customer.as_str().to_owned())],
        )
        .await?;
        Ok(rows.first().map_or(0, |c| c.n))
    }

    /// The keys of `ids`, or that they are gone: from memory, and one query for all
    /// that are not there.
    async fn keys(&self, mut ids: Vec<String>) -> Result<OpenKeys, StoreError> {
        if ids.is_empty() {
            return Ok(OpenKeys::default());
        }
        ids.sort_unstable();
        ids.dedup();
        let now = Instant::now();
        let missing: Vec<String> = {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            let mut missing: Vec<String> = ids
                .iter()
                .filter(|id| match cache.get(id.as_str()) {
                    Some(c) => c.until.is_some_and(|until| until <= now),
                    None => true,
                })
                .cloned()
                .collect();
            missing.sort_unstable();
            missing.dedup();
            missing
        };
        if missing.is_empty() {
            return Ok(self.held(ids));
        }
        #[derive(Deserialize)]
        struct Row {
            key_id: String,
            customer_id: String,
            sealed_key: String,
        }
        let sql = match self.db {
            Database::Postgres(_) => {
                "SELECT key_id, customer_id, sealed_key FROM customer_keys
                  WHERE key_id = ANY($1)"
            }
            Database::Sqlite(_) => {
                "SELECT key_id, customer_id, sealed_key FROM customer_keys
                  WHERE key_id IN (SELECT value FROM json_each($1))"
            }
        };
        let rows: Vec<Row> = query(
            &self.db,
            sql,
            &["key_id", "customer_id", "sealed_key"],
            &[Param::TextList(missing.clone())],
        )
        .await?;
        let mut opened = HashMap::with_capacity(missing.len());
        for row in rows {
            let place = SEALED_COLUMNS[0].place(&row.key_id);
            let key = self
                .ring
                .open(&row.sealed_key, &place)
                .map_err(|e| StoreError::Corrupt(e.to_string()))
                .and_then(|b64| {
                    SecretKey::parse(&b64).map_err(|_| {
                        StoreError::Corrupt(format!("the data key {} is not a key", row.key_id))
                    })
                })?;
            opened.insert(
                row.key_id,
                Cached {
                    customer_id: row.customer_id,
                    key: Some(KeyRing::new(key)),
                    until: Some(now + OPEN_FOR),
                },
            );
        }
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() + missing.len() > CACHED_KEYS {
            cache.clear();
        }
        for id in missing {
            let entry = opened.remove(&id).unwrap_or(Cached {
                customer_id: String::new(),
                key: None,
                until: None,
            });
            cache.insert(id, entry);
        }
        drop(cache);
        Ok(self.held(ids))
    }

    fn held(&self, ids: Vec<String>) -> OpenKeys {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let keys = ids
            .into_iter()
            .map(|id| {
                let key = cache.get(&id).and_then(|c| c.key.clone());
                (id, key)
            })
            .collect();
        OpenKeys(keys)
    }
}

/// Data keys brought into memory for some texts ([`Vault::keys_for`]): opens their
/// personal data without I/O, on any thread.
#[derive(Default, Clone)]
pub struct OpenKeys(HashMap<String, Option<KeyRing>>);

impl OpenKeys {
    /// `json` with every object's sealed personal data opened in place: its [`FIELDS`]
    /// where the sealed field was, or each `null` and `"erased": true`.
    pub fn reveal<'a>(&self, json: &'a str) -> Result<Cow<'a, str>, StoreError> {
        let found = sealed_fields(json);
        if found.is_empty() {
            return Ok(Cow::Borrowed(json));
        }
        let mut out = String::with_capacity(json.len() + 256);
        let mut at = 0;
        for field in &found {
            out.push_str(&json[at..field.start]);
            let opened = match field.value {
                Value::Sealed(text) => self.open(text)?,
                Value::Clear(object) => {
                    let data: PersonalData = reading_stored(|| serde_json::from_str(object))
                        .map_err(|e| StoreError::Corrupt(format!("legacy personal data: {e}")))?;
                    Opened::Clear(Box::new(data))
                }
            };
            out.push_str(&members(&opened));
            at = field.end;
        }
        out.push_str(&json[at..]);
        Ok(Cow::Owned(out))
    }

    /// Opens sealed text; `Erased` when its key is gone (or was not brought in).
    fn open(&self, sealed: &str) -> Result<Opened, StoreError> {
        let key_id = key_id_of(sealed)?;
        let Some(Some(key)) = self.0.get(key_id) else {
            return Ok(Opened::Erased);
        };
        let clear = key
            .open(sealed, AAD)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let data: PersonalData = reading_stored(|| serde_json::from_str(&clear))
            .map_err(|e| StoreError::Corrupt(format!("sealed personal data: {e}")))?;
        Ok(Opened::Clear(Box::new(data)))
    }
}

/// The data key id of sealed text.
fn key_id_of(sealed: &str) -> Result<&str, StoreError> {
    sealed
        .strip_prefix("sealed:v1:")
        .and_then(|rest| rest.split_once(':'))
        .map(|(id, _)| id)
        .ok_or_else(|| StoreError::Corrupt("sealed personal data is malformed".into()))
}

/// Personal data as readers show it: its fields, or every field `null` and
/// `"erased": true`. The one form of an erasure, in typed answers and in revealed JSON.
impl serde::Serialize for Opened {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Opened::Clear(data) => data.serialize(s),
            Opened::Erased => {
                let mut map = s.serialize_map(Some(FIELDS.len() + 1))?;
                for field in FIELDS {
                    map.serialize_entry(field, &())?;
                }
                map.serialize_entry("erased", &true)?;
                map.end()
            }
        }
    }
}

/// The members that stand for `opened` in an object, without braces.
fn members(opened: &Opened) -> String {
    match opened {
        // Only data with something in it is sealed; this keeps the object whole anyway.
        Opened::Clear(data) if data.is_empty() => format!("\"{SEALED_FIELD}\":null"),
        _ => {
            // A map of strings always serialises, as `{…}`.
            let object = serde_json::to_string(opened).unwrap_or_else(|_| "{}".into());
            object[1..object.len() - 1].to_owned()
        }
    }
}

/// The sealed field's name as a member of compact JSON: `"personal":`.
const MEMBER: &str = "\"personal\":";

/// One sealed field found in JSON text: the byte range of the whole member
/// (`"personal":…`) and its value.
struct Found<'a> {
    start: usize,
    end: usize,
    value: Value<'a>,
}

enum Value<'a> {
    Sealed(&'a str),
    /// A legacy object in the clear (`order.created` 1.1 upcast), as JSON text.
    Clear(&'a str),
}

/// Every `"personal":` member of compact JSON text, in order. Inside a JSON string a
/// quote is always escaped, so the pattern can only match a real member; the legacy
/// object is measured by its braces, skipping strings.
fn sealed_fields(json: &str) -> Vec<Found<'_>> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(offset) = json[from..].find(MEMBER) {
        let start = from + offset;
        let value_at = start + MEMBER.len();
        let rest = &json[value_at..];
        let (value, len) = if let Some(text) = rest.strip_prefix('"') {
            match text.find('"') {
                Some(close) => (Value::Sealed(&text[..close]), close + 2),
                None => break,
            }
        } else if rest.starts_with('{') {
            match object_len(rest) {
                Some(len) => (Value::Clear(&rest[..len]), len),
                None => break,
            }
        } else {
            // `null` or something else: not ours to open.
            from = value_at;
            continue;
        };
        // The member goes; the opened members (never none) take its place.
        let end = value_at + len;
        found.push(Found { start, end, value });
        from = end;
    }
    found
}

/// The length of the JSON object at the start of `text`, braces included.
fn object_len(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, b) in text.bytes().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::values::{Email, FreeText};

    fn data(email: &str) -> PersonalData {
        PersonalData {
            email: Some(Email::parse(email).unwrap()),
            note: Some(FreeText::parse("ring twice").unwrap()),
            ..PersonalData::default()
        }
    }

    /// Sealed text for `data`, and keys that open it (or that know it is gone).
    fn sealed(data: &PersonalData, held: bool) -> (String, OpenKeys) {
        let key = SecretKey::generate();
        let text = KeyRing::new(key.clone()).seal(&serde_json::to_string(data).unwrap(), AAD);
        let keys = OpenKeys(HashMap::from([(
            key.id().to_string(),
            held.then(|| KeyRing::new(key)),
        )]));
        (text, keys)
    }

    #[test]
    fn the_member_searched_for_is_the_sealed_field() {
        assert_eq!(MEMBER, format!("\"{SEALED_FIELD}\":"));
    }

    #[test]
    fn text_without_personal_data_is_returned_uncopied() {
        let json = r#"{"type":"payment.captured","order_id":"o-1"}"#;
        assert!(matches!(
            OpenKeys::default().reveal(json).unwrap(),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn sealed_data_opens_in_place_and_the_rest_keeps_its_order() {
        let (text, keys) = sealed(&data("ada@example.com"), true);
        let json = format!(r#"{{"type":"order.created","personal":"{text}","total":1}}"#);
        assert_eq!(
            keys.reveal(&json).unwrap(),
            r#"{"type":"order.created","email":"ada@example.com","note":"ring twice","total":1}"#
        );
    }

    #[test]
    fn data_whose_key_is_gone_shows_every_field_erased() {
        let (text, keys) = sealed(&data("ada@example.com"), false);
        let json = format!(r#"{{"data":{{"order_id":"o-1","personal":"{text}"}}}}"#);
        let shown: serde_json::Value = serde_json::from_str(&keys.reveal(&json).unwrap()).unwrap();
        let data = &shown["data"];
        for field in FIELDS {
            assert_eq!(data[field], serde_json::Value::Null, "{field}");
        }
        assert_eq!(data["erased"], true);
        assert_eq!(data["order_id"], "o-1");
    }

    #[test]
    fn legacy_clear_data_is_shown_as_written() {
        let json = r#"{"personal":{"shipping_address":{"name":"Ada","line1":"1 St","city":"L","postal_code":"N1","country":"GB"}},"total":1}"#;
        let shown = OpenKeys::default().reveal(json).unwrap();
        assert_eq!(
            shown,
            r#"{"shipping_address":{"name":"Ada","line1":"1 St","city":"L","postal_code":"N1","country":"GB"},"total":1}"#
        );
    }

    #[test]
    fn the_field_s_name_inside_a_string_is_not_a_field() {
        // A note that spells the field out is escaped in JSON: never a member.
        let json = r#"{"note":"\"personal\":\"sealed:v1:00\"","total":1}"#;
        assert!(matches!(
            OpenKeys::default().reveal(json).unwrap(),
            Cow::Borrowed(_)
        ));
    }
}
