//! A real full disk: the broker's data directory on a small loop-mounted ext4
//! filesystem that a filler file fills up.
//!
//! Produce must fail with KAFKA_STORAGE_ERROR, reads must keep working, nothing
//! acknowledged may be damaged, and once the filler is removed the broker must
//! take writes again by itself, with no restart. Needs root (mount, losetup);
//! without it the test says so and does nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::types::RDKafkaErrorCode;

/// A loop-mounted ext4 filesystem, unmounted on drop.
struct LoopFs {
    mnt: PathBuf,
    _dir: tempfile::TempDir,
}

impl LoopFs {
    fn new(size_mb: u64) -> Option<LoopFs> {
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        let dir = tempfile::Builder::new().prefix("corestream-diskfull-").tempdir().ok()?;
        let img = dir.path().join("disk.img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).ok()?;
        std::fs::File::create(&img).ok()?.set_len(size_mb << 20).ok()?;
        // -m 0: no blocks reserved for root (the broker runs as root here).
        let ok = |c: &mut Command| c.output().map(|o| o.status.success()).unwrap_or(false);
        if !ok(Command::new("mkfs.ext4").args(["-q", "-F", "-m", "0"]).arg(&img)) {
            eprintln!("disk_full: mkfs.ext4 failed or is missing");
            return None;
        }
        if !ok(Command::new("mount").args(["-o", "loop"]).arg(&img).arg(&mnt)) {
            eprintln!("disk_full: cannot loop-mount (no loop devices?)");
            return None;
        }
        Some(LoopFs { mnt, _dir: dir })
    }

    fn free_bytes(&self) -> u64 {
        let path = std::ffi::CString::new(self.mnt.to_str().unwrap()).unwrap();
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut st) }, 0);
        st.f_bavail as u64 * st.f_frsize as u64
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
    }
}

/// Takes all but `leave` bytes of the free space with one allocated file.
fn fill(path: &Path, fs: &LoopFs, leave: u64) {
    use std::os::fd::AsRawFd;
    let free = fs.free_bytes();
    let len = free.saturating_sub(leave);
    let f = std::fs::File::create(path).unwrap();
    let rc = unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, len as libc::off_t) };
    assert_eq!(rc, 0, "fallocate {len} bytes for the filler");
    f.sync_all().unwrap();
}

fn record(i: u64) -> TestRecord {
    let mut v = format!("r{i:08}-").into_bytes();
    v.resize(1000, b'a' + (i % 26) as u8);
    TestRecord::value(v).to_partition((i % 2) as i32)
}

#[test]
fn full_disk_refuses_produce_keeps_reads_and_recovers_when_space_returns() {
    let Some(fs) = LoopFs::new(64) else {
        eprintln!("disk_full: SKIPPED: needs root, mkfs.ext4 and a loop device");
        return;
    };
    let data = fs.mnt.join("data");
    let mut broker = Broker::start_in(&data, 1, &["log.segment.bytes=1048576"]);
    let addr = broker.addr();
    let topic = unique("full");
    create_topic(&addr, &topic, 2, &[]);
    let mut cfg = producer_config(&addr);
    cfg.set("acks", "all").set("message.send.max.retries", "0").set("linger.ms", "5");

    // Some data first, then the disk fills up with all but 2 MiB taken.
    let mut acked: Vec<((i32, i64), u64)> = Vec::new();
    let first: Vec<TestRecord> = (0..1000).map(record).collect();
    for (i, (p, o)) in produce_ok(&cfg, &topic, &first).into_iter().enumerate() {
        acked.push(((p, o), i as u64));
    }
    let filler = fs.mnt.join("filler");
    fill(&filler, &fs, 2 << 20);

    // Produce until the broker says the disk is full.
    let mut next = 1000u64;
    let mut storage_errors = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while storage_errors == 0 {
        assert!(Instant::now() < deadline, "no KAFKA_STORAGE_ERROR after {next} records on a 64 MiB filesystem");
        let recs: Vec<TestRecord> = (next..next + 500).map(record).collect();
        for (k, r) in produce_all(&cfg, &topic, &recs, Duration::from_secs(60)).into_iter().enumerate() {
            match r {
                Ok(po) => acked.push((po, next + k as u64)),
                Err(e) => {
                    assert_eq!(error_code(&e), Some(RDKafkaErrorCode::KafkaStorageError), "produce on a full disk: {e}");
                    storage_errors += 1;
                }
            }
        }
        next += 500;
    }
    eprintln!("disk full after {} acknowledged records; {storage_errors} refused", acked.len());
    assert!(broker.log().contains("disk full"), "no log line about the full disk\n{}", broker.log_tail());

    // Reads keep working and everything acknowledged is intact.
    let check = |broker: &Broker, acked: &[((i32, i64), u64)], ctx: &str| {
        let got = consume_all(&broker.addr(), &topic, &[0, 1], Duration::from_secs(60));
        let by_pos: std::collections::HashMap<(i32, i64), Vec<u8>> =
            got.into_iter().map(|c| ((c.partition, c.offset), c.value.unwrap_or_default())).collect();
        for ((p, o), i) in acked {
            assert_eq!(by_pos.get(&(*p, *o)), record(*i).value.as_ref(), "{ctx}: acknowledged record {i} at {p}/{o}");
        }
    };
    check(&broker, &acked, "disk full");
    // Still refused while the disk stays full.
    let r = produce_all(&cfg, &topic, &[record(next)], Duration::from_secs(30));
    assert!(r[0].is_err(), "a produce succeeded on a full disk: {:?}", r[0]);
    next += 1;

    // Space returns: writes resume by themselves, no restart.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = produce_all(&cfg, &topic, &[record(next)], Duration::from_secs(30));
        if let Ok(po) = &r[0] {
            acked.push((*po, next));
            next += 1;
            break;
        }
        next += 1;
        assert!(Instant::now() < deadline, "writes did not resume within 30 s of space returning: {:?}\n{}", r[0], broker.log_tail());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(broker.log().contains("space is back"), "no log line about space returning\n{}", broker.log_tail());
    let more: Vec<TestRecord> = (next..next + 1000).map(record).collect();
    for (k, po) in produce_ok(&cfg, &topic, &more).into_iter().enumerate() {
        acked.push((po, next + k as u64));
    }
    check(&broker, &acked, "after space returned");
    broker.terminate();
    broker.restart();
    check(&broker, &acked, "after a restart");
    broker.terminate();
}
