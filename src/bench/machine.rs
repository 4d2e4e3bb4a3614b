//! The machine's own limits, measured in the same sitting as the brokers so
//! the broker numbers can be read against them: loopback TCP bandwidth (one
//! std sender thread, one receiver thread, ~2 s) and O_DIRECT write / read
//! bandwidth of the filesystem holding the data directories (256 MiB in
//! 1 MiB aligned blocks, then `fdatasync`), the device's round trip for one
//! small write (4 KiB O_DIRECT overwrites, alone and each followed by
//! `fdatasync`: the floor under acks=1 and acks=all latency of a broker that
//! acknowledges only what reached the device), plus what the machine is.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};

use super::report::{latency_histogram, LatencySummary};
use serde::Serialize;

/// How long the loopback sender writes.
pub const LOOPBACK_DURATION: Duration = Duration::from_secs(2);
/// Loopback write size.
const LOOPBACK_CHUNK_BYTES: usize = 1 << 20;
/// O_DIRECT test file size.
pub const DIRECT_IO_TOTAL_BYTES: usize = 256 << 20;
/// O_DIRECT block size (and buffer alignment is [`DIRECT_IO_ALIGN`]).
const DIRECT_IO_BLOCK_BYTES: usize = 1 << 20;
/// Buffer alignment for O_DIRECT (covers 512 B and 4 KiB logical blocks).
const DIRECT_IO_ALIGN: usize = 4096;
/// Small-write latency test: write size, the region it cycles over (written once
/// first, so the timed writes are overwrites, as the broker's zero-ahead makes its
/// small writes), and how many writes of each kind at most, within a time bound.
const SMALL_WRITE_BYTES: usize = 4096;
const SMALL_WRITE_REGION_BYTES: usize = 1 << 20;
pub const SMALL_WRITES: usize = 2000;
pub const SMALL_SYNCED_WRITES: usize = 1000;
const SMALL_WRITE_TIME_BOUND: Duration = Duration::from_secs(3);
const _: () = assert!(DIRECT_IO_TOTAL_BYTES % DIRECT_IO_BLOCK_BYTES == 0);
const _: () = assert!(SMALL_WRITE_REGION_BYTES % SMALL_WRITE_BYTES == 0 && SMALL_WRITE_BYTES % DIRECT_IO_ALIGN == 0);
const _: () = assert!(DIRECT_IO_BLOCK_BYTES % DIRECT_IO_ALIGN == 0);

/// What was measured about the machine (a failed measurement keeps its error).
#[derive(Clone, Debug, Default, Serialize)]
pub struct MachineInfo {
    /// CPUs this process may use.
    pub nproc: usize,
    /// `uname -r`.
    pub kernel: String,
    /// First `model name` of /proc/cpuinfo.
    pub cpu_model: String,
    /// Total memory, GiB.
    pub mem_gib: f64,
    /// Loopback TCP MB/s (10^6 bytes).
    pub loopback_tcp_mb_per_sec: Option<f64>,
    /// Why the loopback test failed.
    pub loopback_error: Option<String>,
    /// O_DIRECT write MB/s including the final fdatasync.
    pub direct_write_mb_per_sec: Option<f64>,
    /// O_DIRECT read MB/s of the same file.
    pub direct_read_mb_per_sec: Option<f64>,
    /// Why the O_DIRECT test failed.
    pub direct_io_error: Option<String>,
    /// Directory the O_DIRECT test wrote into.
    pub direct_io_dir: String,
    /// 4 KiB O_DIRECT overwrite latency (acks=1 floor).
    pub small_write: Option<LatencySummary>,
    /// 4 KiB O_DIRECT overwrite followed by `fdatasync` (acks=all floor with fsync).
    pub small_synced_write: Option<LatencySummary>,
    /// Why the small-write test failed.
    pub small_write_error: Option<String>,
}

/// Measures everything; never fails as a whole.
pub fn measure(data_dir: &Path) -> MachineInfo {
    let mut m = MachineInfo {
        nproc: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
        cpu_model: std::fs::read_to_string("/proc/cpuinfo").map(|s| cpu_model(&s)).unwrap_or_default(),
        mem_gib: std::fs::read_to_string("/proc/meminfo").map(|s| mem_gib(&s)).unwrap_or(0.0),
        direct_io_dir: data_dir.display().to_string(),
        ..MachineInfo::default()
    };
    match loopback_bandwidth(LOOPBACK_DURATION) {
        Ok(v) => m.loopback_tcp_mb_per_sec = Some(v),
        Err(e) => m.loopback_error = Some(format!("{e:#}")),
    }
    match direct_io_bandwidth(data_dir, DIRECT_IO_TOTAL_BYTES) {
        Ok((w, r)) => {
            m.direct_write_mb_per_sec = Some(w);
            m.direct_read_mb_per_sec = Some(r);
        }
        Err(e) => m.direct_io_error = Some(format!("{e:#}")),
    }
    match small_write_latency(data_dir, SMALL_WRITES, SMALL_SYNCED_WRITES) {
        Ok((w, ws)) => {
            m.small_write = w;
            m.small_synced_write = ws;
        }
        Err(e) => m.small_write_error = Some(format!("{e:#}")),
    }
    m
}

/// The first `model name` in /proc/cpuinfo contents.
pub fn cpu_model(cpuinfo: &str) -> String {
    cpuinfo
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "model name").then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// MemTotal in GiB from /proc/meminfo contents.
pub fn mem_gib(meminfo: &str) -> f64 {
    meminfo
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix("MemTotal:")?;
            let kb: f64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kb / (1024.0 * 1024.0))
        })
        .unwrap_or(0.0)
}

/// Loopback TCP bandwidth in MB/s: one thread writes 1 MiB chunks for
/// `duration`, another reads and counts.
pub fn loopback_bandwidth(duration: Duration) -> Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind loopback")?;
    let addr = listener.local_addr()?;
    let receiver = std::thread::spawn(move || -> Result<(u64, Duration)> {
        let (mut s, _) = listener.accept().context("accept")?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut buf = vec![0u8; LOOPBACK_CHUNK_BYTES];
        let mut total = 0u64;
        let mut first: Option<Instant> = None;
        loop {
            let n = s.read(&mut buf).context("read")?;
            if n == 0 {
                break;
            }
            first.get_or_insert_with(Instant::now);
            total += n as u64;
        }
        Ok((total, first.map(|f| f.elapsed()).unwrap_or_default()))
    });
    let mut s = TcpStream::connect(addr).context("connect loopback")?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let buf = vec![0x5au8; LOOPBACK_CHUNK_BYTES];
    let start = Instant::now();
    while start.elapsed() < duration {
        s.write_all(&buf).context("write")?;
    }
    drop(s);
    let (bytes, elapsed) = receiver.join().map_err(|_| anyhow!("receiver panicked"))??;
    if elapsed.is_zero() {
        bail!("nothing received");
    }
    Ok(bytes as f64 / elapsed.as_secs_f64() / 1e6)
}

/// An aligned heap buffer for O_DIRECT.
struct AlignedBuf {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl AlignedBuf {
    fn new(len: usize, align: usize) -> Result<Self> {
        let layout = std::alloc::Layout::from_size_align(len, align).map_err(|e| anyhow!("layout: {e}"))?;
        // SAFETY: layout has non-zero size (callers pass len > 0).
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            bail!("out of memory for a {len} byte buffer");
        }
        Ok(AlignedBuf { ptr, layout })
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: ptr points to layout.size() initialised (zeroed) bytes owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in new() with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

/// O_DIRECT write then read bandwidth (MB/s) of a `total` byte file in `dir`.
/// The write time includes the final `fdatasync`. The file is removed.
pub fn direct_io_bandwidth(dir: &Path, total: usize) -> Result<(f64, f64)> {
    with_scratch_file(dir, "odirect", |path| direct_io_inner(path, total))
}

/// Runs `test` on a scratch file path in `dir` (created if missing) and removes the
/// file afterwards, whatever the outcome.
fn with_scratch_file<T>(dir: &Path, what: &str, test: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let path = dir.join(format!("corestream-bench-{what}-{}.tmp", std::process::id()));
    let result = test(&path);
    let _ = std::fs::remove_file(&path);
    result
}

/// Creates (or truncates) `path` for O_DIRECT reads and writes.
fn open_direct(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .with_context(|| format!("open {} with O_DIRECT", path.display()))
}

fn direct_io_inner(path: &Path, total: usize) -> Result<(f64, f64)> {
    use std::os::unix::io::AsRawFd;
    let blocks = total / DIRECT_IO_BLOCK_BYTES;
    if blocks == 0 {
        bail!("O_DIRECT test size must be at least {DIRECT_IO_BLOCK_BYTES} bytes");
    }
    let mut buf = AlignedBuf::new(DIRECT_IO_BLOCK_BYTES, DIRECT_IO_ALIGN)?;
    super::workload::SplitMix64::new(0xD1EC7).fill(buf.as_mut_slice());
    let f = open_direct(path)?;
    let fd = f.as_raw_fd();
    let start = Instant::now();
    for i in 0..blocks {
        let off = (i * DIRECT_IO_BLOCK_BYTES) as libc::off_t;
        // SAFETY: buf is valid for DIRECT_IO_BLOCK_BYTES bytes and aligned.
        let n = unsafe { libc::pwrite(fd, buf.ptr as *const libc::c_void, DIRECT_IO_BLOCK_BYTES, off) };
        if n != DIRECT_IO_BLOCK_BYTES as isize {
            bail!("O_DIRECT write at {off}: {}", std::io::Error::last_os_error());
        }
    }
    // SAFETY: fd is an open descriptor.
    if unsafe { libc::fdatasync(fd) } != 0 {
        bail!("fdatasync: {}", std::io::Error::last_os_error());
    }
    let write_secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    for i in 0..blocks {
        let off = (i * DIRECT_IO_BLOCK_BYTES) as libc::off_t;
        // SAFETY: as above; the buffer is writable.
        let n = unsafe { libc::pread(fd, buf.ptr as *mut libc::c_void, DIRECT_IO_BLOCK_BYTES, off) };
        if n != DIRECT_IO_BLOCK_BYTES as isize {
            bail!("O_DIRECT read at {off}: {}", std::io::Error::last_os_error());
        }
    }
    let read_secs = start.elapsed().as_secs_f64();
    let mb = (blocks * DIRECT_IO_BLOCK_BYTES) as f64 / 1e6;
    Ok((mb / write_secs.max(1e-9), mb / read_secs.max(1e-9)))
}

/// Latency of single 4 KiB O_DIRECT overwrites (`writes` of them), then of
/// `synced` such writes each followed by `fdatasync`, in a scratch file in `dir`;
/// each series stops early after a few seconds. The file is removed.
pub fn small_write_latency(dir: &Path, writes: usize, synced: usize) -> Result<(Option<LatencySummary>, Option<LatencySummary>)> {
    with_scratch_file(dir, "smallwrite", |path| small_write_inner(path, writes, synced))
}

fn small_write_inner(path: &Path, writes: usize, synced: usize) -> Result<(Option<LatencySummary>, Option<LatencySummary>)> {
    use std::os::unix::io::AsRawFd;
    let mut region = AlignedBuf::new(SMALL_WRITE_REGION_BYTES, DIRECT_IO_ALIGN)?;
    super::workload::SplitMix64::new(0x5A11).fill(region.as_mut_slice());
    let f = open_direct(path)?;
    let fd = f.as_raw_fd();
    let pwrite = |ptr: *const u8, len: usize, off: usize| -> Result<()> {
        // SAFETY: callers pass a pointer into `region`, valid and aligned for `len` bytes.
        let n = unsafe { libc::pwrite(fd, ptr as *const libc::c_void, len, off as libc::off_t) };
        if n != len as isize {
            bail!("O_DIRECT write of {len} bytes at {off}: {}", std::io::Error::last_os_error());
        }
        Ok(())
    };
    let fdatasync = || -> Result<()> {
        // SAFETY: fd is an open descriptor.
        if unsafe { libc::fdatasync(fd) } != 0 {
            bail!("fdatasync: {}", std::io::Error::last_os_error());
        }
        Ok(())
    };
    // Write the region once and make its allocation durable: what follows overwrites.
    pwrite(region.ptr, SMALL_WRITE_REGION_BYTES, 0)?;
    fdatasync()?;
    let slots = SMALL_WRITE_REGION_BYTES / SMALL_WRITE_BYTES;
    // Percentiles as every other bench latency: the load generator's histogram.
    let series = |count: usize, sync: bool| -> Result<Option<LatencySummary>> {
        let mut hist = latency_histogram();
        let (mut max_us, mut sum_us) = (0u64, 0u128);
        let bound = Instant::now() + SMALL_WRITE_TIME_BOUND;
        for i in 0..count {
            let off = (i % slots) * SMALL_WRITE_BYTES;
            let start = Instant::now();
            // SAFETY (pointer): `off + SMALL_WRITE_BYTES` lies inside `region`.
            pwrite(unsafe { region.ptr.add(off) }, SMALL_WRITE_BYTES, off)?;
            if sync {
                fdatasync()?;
            }
            let us = start.elapsed().as_micros() as u64;
            hist.increment(us).map_err(|e| anyhow!("recording {us} µs: {e}"))?;
            max_us = max_us.max(us);
            sum_us += us as u128;
            if Instant::now() >= bound {
                break;
            }
        }
        Ok(LatencySummary::from_histogram(&hist, max_us, sum_us))
    };
    let plain = series(writes, false)?;
    let synced = series(synced, true)?;
    Ok((plain, synced))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpuinfo_and_meminfo() {
        let ci = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t: fpu\n";
        assert_eq!(cpu_model(ci), "Intel(R) Xeon(R) Processor");
        assert_eq!(cpu_model("nothing"), "unknown");
        let mi = "MemTotal:       24576000 kB\nMemFree: 1 kB\n";
        assert!((mem_gib(mi) - 23.4375).abs() < 1e-9);
        assert_eq!(mem_gib(""), 0.0);
    }

    #[test]
    fn loopback_measures_something() {
        let v = loopback_bandwidth(Duration::from_millis(200)).unwrap();
        assert!(v > 0.0);
    }

    #[test]
    fn small_write_latency_in_target_dir() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target").join("bench-unit-smallwrite");
        match small_write_latency(&dir, 20, 5) {
            Ok((Some(w), Some(ws))) => {
                assert_eq!((w.count, ws.count), (20, 5));
                assert!(w.p50_us > 0 && w.p50_us <= w.p99_us && w.p99_us <= w.max_us);
                assert!(ws.p50_us > 0 && ws.p50_us <= ws.max_us);
            }
            Ok(other) => panic!("no samples: {other:?}"),
            Err(e) => assert!(format!("{e:#}").contains("O_DIRECT"), "{e:#}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn direct_io_in_target_dir() {
        // target/ is on a real filesystem in CI (not tmpfs); report what O_DIRECT says.
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target").join("bench-unit-odirect");
        match direct_io_bandwidth(&dir, 4 << 20) {
            Ok((w, r)) => assert!(w > 0.0 && r > 0.0),
            Err(e) => assert!(format!("{e:#}").contains("O_DIRECT"), "{e:#}"),
        }
        let _ = std::fs::remove_dir(&dir);
        assert!(direct_io_bandwidth(&dir, 1).is_err());
        let _ = std::fs::remove_dir(&dir);
    }
}
