//! The session generation of an embedded (SQLite) store: values that change
//! whenever a commit ends sessions, rotates a token or changes a user (`changes`),
//! or adds or purges sessions (`listings`), so that an in-process cache can tell
//! that it may hold something stale.
//!
//! A SQLite file can be shared by several processes on one host (`sessiond serve`
//! and the admin CLI `sessiond sessions revoke`, `sessiond user disable`, ...).
//! Every process bumps the generation after such a commit by writing a fresh random
//! value into its slot of `<db>-gen` beside the database (bytes 0..8 `changes`,
//! 8..16 `listings`); a server reads both with one positioned read per request (a
//! cheap syscall, no SQL) and drops what its cache holds when they changed.
//! The file is a signal between live processes only: it is never fsynced, and a
//! restarted process starts with an empty cache anyway.
//!
//! Hand-rolled rather than a crate: it is one 16-byte `pread`/`pwrite` on a file, and
//! no crate offers a cross-process change counter cheaper than that. A random value
//! (not a counter) needs no lock across processes: writers never read-modify-write,
//! and two different generations collide with probability 2^-64.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A generation as read: see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreGeneration {
    /// Moves when sessions end, tokens rotate or users change.
    pub changes: u64,
    /// Moves when sessions are added or purged.
    pub listings: u64,
}

/// Which slot a write bumps.
#[derive(Clone, Copy, Debug)]
pub enum Slot {
    Changes = 0,
    Listings = 1,
}

/// Where the generation lives.
#[derive(Debug)]
pub struct Generation {
    /// Bumped on every write of this process, per slot; the generation of an
    /// in-memory database (one process by definition).
    local: [AtomicU64; 2],
    /// `<db>-gen` for a database file.
    file: Option<File>,
}

impl Generation {
    /// For an in-memory database: only this process can change it.
    pub fn in_process() -> Self {
        Generation {
            local: [AtomicU64::new(0), AtomicU64::new(0)],
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
        if file.metadata()?.len() < 16 {
            let mut init = [0u8; 16];
            init[..8].copy_from_slice(&fresh().to_le_bytes());
            init[8..].copy_from_slice(&fresh().to_le_bytes());
            file.write_all_at(&init, 0)?;
        }
        Ok(Generation {
            local: [AtomicU64::new(0), AtomicU64::new(0)],
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
    pub fn bump(&self, slot: Slot) {
        let i = slot as usize;
        self.local[i].fetch_add(1, Ordering::SeqCst);
        if let Some(f) = &self.file
            && let Err(e) = f.write_all_at(&fresh().to_le_bytes(), 8 * i as u64)
        {
            crate::telemetry::store_error();
            tracing::error!(error = %e, "could not write the session generation file");
        }
    }

    /// The current generation, or `None` when it cannot be read (then nothing
    /// may be served from a cache).
    pub fn current(&self) -> Option<StoreGeneration> {
        let local = |i: usize| self.local[i].load(Ordering::SeqCst);
        let (changes, listings) = (local(0), local(1));
        match &self.file {
            None => Some(StoreGeneration { changes, listings }),
            Some(f) => {
                let mut buf = [0u8; 16];
                f.read_exact_at(&mut buf, 0).ok()?;
                let word = |r: std::ops::Range<usize>| {
                    let mut w = [0u8; 8];
                    w.copy_from_slice(&buf[r]);
                    u64::from_le_bytes(w)
                };
                // Mixing in the local counts makes this process's own bumps visible
                // even if a file write failed.
                Some(StoreGeneration {
                    changes: word(0..8) ^ changes.rotate_left(32),
                    listings: word(8..16) ^ listings.rotate_left(32),
                })
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
        a.bump(Slot::Changes);
        let b1 = b.current().unwrap();
        assert_ne!(b1.changes, b0.changes);
        assert_eq!(b1.listings, b0.listings);
        let a1 = a.current().unwrap();
        assert_ne!(a1, a0);
        b.bump(Slot::Listings);
        let a2 = a.current().unwrap();
        assert_eq!(a2.changes, a1.changes);
        assert_ne!(a2.listings, a1.listings);
        assert!(Generation::path_for(&db).ends_with("s.db-gen"));
    }

    #[test]
    fn in_process_generation_changes_on_bump() {
        let g = Generation::in_process();
        let g0 = g.current().unwrap();
        g.bump(Slot::Changes);
        let g1 = g.current().unwrap();
        assert_ne!(g1.changes, g0.changes);
        g.bump(Slot::Listings);
        assert_ne!(g.current().unwrap().listings, g1.listings);
    }
}
