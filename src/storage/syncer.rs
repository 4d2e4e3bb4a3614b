//! Per-core group commit: one filesystem sync covers every partition of a core.
//!
//! A partition that needs its written bytes durable asks the core's
//! [`CoreSyncer`]. Requests that arrive while a sync round is running wait for
//! the next round; each round is a single `syncfs(2)` of the filesystem
//! holding the data directory, which commits the metadata of every file
//! written with O_DIRECT (the data itself is already on the device) and
//! flushes the device cache. So N partitions with acks=all traffic on a core
//! cost one sync per round instead of N `fdatasync`s.
//!
//! Measured against the alternative of one `fdatasync` per file written in the
//! round, all submitted together through io_uring: on this project's test VM
//! (ext4 on virtio, shared with other work) those rounds took 1.3-2.9 ms at the
//! median against 0.5-0.9 ms for `syncfs` in the same workload (25 MB/s of
//! 1 KiB acks=all records over 16 partitions), because io_uring runs each
//! fsync on a kernel worker thread.

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
    /// The error of the last completed round, if it failed.
    failed_round: Cell<Option<(u64, i32)>>,
    done: LocalNotify,
    /// Rounds run, for metrics.
    pub rounds: Cell<u64>,
    /// Duration of each round in µs, for metrics.
    pub round_us: RefCell<histogram::Histogram>,
}

impl Default for CoreSyncer {
    fn default() -> Self {
        CoreSyncer {
            started: Cell::new(0),
            completed: Cell::new(0),
            running: Cell::new(false),
            failed_round: Cell::new(None),
            done: LocalNotify::default(),
            rounds: Cell::new(0),
            round_us: RefCell::new(crate::metrics::new_histogram()),
        }
    }
}

impl CoreSyncer {
    /// Returns once a sync that started after this call has completed, so every byte
    /// whose write completed before the call is durable. `file` is any open file on the
    /// filesystem to sync (kept open for the round).
    pub async fn sync(self: &Rc<Self>, file: Rc<DmaFile>) -> std::io::Result<()> {
        let wanted = self.started.get() + 1;
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
        // `file` stays open until the blocking call returns: the Rc is held across the await.
        let rc = glommio::executor()
            .spawn_blocking(move || {
                // SAFETY: `fd` is an open descriptor for the whole call (see above).
                if unsafe { libc::syncfs(fd) } == 0 {
                    0
                } else {
                    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
                }
            })
            .await;
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
}
