//! Per-core group commit: one sync round covers every partition of a core.
//!
//! A partition that needs its written bytes durable asks the core's
//! [`CoreSyncer`]. Requests that arrive while a sync round is running wait for
//! the next round. A round is one of two kinds:
//!
//! - **Flush round**: one `fdatasync` of the requesting partition's file when
//!   no request of the round has metadata to commit. The segments write with
//!   O_DIRECT, and small writes into blocks already written (the zeroed area,
//!   see [`super::log`]) change no metadata, so their bytes only need the
//!   device's volatile cache flushed. On ext4 and XFS an `fdatasync` always
//!   ends with a device cache flush (also when the file has nothing to
//!   commit), and a flush covers every write the device completed before it,
//!   whatever the file. So one call serves all partitions of the round.
//! - **Full round**: one `syncfs(2)` of the filesystem, when any request of the
//!   round has blocks written past what an earlier full round committed (a
//!   write that zeroed ahead, a large write into preallocated blocks, the first
//!   write after recovery). It commits the metadata of every file written with
//!   O_DIRECT and flushes the device cache. On filesystems other than ext4 and
//!   XFS every round is a full one.
//!
//! So N partitions with acks=all traffic on a core cost one sync per round
//! instead of N `fdatasync`s. Measured on this project's test VM (ext4 on
//! virtio, shared with other work; 25 MB/s of 1 KiB acks=all records over 16
//! partitions, `linger.ms=0`, one shard): with flush rounds 99% of rounds were
//! flush rounds and rounds took 0.29-0.37 ms at the median, against 0.37-0.48 ms
//! when every round was a `syncfs` (benches/RESULTS.md). One `fdatasync` per
//! written file per round, all submitted together through io_uring, took
//! 1.3-2.9 ms against 0.5-0.9 ms for `syncfs` in an earlier run: io_uring runs
//! each fsync on a kernel worker thread and each commits its own file's metadata.

use std::cell::{Cell, RefCell};
use std::os::unix::io::AsRawFd;
use std::rc::Rc;

use glommio::io::DmaFile;

use crate::util::LocalNotify;

pub struct CoreSyncer {
    /// Rounds started so far; a request made now is served by round `started + 1`.
    started: Cell<u64>,
    /// Rounds completed so far.
    completed: Cell<u64>,
    running: Cell<bool>,
    /// A request waiting for the next round has metadata to commit: it must be a full round.
    next_full: Cell<bool>,
    /// Whether a flush round is sound on the data directory's filesystem (checked once).
    flush_rounds_sound: Cell<Option<bool>>,
    /// The error of the last completed round, if it failed.
    failed_round: Cell<Option<(u64, i32)>>,
    done: LocalNotify,
    /// Rounds run, for metrics.
    pub rounds: Cell<u64>,
    /// Of those, full rounds (`syncfs`), for metrics.
    pub full_rounds: Cell<u64>,
    /// Duration of each round in µs, for metrics.
    pub round_us: RefCell<histogram::Histogram>,
}

impl Default for CoreSyncer {
    fn default() -> Self {
        CoreSyncer {
            started: Cell::new(0),
            completed: Cell::new(0),
            running: Cell::new(false),
            next_full: Cell::new(false),
            flush_rounds_sound: Cell::new(None),
            failed_round: Cell::new(None),
            done: LocalNotify::default(),
            rounds: Cell::new(0),
            full_rounds: Cell::new(0),
            round_us: RefCell::new(crate::metrics::new_histogram()),
        }
    }
}

impl CoreSyncer {
    /// Returns once a sync that started after this call has completed, so every byte
    /// whose write completed before the call is durable. `file` is the caller's file,
    /// holding the bytes it needs durable (kept open for the round); `metadata` says
    /// whether some of them lie in blocks whose metadata no full round has committed.
    pub async fn sync(self: &Rc<Self>, file: Rc<DmaFile>, metadata: bool) -> std::io::Result<()> {
        let wanted = self.started.get() + 1;
        if metadata {
            self.next_full.set(true);
        }
        loop {
            let listener = self.done.listen();
            if self.completed.get() >= wanted {
                return match self.failed_round.get() {
                    Some((round, errno)) if round >= wanted => Err(std::io::Error::from_raw_os_error(errno)),
                    _ => Ok(()),
                };
            }
            if !self.running.get() {
                self.run_round(&file).await;
                continue;
            }
            listener.await;
        }
    }

    async fn run_round(&self, file: &Rc<DmaFile>) {
        self.running.set(true);
        let began = std::time::Instant::now();
        let round = self.started.get() + 1;
        self.started.set(round);
        let fd = file.as_raw_fd();
        let sound = match self.flush_rounds_sound.get() {
            Some(sound) => sound,
            None => {
                let sound = flush_covers_device(fd);
                tracing::info!(flush_rounds = sound, "group commit: flush rounds {}", if sound { "used when no metadata is pending" } else { "not sound on this filesystem: every round is a syncfs" });
                self.flush_rounds_sound.set(Some(sound));
                sound
            }
        };
        let full = self.next_full.replace(false) || !sound;
        // `file` stays open until the blocking call returns: the Rc is held across the await.
        let rc = glommio::executor()
            .spawn_blocking(move || {
                // SAFETY: `fd` is an open descriptor for the whole call (see above).
                let rc = unsafe { if full { libc::syncfs(fd) } else { libc::fdatasync(fd) } };
                if rc == 0 {
                    0
                } else {
                    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
                }
            })
            .await;
        if full {
            self.full_rounds.set(self.full_rounds.get() + 1);
        }
        if rc != 0 {
            self.failed_round.set(Some((round, rc)));
        }
        self.rounds.set(self.rounds.get() + 1);
        let _ = self.round_us.borrow_mut().increment(began.elapsed().as_micros() as u64);
        self.completed.set(round);
        self.running.set(false);
        self.done.notify_all();
    }
}

/// Whether an `fdatasync` of any file on `fd`'s filesystem flushes the device cache
/// even when the file has nothing to commit: true for ext4 and XFS (both issue the
/// flush unconditionally), assumed false for anything else.
fn flush_covers_device(fd: std::os::unix::io::RawFd) -> bool {
    const EXT4_SUPER_MAGIC: i64 = 0xEF53;
    const XFS_SUPER_MAGIC: i64 = 0x5846_5342;
    // SAFETY: `statfs` is plain data; `fd` is open (held by the caller).
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(fd, &mut st) } != 0 {
        return false;
    }
    matches!(st.f_type as i64, EXT4_SUPER_MAGIC | XFS_SUPER_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LogConfig;
    use crate::protocol::batch::build_batch;
    use crate::storage::log::{Durability, PartitionLog};

    #[test]
    fn one_round_serves_many_partitions_and_every_ack_is_durable() {
        glommio::LocalExecutorBuilder::default()
            .make()
            .unwrap()
            .run(async {
                let dir = tempfile::tempdir().unwrap();
                let syncer = Rc::new(CoreSyncer::default());
                let mut logs = Vec::new();
                for p in 0..8 {
                    let log = PartitionLog::open(dir.path().join(format!("t-{p}")), LogConfig::with_segment_bytes(1 << 20)).await.unwrap();
                    log.set_syncer(syncer.clone());
                    logs.push(log);
                }
                // 64 acks=all appends spread over 8 partitions, all in flight at once.
                let mut tasks = Vec::new();
                for i in 0..64usize {
                    let log = logs[i % 8].clone();
                    tasks.push(glommio::spawn_local(async move {
                        let b = build_batch(&[(None, Some(format!("v{i}").as_bytes()))], 1);
                        log.append(b, 0, Durability::Synced).await.unwrap()
                    }));
                }
                for t in tasks {
                    t.await;
                }
                for log in &logs {
                    assert_eq!(log.log_end_offset(), 8);
                }
                let rounds = syncer.rounds.get();
                assert!(rounds >= 1, "acks=all must have synced");
                assert!(rounds < 64, "group commit: {rounds} rounds for 64 appends on 8 partitions");
            });
    }

    #[test]
    fn a_round_is_full_only_while_written_blocks_have_uncommitted_metadata() {
        glommio::LocalExecutorBuilder::default()
            .make()
            .unwrap()
            .run(async {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("t-0");
                let syncer = Rc::new(CoreSyncer::default());
                let log = PartitionLog::open(path.clone(), LogConfig::with_segment_bytes(64 << 20)).await.unwrap();
                log.set_syncer(syncer.clone());
                let small = |i: usize| build_batch(&[(None, Some(format!("v{i}").as_bytes()))], 1);
                let append = |b| {
                    let log = log.clone();
                    async move { log.append(b, 0, Durability::Synced).await.unwrap() }
                };
                let counts = || (syncer.rounds.get(), syncer.full_rounds.get());
                let probe = std::fs::File::open(dir.path()).unwrap();
                let sound = flush_covers_device(probe.as_raw_fd());

                // The first write zeroes ahead (new blocks, a new file size): a full round.
                append(small(0)).await;
                assert_eq!(counts(), (1, 1));
                // Small writes inside the committed zeroed blocks: device flushes only.
                for i in 1..4 {
                    append(small(i)).await;
                }
                assert_eq!(counts(), (4, if sound { 1 } else { 4 }), "flush rounds sound here: {sound}");
                // A large write past the zeroed blocks converts preallocated extents: full again,
                // and so is a small write that reaches past its end (it zeroes ahead); the
                // next small write lands in those zeros.
                let big = vec![7u8; 3 * crate::limits::ZERO_AHEAD_BYTES as usize];
                append(build_batch(&[(None, Some(&big[..]))], 1)).await;
                assert_eq!(counts(), (5, if sound { 2 } else { 5 }));
                let medium = vec![8u8; 3 * crate::limits::DMA_ALIGNMENT_BYTES as usize];
                append(build_batch(&[(None, Some(&medium[..]))], 1)).await;
                append(small(6)).await;
                assert_eq!(counts(), (7, if sound { 3 } else { 7 }));

                // After a restart nothing counts as committed: the first sync is a full one.
                log.close().await.unwrap();
                let log = PartitionLog::open(path, LogConfig::with_segment_bytes(64 << 20)).await.unwrap();
                let syncer = Rc::new(CoreSyncer::default());
                log.set_syncer(syncer.clone());
                log.append(small(7), 0, Durability::Synced).await.unwrap();
                log.append(small(8), 0, Durability::Synced).await.unwrap();
                assert_eq!((syncer.rounds.get(), syncer.full_rounds.get()), (2, if sound { 1 } else { 2 }));
                assert_eq!(log.log_end_offset(), 9);
            });
    }
}
