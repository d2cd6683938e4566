//! Files the server makes for itself beside its database (the secret key, the bootstrap
//! token): readable by their owner alone from the moment they exist.

use std::fs::File;
use std::path::Path;

/// Creates `path`, which must not exist yet, with mode 0600 (never wider first), and
/// its directory when missing.
pub fn create_private(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// The directory of an SQLite database URL's file (`.` for a bare file name), where
/// the server keeps the files it makes for itself.
pub fn sqlite_dir(url: &str) -> Result<std::path::PathBuf, sqlx::Error> {
    use std::str::FromStr;

    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)?;
    Ok(match options.get_filename().parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    })
}
