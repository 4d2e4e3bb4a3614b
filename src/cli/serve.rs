//! `corestream serve`: configuration, core selection, and one pinned glommio
//! executor per core, each running a shard until SIGINT/SIGTERM.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use glommio::{LocalExecutorBuilder, Placement};

use crate::config::BrokerConfig;
use crate::shard::table::MetadataImage;
use crate::shard::{MeshBuilderFull, Shard};

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long)]
    pub listen: Option<String>,
    /// Address clients are told to connect to (defaults to --listen).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Where partition logs and metadata live.
    #[arg(long = "data-dir")]
    pub data_dir: Option<PathBuf>,
    /// A TOML file of settings under Kafka's names.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// A setting under its Kafka name, e.g. --set num.partitions=4 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    #[command(flatten)]
    pub cpus: CpuArgs,
    /// Address of the admin endpoint serving /metrics ("none" to disable).
    #[arg(long)]
    pub admin: Option<String>,
}

/// How often each shard looks for logs whose `flush.ms` has passed.
const FLUSH_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Parses a CPU list like `0,2-5`.
pub fn parse_cpuset(s: &str) -> anyhow::Result<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.trim().parse()?, b.trim().parse()?);
                if a > b {
                    bail!("bad CPU range {part}");
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().with_context(|| format!("bad CPU {part:?}"))?),
        }
    }
    out.sort_unstable();
    out.dedup();
    if out.is_empty() {
        bail!("empty CPU set");
    }
    if out.len() > crate::limits::SHARDS_MAX {
        bail!("at most {} shards", crate::limits::SHARDS_MAX);
    }
    Ok(out)
}

/// Which CPUs run shards (shared by `serve` and `tune`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct CpuArgs {
    /// Run shards on the first N CPUs this process may use.
    #[arg(long, conflicts_with = "cpuset")]
    pub cores: Option<usize>,
    /// Run shards on exactly these CPUs, e.g. 0,2-5.
    #[arg(long)]
    pub cpuset: Option<String>,
    /// Leave the last N of those CPUs free (for interrupts, clients, other processes).
    #[arg(long = "reserve-cores", default_value_t = 0)]
    pub reserve_cores: usize,
}

impl CpuArgs {
    /// Whether any of the options was given.
    pub fn given(&self) -> bool {
        self.cpuset.is_some() || self.cores.is_some() || self.reserve_cores > 0
    }

    /// The shard CPUs these options pick among those this process may use.
    pub fn select(&self) -> anyhow::Result<Vec<usize>> {
        select_cpus(self.cpuset.as_deref(), self.cores, self.reserve_cores, &allowed_cpus())
    }
}

/// The CPUs to run shards on: `--cpuset` exactly, else the first `--cores` of
/// the allowed CPUs, else all of them; minus the last `reserve` of that choice.
pub fn select_cpus(cpuset: Option<&str>, cores: Option<usize>, reserve: usize, allowed: &[usize]) -> anyhow::Result<Vec<usize>> {
    let mut cpus: Vec<usize> = match (cpuset, cores) {
        (Some(s), _) => parse_cpuset(s)?,
        (None, Some(n)) => {
            if n == 0 || n > allowed.len() {
                bail!("--cores {n}: this process may use {} CPUs", allowed.len());
            }
            allowed.iter().copied().take(n).collect()
        }
        (None, None) => allowed.to_vec(),
    };
    if reserve >= cpus.len() {
        bail!("--reserve-cores {reserve} leaves no CPU for shards (of {})", cpus.len());
    }
    cpus.truncate(cpus.len() - reserve);
    Ok(cpus)
}

/// CPUs this process may run on (its affinity mask).
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return (0..std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).collect();
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect()
    }
}

/// Keeps large buffers (request frames, DMA write buffers) in the allocator's
/// heap instead of mmap-ing and unmapping them per request: that cost page
/// faults, page zeroing and cross-core TLB shootdowns on the produce path.
fn tune_allocator() {
    // SAFETY: mallopt only adjusts glibc malloc parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 * 1024 * 1024);
    }
}

/// glommio registers its io_uring buffers as locked memory.
fn raise_memlock() {
    let want: libc::rlim_t = 512 * 1024 * 1024;
    // SAFETY: plain syscalls on a stack struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) == 0 && r.rlim_cur < want {
            let new = libc::rlimit { rlim_cur: want.min(r.rlim_max.max(want)), rlim_max: r.rlim_max.max(want) };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &new) != 0 {
                let soft = libc::rlimit { rlim_cur: r.rlim_max, rlim_max: r.rlim_max };
                let _ = libc::setrlimit(libc::RLIMIT_MEMLOCK, &soft);
                tracing::warn!(
                    limit = r.rlim_max,
                    "could not raise RLIMIT_MEMLOCK (run as root or raise `ulimit -l`); io_uring may fail to start"
                );
            }
        }
    }
}

pub fn build_config(args: &ServeArgs) -> anyhow::Result<BrokerConfig> {
    let mut cfg = BrokerConfig::default();
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        cfg.apply_toml(&text, &path.display().to_string())?;
    }
    for kv in &args.set {
        let (k, v) = kv.split_once('=').with_context(|| format!("--set expects KEY=VALUE, got {kv:?}"))?;
        cfg.set(k.trim(), v)?;
    }
    let listen_given = args.listen.is_some();
    if let Some(l) = &args.listen {
        cfg.set("listen", l)?;
    }
    match &args.advertise {
        Some(a) => cfg.set("advertise", a)?,
        None if listen_given => cfg.advertise = cfg.listen,
        None => {}
    }
    if cfg.advertise.ip().is_unspecified() {
        cfg.advertise.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    if let Some(d) = &args.data_dir {
        cfg.data_dir = d.clone();
    }
    if let Some(a) = &args.admin {
        cfg.set("admin.listen", a)?;
    }
    Ok(cfg)
}

/// Waits (asynchronously, so the executor keeps serving the mesh) until every shard arrived.
async fn barrier(counter: &AtomicUsize, shards: usize) {
    counter.fetch_add(1, Ordering::SeqCst);
    while counter.load(Ordering::SeqCst) < shards {
        glommio::timer::sleep(Duration::from_millis(2)).await;
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    // A panic on one shard would leave the others serving partitions nobody owns:
    // report it and stop the whole process, so a supervisor restarts it and recovery runs.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        tracing::error!("a shard panicked: {info}; aborting");
        std::process::abort();
    }));
    tune_allocator();
    let cfg = build_config(&args)?;
    let cpus = args.cpus.select()?;
    let shards = cpus.len();
    raise_memlock();
    std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("creating data dir {}", cfg.data_dir.display()))?;
    let lock = lock_data_dir(&cfg.data_dir)?;
    let meta_path = cfg.data_dir.join("metadata.json");
    let mut image = match MetadataImage::load(&meta_path).with_context(|| format!("reading {}", meta_path.display()))? {
        Some(i) => i,
        None => MetadataImage::new(cfg.node_id, shards),
    };
    image.node_id = cfg.node_id;
    image.rebalance(shards);
    image.save(&meta_path).with_context(|| format!("writing {}", meta_path.display()))?;

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    let mesh: Option<MeshBuilderFull> =
        (shards > 1).then(|| glommio::channels::channel_mesh::MeshBuilder::full(shards, crate::limits::MESH_CHANNEL_CAPACITY));
    let started = Arc::new(AtomicUsize::new(0));
    let drained = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for (id, &cpu) in cpus.iter().enumerate() {
        let (cfg, image, mesh) = (cfg.clone(), image.clone(), mesh.clone());
        let (stop, started, drained, closed, failed) = (stop.clone(), started.clone(), drained.clone(), closed.clone(), failed.clone());
        let spin = cfg.spin_before_park_us;
        let mut builder = LocalExecutorBuilder::new(Placement::Fixed(cpu)).name(&format!("shard-{id}"));
        if spin > 0 {
            builder = builder.spin_before_park(Duration::from_micros(spin));
        }
        if cfg.io_memory_bytes > 0 {
            builder = builder.io_memory(cfg.io_memory_bytes);
        }
        if cfg.stall_threshold_ms > 0 {
            builder = builder.detect_stalls(Some(Box::new(StallThreshold(Duration::from_millis(cfg.stall_threshold_ms)))));
        }
        let handle = builder
            .spawn(move || async move {
                let listen = cfg.listen;
                let background_shares = cfg.background_shares;
                let admin = cfg.admin_listen.filter(|_| id == 0);
                let shard = match Shard::start(id, shards, cfg, image, mesh).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(shard = id, error = %e, "shard failed to start");
                        failed.store(true, Ordering::SeqCst);
                        stop.store(true, Ordering::SeqCst);
                        started.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                };
                barrier(&started, shards).await;
                let listener = match glommio::net::TcpListener::bind(listen) {
                    Ok(l) => Some(l),
                    Err(e) => {
                        tracing::error!(shard = id, %listen, error = %e, "cannot listen");
                        failed.store(true, Ordering::SeqCst);
                        stop.store(true, Ordering::SeqCst);
                        None
                    }
                };
                if id == 0 && listener.is_some() {
                    tracing::info!(%listen, advertise = %shard.config.advertise, shards, data_dir = %shard.config.data_dir.display(), "corestream ready");
                }
                glommio::spawn_local(crate::metrics::stall_probe(shard.clone())).detach();
                // Background work runs in its own task queue with fewer shares, so it cannot starve requests.
                let background = glommio::executor()
                    .create_task_queue(glommio::Shares::Static(background_shares), glommio::Latency::NotImportant, "background");
                let interval = Duration::from_millis(shard.config.log_retention_check_interval_ms.max(1) as u64);
                let s = shard.clone();
                let retention = glommio::spawn_local_into(
                    async move {
                        loop {
                            glommio::timer::sleep(interval).await;
                            s.retention_pass().await;
                        }
                    },
                    background,
                )
                .expect("the background task queue was just created");
                let s = shard.clone();
                let flusher = glommio::spawn_local_into(
                    async move {
                        loop {
                            glommio::timer::sleep(FLUSH_CHECK_INTERVAL).await;
                            s.flush_pass().await;
                        }
                    },
                    background,
                )
                .expect("the background task queue was just created");
                if let Some(addr) = admin {
                    match glommio::net::TcpListener::bind(addr) {
                        Ok(l) => {
                            tracing::info!(%addr, "metrics at http://{addr}/metrics");
                            glommio::spawn_local(crate::metrics::http::serve(shard.clone(), l)).detach();
                        }
                        Err(e) => tracing::warn!(%addr, error = %e, "cannot serve the admin endpoint; continuing without it"),
                    }
                }
                let s = shard.clone();
                let stop_w = stop.clone();
                glommio::spawn_local(async move {
                    while !stop_w.load(Ordering::Relaxed) {
                        glommio::timer::sleep(Duration::from_millis(50)).await;
                    }
                    s.begin_shutdown();
                })
                .detach();
                if let Some(l) = listener {
                    crate::net::accept_loop(shard.clone(), l).await;
                } else {
                    while !shard.shutting_down.get() {
                        glommio::timer::sleep(Duration::from_millis(50)).await;
                    }
                }
                // Finish in-flight requests (bounded), then close logs once every shard has drained.
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                while shard.inflight_requests.get() > 0 && std::time::Instant::now() < deadline {
                    glommio::timer::sleep(Duration::from_millis(5)).await;
                }
                barrier(&drained, shards).await;
                drop(retention);
                drop(flusher);
                shard.close_logs().await;
                barrier(&closed, shards).await;
            })
            .map_err(|e| anyhow::anyhow!("starting the executor for CPU {cpu}: {e} (is io_uring available and RLIMIT_MEMLOCK high enough?)"))?;
        handles.push(handle);
    }
    for h in handles {
        if let Err(e) = h.join() {
            failed.store(true, Ordering::SeqCst);
            tracing::error!(error = %e, "a shard thread failed");
        }
    }
    drop(lock);
    if failed.load(Ordering::SeqCst) {
        bail!("the broker stopped because of an error (see the log above)");
    }
    tracing::info!("corestream stopped cleanly");
    Ok(())
}

/// Sets glommio's stall threshold; glommio's own handler logs each stall with its backtrace.
#[derive(Debug)]
struct StallThreshold(Duration);

impl glommio::StallDetectionHandler for StallThreshold {
    fn threshold(&self, _queue: glommio::TaskQueueHandle, _max_expected: Duration) -> Option<Duration> {
        Some(self.0)
    }
}

/// Takes an exclusive lock on the data directory so two brokers never share it.
fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::io::AsRawFd;
    let path = dir.join(".lock");
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!("data directory {} is in use by another corestream process", dir.display());
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuset_parsing() {
        assert_eq!(parse_cpuset("0,2-4").unwrap(), vec![0, 2, 3, 4]);
        assert_eq!(parse_cpuset("3,1,1").unwrap(), vec![1, 3]);
        assert!(parse_cpuset("4-2").is_err());
        assert!(parse_cpuset("x").is_err());
        assert!(parse_cpuset("").is_err());
    }

    #[test]
    fn cpu_selection_honours_cores_cpuset_and_reserve() {
        let allowed = [0, 1, 2, 3];
        assert_eq!(select_cpus(None, None, 0, &allowed).unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(select_cpus(None, Some(2), 0, &allowed).unwrap(), vec![0, 1]);
        assert_eq!(select_cpus(None, None, 1, &allowed).unwrap(), vec![0, 1, 2]);
        assert_eq!(select_cpus(Some("1-3"), None, 1, &allowed).unwrap(), vec![1, 2]);
        assert!(select_cpus(None, Some(5), 0, &allowed).is_err());
        assert!(select_cpus(None, None, 4, &allowed).is_err());
    }
}
