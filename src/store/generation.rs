//! The session generation of an embedded (SQLite) store: values that change
//! whenever a commit ends sessions, rotates a token or changes a user (`changes`),
//! or adds or purges sessions (`listings`), so that an in-process cache can tell
//! that it may hold something stale.
//!
//! A SQLite file can be shared by several processes on one host (`sessiond serve`
//! and the admin CLI `sessiond sessions revoke`, `sessiond user disable`, ...).
//! Every process bumps the generation after such a commit by writing a fresh random
//! value into its slot of `<db>-gen` beside the database (bytes 0..8 `changes`,
//! 8..16 `listings`); a server reads both with one positioned read and drops what
//! its cache holds when they changed. The file is a signal between live processes
//! only: it is never fsynced, and a restarted process starts with an empty cache.
//!
//! **Read window.** A read serves for [`READ_WINDOW`] (measured from before the
//! read), so a busy server reads the file about once per window instead of once
//! per request (the `pread` was the largest single cost of a cached validation).
//! In exchange, [`Generation::bump`] returns only after the window has passed
//! since the file was written. So every request that *starts after* a write has
//! returned (a logout answered, a `sessiond sessions revoke` exited) is checked
//! against a read made after that write, in every process: the cache is never
//! staler than a request that raced with the write would be anyway. This
//! process's own bumps are seen at once (they are mixed in from memory).
//!
//! Hand-rolled rather than a crate: it is one 16-byte `pread`/`pwrite` on a file, and
//! no crate offers a cross-process change counter cheaper than that (shared memory
//! would need `unsafe`, which this crate forbids). A random value (not a counter)
//! needs no lock across processes: writers never read-modify-write, and two
//! different generations collide with probability 2^-64.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long one read of the generation file serves (see the module documentation).
pub const READ_WINDOW: Duration = Duration::from_millis(1);

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
    file: Option<SharedFile>,
}

/// The generation file and its last read.
#[derive(Debug)]
struct SharedFile {
    file: File,
    window: Duration,
    /// What `read_at` and `seen` are measured from.
    epoch: Instant,
    /// Nanoseconds after `epoch` until which `seen` may be served: the start of
    /// the read that got it plus the window (0: read the file).
    fresh_until: AtomicU64,
    /// The slots as last read.
    seen: [AtomicU64; 2],
    /// One publisher of a read at a time (see [`SharedFile::slots`]).
    publishing: Mutex<()>,
}

impl SharedFile {
    fn nanos(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Both slots, from the last read if it is recent enough, otherwise from the file.
    ///
    /// Threads that find the last read too old each read the file (one 16-byte
    /// `pread`) rather than wait for one another: waiting on a lock held across the
    /// read put a `futex` wait and wake-up on both runtime workers at most window
    /// ends under load, the largest part of the system calls sessiond made beyond
    /// the HTTP ceiling's. Only publishing what was read is serialized, and a read
    /// is published only if it started after the one published (a slower, older
    /// read never replaces a newer one); a thread that finds another publishing
    /// uses its own read without publishing it.
    fn slots(&self) -> Option<[u64; 2]> {
        let now = self.nanos();
        if now < self.fresh_until.load(Ordering::Acquire) {
            return Some(self.seen.each_ref().map(|v| v.load(Ordering::Acquire)));
        }
        // Only a read that starts after `now` is as fresh as the caller needs.
        let start = self.nanos();
        let mut buf = [0u8; 16];
        if self.file.read_exact_at(&mut buf, 0).is_err() {
            self.fresh_until.store(0, Ordering::Release);
            return None;
        }
        let word = |r: std::ops::Range<usize>| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&buf[r]);
            u64::from_le_bytes(w)
        };
        let slots = [word(0..8), word(8..16)];
        if let Ok(_publishing) = self.publishing.try_lock() {
            let until = start.saturating_add(u64::try_from(self.window.as_nanos()).unwrap_or(0));
            if until > self.fresh_until.load(Ordering::Acquire) {
                for (seen, v) in self.seen.iter().zip(slots) {
                    seen.store(v, Ordering::Release);
                }
                self.fresh_until.store(until, Ordering::Release);
            }
        }
        Some(slots)
    }
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
        Self::beside_with_window(db, READ_WINDOW)
    }

    fn beside_with_window(db: &Path, window: Duration) -> std::io::Result<Self> {
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
            file: Some(SharedFile {
                file,
                window,
                epoch: Instant::now(),
                fresh_until: AtomicU64::new(0),
                seen: [AtomicU64::new(0), AtomicU64::new(0)],
                publishing: Mutex::new(()),
            }),
        })
    }

    /// `<db>-gen`.
    pub fn path_for(db: &Path) -> PathBuf {
        let mut name = db.as_os_str().to_owned();
        name.push("-gen");
        PathBuf::from(name)
    }

    /// Announces a change: call after the commit, and answer the client only
    /// when it returns. A failure to write the file is logged (the commit stands;
    /// other processes' caches may then be stale until the next successful bump),
    /// and this process's own cache still sees it. With a file, it returns once
    /// every other process's read window that began before the write has ended
    /// (see the module documentation): about a millisecond later.
    pub async fn bump(&self, slot: Slot) {
        self.bump_all(&[slot]).await;
    }

    /// [`Generation::bump`] for several slots, waiting once.
    pub async fn bump_all(&self, slots: &[Slot]) {
        let visible = slots.iter().filter_map(|s| self.announce(*s)).max();
        if let Some(visible) = visible {
            // A timer never fires early, but check rather than rely on it.
            while Instant::now() < visible {
                tokio::time::sleep_until(visible.into()).await;
            }
        }
    }

    /// The writing half of [`Generation::bump`]: when the write is visible to
    /// every process (`None`: at once, or never because the write failed).
    fn announce(&self, slot: Slot) -> Option<Instant> {
        let i = slot as usize;
        self.local[i].fetch_add(1, Ordering::SeqCst);
        let f = self.file.as_ref()?;
        match f.file.write_all_at(&fresh().to_le_bytes(), 8 * i as u64) {
            Ok(()) => Some(Instant::now() + f.window),
            Err(e) => {
                crate::telemetry::store_error();
                tracing::error!(error = %e, "could not write the session generation file");
                None
            }
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
                let [c, l] = f.slots()?;
                // Mixing in the local counts makes this process's own bumps visible
                // at once, within a read window or if a file write failed.
                Some(StoreGeneration {
                    changes: c ^ changes.rotate_left(32),
                    listings: l ^ listings.rotate_left(32),
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

    #[tokio::test]
    async fn a_bump_in_one_handle_is_seen_by_another_once_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let a = Generation::beside(&db).unwrap();
        let b = Generation::beside(&db).unwrap();
        let (a0, b0) = (a.current().unwrap(), b.current().unwrap());
        assert_eq!(a0, b0);
        a.bump(Slot::Changes).await;
        let b1 = b.current().unwrap();
        assert_ne!(b1.changes, b0.changes);
        assert_eq!(b1.listings, b0.listings);
        let a1 = a.current().unwrap();
        assert_ne!(a1, a0);
        b.bump(Slot::Listings).await;
        let a2 = a.current().unwrap();
        assert_eq!(a2.changes, a1.changes);
        assert_ne!(a2.listings, a1.listings);
        assert!(Generation::path_for(&db).ends_with("s.db-gen"));
    }

    #[tokio::test]
    async fn a_bump_returns_only_after_the_read_window() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let window = Duration::from_millis(30);
        let a = Generation::beside_with_window(&db, window).unwrap();
        let started = Instant::now();
        a.bump(Slot::Changes).await;
        assert!(started.elapsed() >= window);
    }

    #[tokio::test]
    async fn bump_all_moves_every_slot_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let window = Duration::from_millis(20);
        let a = Generation::beside_with_window(&db, window).unwrap();
        let b = Generation::beside_with_window(&db, Duration::ZERO).unwrap();
        let b0 = b.current().unwrap();
        let started = Instant::now();
        a.bump_all(&[Slot::Changes, Slot::Listings]).await;
        assert!(started.elapsed() >= window);
        let b1 = b.current().unwrap();
        assert_ne!(b1.changes, b0.changes);
        assert_ne!(b1.listings, b0.listings);
    }

    #[tokio::test]
    async fn the_file_is_read_once_per_window_and_own_bumps_show_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        // A window no test run outlasts: what `a` serves comes from its first read.
        let a = Generation::beside_with_window(&db, Duration::from_secs(3600)).unwrap();
        let other = Generation::beside_with_window(&db, Duration::ZERO).unwrap();
        let a0 = a.current().unwrap();
        // Another process writing without waiting (e.g. one that crashed mid-bump):
        // not seen within `a`'s window.
        other.bump(Slot::Changes).await;
        assert_ne!(other.current().unwrap().changes, a0.changes);
        assert_eq!(a.current().unwrap(), a0);
        // `a`'s own bump is seen at once, within its window.
        assert!(a.announce(Slot::Changes).is_some());
        assert_ne!(a.current().unwrap().changes, a0.changes);
        // A zero window reads the file every time.
        let b = Generation::beside_with_window(&db, Duration::ZERO).unwrap();
        let b0 = b.current().unwrap();
        other.bump(Slot::Listings).await;
        assert_ne!(b.current().unwrap().listings, b0.listings);
    }

    #[tokio::test]
    async fn in_process_generation_changes_on_bump() {
        let g = Generation::in_process();
        let g0 = g.current().unwrap();
        g.bump(Slot::Changes).await;
        let g1 = g.current().unwrap();
        assert_ne!(g1.changes, g0.changes);
        g.bump(Slot::Listings).await;
        assert_ne!(g.current().unwrap().listings, g1.listings);
    }
}
