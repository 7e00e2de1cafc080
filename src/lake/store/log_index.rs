//! The newest names of a local lake's `_delta_log/` directories, kept in memory and current by
//! the kernel's inotify events, so that listing a log from an offset costs what is newer than
//! the offset, not what the directory holds.
//!
//! A log keeps its commit files for the log retention (30 days): at two commits a second a table's
//! log directory holds ≈ 170,000 files after a day, and every listing read all of them from the
//! disk (≈ 0.1 µs an entry in ext4's readdir) — after every commit and every refresh of every
//! table. Here a directory is read once; inotify then reports each name created, renamed or
//! removed in it. Those events are queued inside the system call that makes the change, so a
//! listing that first takes every queued event sees every change completed before it began,
//! from this process or any other on the host: what a fresh read of the directory would see.
//!
//! Only the names above a floor are held: a margin below the lowest offset among the recent
//! listings (the kernel lists from the version it holds, and from the last checkpoint when it
//! loads a table). A listing from below the floor reads the directory again. Where the events cannot be trusted (a file system whose
//! changes can come from another host, a queue that overflowed, a subdirectory or an unusual name
//! in the log, no inotify at all), the directory is read as before.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ffi::CString;
use std::ops::Bound;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Listings remembered to place the floor.
const RECENT: usize = 32;
/// Names held below the lowest recent offset (a checkpoint's worth of commits and more).
const MARGIN: usize = 4096;
/// Directories watched at most; more are read as before.
const MAX_WATCHED: usize = 512;

/// File systems whose every change is made by this host's kernel, and so reported to inotify.
const LOCAL_FILE_SYSTEMS: [i64; 7] = [
    0xEF53,      // ext2/3/4
    0x5846_5342, // xfs
    0x9123_683E, // btrfs
    0x0102_1994, // tmpfs
    0xF2F5_2010, // f2fs
    0x2FC1_2FC1, // zfs
    0x794C_7630, // overlayfs
];

/// Whether a name in a log directory is one the walk would list as a plain file name: anything
/// else makes the directory's listing the walk's business.
pub fn is_plain(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// A file being written (`<name>#<digits>`), renamed into place when complete; the walk skips it.
pub fn is_partial(name: &str) -> bool {
    name.split_once('#').is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// One watched directory.
struct Watched {
    /// Every file name in the directory above `floor`.
    names: BTreeSet<String>,
    floor: String,
    recent: VecDeque<String>,
}

impl Watched {
    fn apply(&mut self, name: &str, present: bool) {
        if name <= self.floor.as_str() {
            return;
        }
        if present {
            self.names.insert(name.to_string());
        } else {
            self.names.remove(name);
        }
    }

    /// The names after `after`. Past `2 × MARGIN` names held, the floor is raised to keep
    /// [`MARGIN`] names below the lowest recent offset: the kernel also lists from a version or
    /// two back, and from the last checkpoint when it loads a table.
    fn after(&mut self, after: &str) -> Vec<String> {
        let names = self.names.range::<str, _>((Bound::Excluded(after), Bound::Unbounded)).cloned().collect();
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(after.to_string());
        if self.names.len() > 2 * MARGIN
            && let Some(lowest) = self.recent.iter().min()
        {
            let below = self.names.range::<str, _>((Bound::Unbounded, Bound::Excluded(lowest.as_str()))).count();
            if let Some(floor) = below.checked_sub(MARGIN + 1).and_then(|i| self.names.iter().nth(i)).cloned() {
                self.names = self.names.split_off(floor.as_str());
                self.names.remove(floor.as_str());
                self.floor = floor;
            }
        }
        names
    }
}

/// The inotify instance and what it watches.
struct Index {
    fd: OwnedFd,
    /// Where events are read into.
    buf: Vec<u8>,
    watched: HashMap<i32, Watched>,
    /// The watch of each directory path (two paths of one directory share a watch).
    wd_of: HashMap<PathBuf, i32>,
}

impl Index {
    fn open() -> Option<Mutex<Index>> {
        // SAFETY: plain system call; the descriptor is owned from here on.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        // SAFETY: `fd` is a fresh descriptor no one else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Some(Mutex::new(Index { fd, buf: vec![0u8; 64 * 1024], watched: HashMap::new(), wd_of: HashMap::new() }))
    }

    fn forget(&mut self, wd: i32) {
        self.watched.remove(&wd);
        self.wd_of.retain(|_, w| *w != wd);
    }

    fn forget_all(&mut self) {
        for wd in self.watched.keys() {
            // SAFETY: plain system call on our own descriptor.
            unsafe { libc::inotify_rm_watch(self.fd.as_raw_fd(), *wd) };
        }
        self.watched.clear();
        self.wd_of.clear();
    }

    /// Applies every queued event.
    fn drain(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        self.drain_into(&mut buf);
        self.buf = buf;
    }

    fn drain_into(&mut self, buf: &mut [u8]) {
        loop {
            // SAFETY: reads at most `buf.len()` bytes into `buf`.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                // EAGAIN: nothing queued. Any other failure leaves the index unusable.
                if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock {
                    self.forget_all();
                }
                return;
            }
            let mut at = 0usize;
            let header = std::mem::size_of::<libc::inotify_event>();
            while at + header <= n as usize {
                // SAFETY: the kernel wrote a whole event header at `at`; read unaligned.
                let event: libc::inotify_event = unsafe { std::ptr::read_unaligned(buf[at..].as_ptr().cast()) };
                let raw = &buf[at + header..at + header + event.len as usize];
                let name = &raw[..raw.iter().position(|b| *b == 0).unwrap_or(raw.len())];
                at += header + event.len as usize;
                self.event(event.wd, event.mask, name);
            }
        }
    }

    fn event(&mut self, wd: i32, mask: u32, name: &[u8]) {
        if mask & libc::IN_Q_OVERFLOW != 0 {
            self.forget_all();
            return;
        }
        if mask & (libc::IN_IGNORED | libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_UNMOUNT) != 0 {
            // SAFETY: plain system call on our own descriptor; a watch already gone is no harm.
            unsafe { libc::inotify_rm_watch(self.fd.as_raw_fd(), wd) };
            self.forget(wd);
            return;
        }
        let Some(watched) = self.watched.get_mut(&wd) else { return };
        let name = std::str::from_utf8(name).ok();
        match name {
            Some(name) if is_partial(name) => {}
            Some(name) if is_plain(name) && mask & libc::IN_ISDIR == 0 => {
                watched.apply(name, mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0);
            }
            // A subdirectory or a name the walk would order differently: read as before.
            _ => {
                // SAFETY: as above.
                unsafe { libc::inotify_rm_watch(self.fd.as_raw_fd(), wd) };
                self.forget(wd);
            }
        }
    }

    /// Starts watching `dir`, whose names after `after` are read in full.
    fn watch(&mut self, dir: &Path, after: &str) -> Option<Vec<String>> {
        if self.wd_of.len() >= MAX_WATCHED || !on_local_file_system(dir) {
            return None;
        }
        let path = CString::new(dir.as_os_str().as_bytes()).ok()?;
        let mask = libc::IN_CREATE
            | libc::IN_DELETE
            | libc::IN_MOVED_FROM
            | libc::IN_MOVED_TO
            | libc::IN_DELETE_SELF
            | libc::IN_MOVE_SELF
            | libc::IN_ONLYDIR
            | libc::IN_EXCL_UNLINK;
        // SAFETY: `path` is a NUL-terminated string that outlives the call.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), path.as_ptr(), mask) };
        if wd < 0 {
            return None;
        }
        // Watching starts before the read, so a change during the read is both read and queued;
        // applied later in order, the events leave each name as its last change left it.
        let Some(names) = read_after(dir, after) else {
            // SAFETY: plain system call on our own descriptor.
            unsafe { libc::inotify_rm_watch(self.fd.as_raw_fd(), wd) };
            self.forget(wd);
            return None;
        };
        tracing::debug!(dir = %dir.display(), names = names.len(), "log directory watched");
        self.wd_of.insert(dir.to_path_buf(), wd);
        let watched =
            Watched { names: names.iter().cloned().collect(), floor: after.to_string(), recent: VecDeque::new() };
        self.watched.insert(wd, watched);
        Some(names)
    }

    fn names_after(&mut self, dir: &Path, after: &str) -> Option<Vec<String>> {
        self.drain();
        let Some(wd) = self.wd_of.get(dir).copied() else { return self.watch(dir, after) };
        let Some(watched) = self.watched.get_mut(&wd) else {
            self.wd_of.remove(dir);
            return self.watch(dir, after);
        };
        if after >= watched.floor.as_str() {
            return Some(watched.after(after));
        }
        // Older names than held: read them, and hold them from here on.
        tracing::debug!(dir = %dir.display(), after, floor = %watched.floor, "log directory read again: listed from below the names held");
        let names = read_after(dir, after)?;
        watched.floor = after.to_string();
        watched.names = names.iter().cloned().collect();
        watched.recent.clear();
        Some(names)
    }
}

fn on_local_file_system(dir: &Path) -> bool {
    let Ok(path) = CString::new(dir.as_os_str().as_bytes()) else { return false };
    // SAFETY: `statfs` fills the zeroed struct; `path` is NUL-terminated.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(path.as_ptr(), &mut fs) } != 0 {
        return false;
    }
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between targets.
    LOCAL_FILE_SYSTEMS.contains(&(fs.f_type as i64))
}

/// The plain file names in `dir` after `after`, sorted, read from the disk; `None` where the walk
/// must answer (a subdirectory, an unusual name) or the directory cannot be read.
pub fn read_after(dir: &Path, after: &str) -> Option<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).ok()? {
        let entry = entry.ok()?;
        let name = entry.file_name();
        let name = name.to_str()?;
        if is_partial(name) {
            continue;
        }
        if !is_plain(name) || !entry.file_type().ok()?.is_file() {
            return None;
        }
        if name > after {
            names.push(name.to_string());
        }
    }
    names.sort_unstable();
    Some(names)
}

/// The plain file names in the log directory `dir` after `after`, sorted: from the index where it
/// can answer, else read from the disk.
pub fn names_after(dir: &Path, after: &str) -> Option<Vec<String>> {
    static INDEX: OnceLock<Option<Mutex<Index>>> = OnceLock::new();
    let index = INDEX.get_or_init(Index::open).as_ref();
    if let Some(index) = index {
        let mut index = index.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(names) = index.names_after(dir, after) {
            return Some(names);
        }
    }
    read_after(dir, after)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: u64) -> String {
        format!("{n:020}.json")
    }

    #[test]
    fn the_floor_keeps_a_margin_below_the_lowest_recent_offset() {
        let top = 3 * MARGIN as u64;
        let mut w = Watched { names: (0..top).map(v).collect(), floor: String::new(), recent: VecDeque::new() };
        let lowest = top - 100;
        assert_eq!(w.after(&v(lowest)).len(), 99);
        assert_eq!(w.floor, v(lowest - MARGIN as u64 - 1), "{MARGIN} names kept below {lowest}'s");
        assert_eq!(w.names.first(), Some(&v(lowest - MARGIN as u64)));
        assert_eq!(w.after(&v(lowest - 10)).len(), 109, "a listing a few versions back is answered");
        w.apply(&v(10), true);
        assert!(!w.names.contains(&v(10)), "a name below the floor is not held");
        w.apply(&v(top), true);
        w.apply(&v(top - 1), false);
        assert_eq!(w.after(&v(top - 3)), [v(top - 2), v(top)]);
        let held = w.names.len();
        w.after(&v(top - 2));
        assert_eq!(w.names.len(), held, "no trim below 2 × {MARGIN} names held");
    }

    fn index() -> Mutex<Index> {
        Index::open().expect("inotify on this machine")
    }

    #[test]
    fn a_watched_directory_answers_as_a_fresh_read_after_every_change() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("_delta_log");
        std::fs::create_dir(&log).unwrap();
        for n in 0..5 {
            std::fs::write(log.join(v(n)), "x").unwrap();
        }
        let index = index();
        let mut index = index.lock().unwrap();
        let check = |index: &mut Index, after: &str| {
            let held = index.names_after(&log, after);
            assert_eq!(held, read_after(&log, after), "from {after:?}");
            held.unwrap()
        };
        assert_eq!(check(&mut index, &v(2)), [v(3), v(4)]);
        assert_eq!(index.watched.len(), 1, "watched from the first listing");

        // Created in place, written then renamed into place, linked into place, removed.
        std::fs::write(log.join(v(5)), "x").unwrap();
        std::fs::write(log.join(format!("{}#7", v(6))), "x").unwrap();
        assert_eq!(check(&mut index, &v(2)), [v(3), v(4), v(5)], "a partial file is not listed");
        std::fs::rename(log.join(format!("{}#7", v(6))), log.join(v(6))).unwrap();
        std::fs::write(log.join("tmp"), "x").unwrap();
        std::fs::hard_link(log.join("tmp"), log.join(v(7))).unwrap();
        std::fs::remove_file(log.join("tmp")).unwrap();
        std::fs::remove_file(log.join(v(3))).unwrap();
        std::fs::write(log.join("00000000000000000006.checkpoint.parquet"), "x").unwrap();
        std::fs::write(log.join("_last_checkpoint"), "x").unwrap();
        assert_eq!(
            check(&mut index, &v(2)),
            [v(4), v(5), "00000000000000000006.checkpoint.parquet".into(), v(6), v(7), "_last_checkpoint".into()]
        );
        // From below the floor: read again, and right.
        assert_eq!(check(&mut index, &v(0))[0], v(1));

        // A subdirectory: no longer watched; the walk answers.
        std::fs::create_dir(log.join("_commits")).unwrap();
        assert_eq!(index.names_after(&log, &v(2)), None);
        assert!(index.watched.is_empty());

        // A watched directory removed and made again at the same path.
        std::fs::remove_dir(log.join("_commits")).unwrap();
        assert_eq!(check(&mut index, &v(5)).len(), 4);
        std::fs::remove_dir_all(&log).unwrap();
        std::fs::create_dir(&log).unwrap();
        std::fs::write(log.join(v(9)), "x").unwrap();
        assert_eq!(check(&mut index, &v(5)), [v(9)]);
    }
}
