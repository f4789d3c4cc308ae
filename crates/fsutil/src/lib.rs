//! File-system rules every veto store follows, in one place.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Makes a store's file readable by its owner only (0600), creating it and
/// its directory if needed, before SQLite opens it: SQLite gives the
/// `-wal` and `-shm` files the database's mode, and the records, hashes
/// and change log inside are no one else's business. An existing file is
/// tightened too. Best effort: opening the store reports a real failure.
pub fn private_file(path: &Path) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path);
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        let _ = std::fs::set_permissions(Path::new(&side), std::fs::Permissions::from_mode(0o600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_are_the_owners_only() {
        let dir = std::env::temp_dir().join(format!("veto-fsutil-{}", std::process::id()));
        let db = dir.join("sub/x.db");
        private_file(&db);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&db), 0o600);
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        private_file(&db);
        assert_eq!(mode(&db), 0o600);
        let _ = std::fs::remove_dir_all(dir);
    }
}
