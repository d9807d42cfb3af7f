//! The session generation of an embedded (SQLite) store: a value that changes
//! whenever a commit ends sessions, rotates a token or changes a user, so that an
//! in-process session cache can tell that it may hold something stale.
//!
//! A SQLite file can be shared by several processes on one host (`sessiond serve`
//! and the admin CLI `sessiond sessions revoke`, `sessiond user disable`, ...).
//! Every process bumps the generation after such a commit by writing a fresh random
//! value into `<db>-gen` beside the database; a server reads it with one positioned
//! read per request (a cheap syscall, no SQL) and drops its cache when it changed.
//! The file is a signal between live processes only: it is never fsynced, and a
//! restarted process starts with an empty cache anyway.
//!
//! Hand-rolled rather than a crate: it is one 8-byte `pread`/`pwrite` on a file, and
//! no crate offers a cross-process change counter cheaper than that. A random value
//! (not a counter) needs no lock across processes: writers never read-modify-write,
//! and two different generations collide with probability 2^-64.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Where the generation lives.
#[derive(Debug)]
pub struct Generation {
    /// Bumped on every write of this process; the generation of an in-memory
    /// database (one process by definition).
    local: AtomicU64,
    /// `<db>-gen` for a database file.
    file: Option<File>,
}

impl Generation {
    /// For an in-memory database: only this process can change it.
    pub fn in_process() -> Self {
        Generation {
            local: AtomicU64::new(0),
            file: None,
        }
    }

    /// The generation file beside the database `db` (created if missing).
    pub fn beside(db: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(Self::path_for(db))?;
        if file.metadata()?.len() < 8 {
            file.write_all_at(&fresh().to_le_bytes(), 0)?;
        }
        Ok(Generation {
            local: AtomicU64::new(0),
            file: Some(file),
        })
    }

    /// `<db>-gen`.
    pub fn path_for(db: &Path) -> PathBuf {
        let mut name = db.as_os_str().to_owned();
        name.push("-gen");
        PathBuf::from(name)
    }

    /// Announces a change: call after the commit. A failure to write the file is
    /// logged (the commit stands; other processes' caches may then be stale until
    /// the next successful bump), and this process's own cache still sees it.
    pub fn bump(&self) {
        self.local.fetch_add(1, Ordering::SeqCst);
        if let Some(f) = &self.file
            && let Err(e) = f.write_all_at(&fresh().to_le_bytes(), 0)
        {
            crate::telemetry::store_error();
            tracing::error!(error = %e, "could not write the session generation file");
        }
    }

    /// The current generation, or `None` when it cannot be read (then nothing
    /// may be served from a cache).
    pub fn current(&self) -> Option<u64> {
        let local = self.local.load(Ordering::SeqCst);
        match &self.file {
            None => Some(local),
            Some(f) => {
                let mut buf = [0u8; 8];
                f.read_exact_at(&mut buf, 0).ok()?;
                // Mixing in the local count makes this process's own bumps visible
                // even if the file write failed.
                Some(u64::from_le_bytes(buf) ^ local.rotate_left(32))
            }
        }
    }
}

/// A random generation value; if the OS RNG fails, the next step of a process-wide
/// counter (any change is enough to be noticed).
fn fresh() -> u64 {
    static FALLBACK: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    getrandom::u64().unwrap_or_else(|_| FALLBACK.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::SeqCst))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bump_in_one_handle_is_seen_by_another() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let a = Generation::beside(&db).unwrap();
        let b = Generation::beside(&db).unwrap();
        let (a0, b0) = (a.current().unwrap(), b.current().unwrap());
        assert_eq!(a0, b0);
        a.bump();
        assert_ne!(b.current().unwrap(), b0);
        assert_ne!(a.current().unwrap(), a0);
        assert!(Generation::path_for(&db).ends_with("s.db-gen"));
    }

    #[test]
    fn in_process_generation_changes_on_bump() {
        let g = Generation::in_process();
        let g0 = g.current();
        g.bump();
        assert_ne!(g.current(), g0);
    }
}
