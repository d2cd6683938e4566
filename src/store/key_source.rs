//! Where the server's secret keys come from, and the key file's part in a rotation.
//!
//! A key given as a setting (`ORDERLOG_SECRET_KEY`, with `ORDERLOG_SECRET_KEY_PREVIOUS`
//! to open only) wins. Otherwise the key lives in a file: `ORDERLOG_SECRET_KEY_FILE`,
//! or on SQLite `secret.key` beside the database, made on first start with mode 0600.
//! PostgreSQL servers share one database, so they must share one key: without one
//! given, they refuse to start rather than each make its own. While a rotation runs,
//! the new key waits in `secret.key.next`; a server that finds it seals with it and
//! opens with both, so an interrupted rotation never strands a row.
//!
//! This module never logs or prints a key: only its file's path and its id.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::sealed::{KeyParseError, KeyRing, SecretKey};

/// How to make a key, for every error that lacks one.
const MAKE_ONE: &str = "make one with `orderlog secrets generate-key` \
     (or `head -c 32 /dev/urandom | base64`)";

/// The key settings, as `config` read them.
#[derive(Debug, Clone, Copy)]
pub struct KeySettings<'a> {
    pub key: Option<&'a SecretKey>,
    pub previous: Option<&'a SecretKey>,
    pub file: Option<&'a Path>,
    pub database_url: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "no secret key: on PostgreSQL every server must be given the same key, \
         as ORDERLOG_SECRET_KEY (32 bytes in base64) or ORDERLOG_SECRET_KEY_FILE; {MAKE_ONE}"
    )]
    Missing,
    #[error(
        "the key file {} does not exist; on PostgreSQL it is not made for you, since \
         every server must hold the same key: {MAKE_ONE}, e.g. \
         `(umask 077; orderlog secrets generate-key > {})`",
        path.display(), path.display()
    )]
    FileMissing { path: PathBuf },
    #[error("the key file {}: its content {reason}", path.display())]
    BadFile {
        path: PathBuf,
        reason: KeyParseError,
    },
    #[error("could not read the key file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not write the key file {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the database URL could not be read for the key file's place: {0}")]
    DatabaseUrl(String),
}

/// Where a server's key is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Given as a setting: the operator keeps it.
    Setting,
    /// In this file (and, during a rotation, in its `.next` beside it).
    File(PathBuf),
    /// An SQLite database in memory: a key for this process only, like the data.
    Ephemeral,
}

/// Where the key of these settings is kept; `Err(Missing)` on PostgreSQL without one.
pub fn source(settings: &KeySettings) -> Result<Source, KeyError> {
    if settings.key.is_some() {
        return Ok(Source::Setting);
    }
    if let Some(file) = settings.file {
        return Ok(Source::File(file.to_owned()));
    }
    if !settings.database_url.starts_with("sqlite:") {
        return Err(KeyError::Missing);
    }
    let url = settings.database_url;
    if url.contains(":memory:") || url.contains("mode=memory") {
        return Ok(Source::Ephemeral);
    }
    let dir = super::files::sqlite_dir(url).map_err(|e| KeyError::DatabaseUrl(e.to_string()))?;
    Ok(Source::File(dir.join("secret.key")))
}

/// The key ring of these settings: read (or on SQLite, made) once at start.
pub fn load(settings: &KeySettings) -> Result<KeyRing, KeyError> {
    let ring = match source(settings)? {
        Source::Setting => {
            let key = settings.key.cloned().ok_or(KeyError::Missing)?;
            let ring = KeyRing::new(key);
            match settings.previous {
                Some(previous) => ring.with_opening(previous.clone()),
                None => ring,
            }
        }
        Source::Ephemeral => {
            tracing::info!("the database is in memory; so is its secret key");
            KeyRing::new(SecretKey::generate())
        }
        Source::File(path) => {
            let postgres = !settings.database_url.starts_with("sqlite:");
            let current = match read_key_file(&path)? {
                Some(key) => {
                    tracing::info!(file = %path.display(), key_id = %key.id(), "secret key read");
                    key
                }
                None if postgres => return Err(KeyError::FileMissing { path }),
                None => {
                    let key = create_key_file(&path, &SecretKey::generate())?;
                    tracing::info!(file = %path.display(), key_id = %key.id(), "secret key made (first start)");
                    key
                }
            };
            let next = next_file(&path);
            match read_key_file(&next)? {
                // A rotation was under way: rows may be under either key. Seal with the
                // new one, so that running the rotation again finishes sooner.
                Some(new) => {
                    tracing::warn!(file = %next.display(), key_id = %new.id(), "a key rotation did not finish; sealing with its new key (run `orderlog secrets rotate-key` to finish it)");
                    KeyRing::new(new).with_opening(current)
                }
                None => KeyRing::new(current),
            }
        }
    };
    if let Some(previous) = settings.previous.filter(|_| settings.key.is_none()) {
        return Ok(ring.with_opening(previous.clone()));
    }
    Ok(ring)
}

/// `secret.key.next` beside `secret.key`: the key a rotation seals with.
pub fn next_file(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".next");
    PathBuf::from(name)
}

/// The key a rotation of the key file `path` moves to: the one an interrupted rotation
/// left in `.next`, or a new one written there (mode 0600).
pub fn begin_rotation(path: &Path) -> Result<SecretKey, KeyError> {
    let next = next_file(path);
    match read_key_file(&next)? {
        Some(key) => Ok(key),
        None => create_key_file(&next, &SecretKey::generate()),
    }
}

/// Ends a rotation: `.next` replaces the key file, in one rename.
pub fn finish_rotation(path: &Path) -> Result<(), KeyError> {
    let write = |source| KeyError::Write {
        path: path.to_owned(),
        source,
    };
    std::fs::rename(next_file(path), path).map_err(write)?;
    // The rename is durable once the directory is.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(write)?;
    }
    Ok(())
}

/// The key in `path`, `None` when there is no such file.
fn read_key_file(path: &Path) -> Result<Option<SecretKey>, KeyError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(KeyError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(file = %path.display(), "the key file can be read by other users; `chmod 600` it");
            }
        }
    }
    SecretKey::parse(&text)
        .map(Some)
        .map_err(|reason| KeyError::BadFile {
            path: path.to_owned(),
            reason,
        })
}

/// Writes `key` to a new file that only its owner can read: created with mode 0600,
/// never widened first. When another process made it first, its key is the one.
fn create_key_file(path: &Path, key: &SecretKey) -> Result<SecretKey, KeyError> {
    let write = |source| KeyError::Write {
        path: path.to_owned(),
        source,
    };
    let mut file = match super::files::create_private(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return read_key_file(path)?.ok_or(KeyError::Write {
                path: path.to_owned(),
                source: e,
            })
        }
        Err(e) => return Err(write(e)),
    };
    file.write_all(format!("{}\n", key.to_base64()).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(write)?;
    Ok(key.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(url: &str) -> KeySettings<'_> {
        KeySettings {
            key: None,
            previous: None,
            file: None,
            database_url: url,
        }
    }

    #[test]
    fn the_key_file_sits_beside_the_sqlite_database() {
        assert_eq!(
            source(&sqlite("sqlite://data/orderlog.db")).unwrap(),
            Source::File(PathBuf::from("data/secret.key"))
        );
        assert_eq!(
            source(&sqlite("sqlite::memory:")).unwrap(),
            Source::Ephemeral
        );
        assert!(matches!(
            source(&sqlite("postgres://x@y/z")),
            Err(KeyError::Missing)
        ));
    }

    #[test]
    fn a_key_file_is_made_once_with_mode_0600_and_read_after() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/orderlog.db", dir.path().display());
        let first = load(&sqlite(&url)).unwrap();
        let second = load(&sqlite(&url)).unwrap();
        assert_eq!(first.sealing_id(), second.sealing_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("secret.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn an_unfinished_rotation_seals_with_the_new_key_and_opens_with_both() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/orderlog.db", dir.path().display());
        let old = load(&sqlite(&url)).unwrap();
        let sealed = old.seal("whsec_x", "t.c:1");
        let new = begin_rotation(&dir.path().join("secret.key")).unwrap();
        let during = load(&sqlite(&url)).unwrap();
        assert_eq!(during.sealing_id(), new.id());
        assert_eq!(during.open(&sealed, "t.c:1").unwrap(), "whsec_x");
        finish_rotation(&dir.path().join("secret.key")).unwrap();
        let after = load(&sqlite(&url)).unwrap();
        assert_eq!(after.sealing_id(), new.id());
        assert!(after.open(&sealed, "t.c:1").is_err());
    }
}
