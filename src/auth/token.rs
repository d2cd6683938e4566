//! API tokens as values: the secret a client sends, the hash we keep, and the name
//! events record as their actor. A token's text is never stored or logged.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const PREFIX: &str = "olk_";
/// 256 bits: guessing is out of the question, so a plain hash (no salt, no stretching)
/// is enough to store it.
const RANDOM_BYTES: usize = 32;

/// A bearer token: `olk_` and 32 random bytes, base64url without padding.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn generate() -> Token {
        let mut bytes = [0u8; RANDOM_BYTES];
        rand::thread_rng().fill_bytes(&mut bytes);
        Token(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// A token someone supplies (`ORDERLOG_BOOTSTRAP_TOKEN`): it must be one we could
    /// have made, so a weak one is refused rather than provisioned.
    pub fn parse(raw: &str) -> Result<Token, String> {
        let encoded = raw.strip_prefix(PREFIX).ok_or("must start with `olk_`")?;
        let bytes = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| "must be `olk_` followed by base64url (no padding)")?;
        if bytes.len() < RANDOM_BYTES {
            return Err(format!(
                "must carry at least {RANDOM_BYTES} random bytes (it has {}); make one with `orderlog tokens create`",
                bytes.len()
            ));
        }
        Ok(Token(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash::of(self.0.as_bytes())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(…)")
    }
}

/// SHA-256 of a token's text: what the database keeps.
#[derive(Clone, Copy)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// The hash of whatever a client presented, well-formed or not.
    pub fn of(presented: &[u8]) -> TokenHash {
        TokenHash(Sha256::digest(presented).into())
    }

    /// The first 8 bytes, in hex: the indexed column a candidate is found by. The
    /// whole hash is then compared in constant time ([`TokenHash::matches`]), so how
    /// long a lookup takes says nothing about how close a guess came.
    pub fn lookup(&self) -> String {
        hex::encode(&self.0[..8])
    }

    pub fn lookup_key(&self) -> [u8; 8] {
        let mut key = [0u8; 8];
        key.copy_from_slice(&self.0[..8]);
        key
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(raw: &str) -> Option<TokenHash> {
        let bytes = hex::decode(raw).ok()?;
        Some(TokenHash(bytes.try_into().ok()?))
    }

    pub fn matches(&self, other: &TokenHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({}…)", self.lookup())
    }
}

/// A token's name: the actor on every event its requests append, so it is short and
/// plain (letters, digits, `.`, `_`, `-`, `:`; at most 64).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenName(String);

impl TokenName {
    pub fn parse(raw: &str) -> Result<TokenName, String> {
        if raw.is_empty() || raw.len() > 64 {
            return Err("must be 1 to 64 characters".into());
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
        {
            return Err("may hold only letters, digits, `.`, `_`, `-` and `:`".into());
        }
        Ok(TokenName(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TokenName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_olk_and_32_bytes_of_base64url() {
        let token = Token::generate();
        assert!(token.as_str().starts_with("olk_"));
        assert_eq!(token.as_str().len(), 4 + 43);
        assert_eq!(Token::parse(token.as_str()), Ok(token.clone()));
        assert_ne!(token, Token::generate());
    }

    #[test]
    fn weak_or_foreign_tokens_are_not_provisioned() {
        assert!(Token::parse("secret").is_err());
        assert!(Token::parse("olk_c2hvcnQ")
            .unwrap_err()
            .contains("at least 32"));
        assert!(Token::parse("olk_not base64!").is_err());
    }

    #[test]
    fn hashes_match_only_their_own_token() {
        let token = Token::generate();
        let stored = TokenHash::from_hex(&token.hash().to_hex()).unwrap();
        assert!(stored.matches(&token.hash()));
        assert!(!stored.matches(&Token::generate().hash()));
        assert_eq!(stored.lookup().len(), 16);
    }

    #[test]
    fn names_are_plain() {
        assert!(TokenName::parse("shopify-prod:checkout_1.2").is_ok());
        assert!(TokenName::parse("").is_err());
        assert!(TokenName::parse("a b").is_err());
        assert!(TokenName::parse(&"x".repeat(65)).is_err());
    }
}
