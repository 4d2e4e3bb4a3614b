//! `corestream tune`: checks, and with `--apply` sets, the host settings a
//! bare-metal broker wants (CPU governor, interrupt affinity, disk queue,
//! sysctls, transparent huge pages, clocksource, resource limits).
//!
//! Shape: each tuner is a function from a [`Host`] (a directory standing for
//! `/`, so tests run against a fake tree of `/sys` and `/proc` files) and a
//! [`Ctx`] (shard CPUs, the data directory's device, privileges) to a
//! [`Check`]: the current value, the recommended one, why, and the [`Action`]
//! that would apply it. Parsing and deciding are pure functions; the I/O is
//! reading and writing files under the root, `stat` of the data directory and
//! `getrlimit`/`setrlimit`. [`run_tuner`] applies an action and reads the
//! setting back to confirm it took.
//!
//! Dry run by default: nothing is written without `--apply`. A tuner that does
//! not apply to the host (no such file or device, not root, a read-only
//! setting in a container) reports `[n/a]` and why instead of failing.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::bail;
use serde::Serialize;

#[derive(clap::Args, Debug)]
pub struct TuneArgs {
    /// Apply the recommended settings (needs root for everything but this process's limits).
    #[arg(long)]
    pub apply: bool,
    /// The shard CPUs, as `serve` takes them (default: every CPU this process may use).
    #[command(flatten)]
    pub cpus: super::serve::CpuArgs,
    /// The broker's data directory: its block device gets the disk tuners.
    #[arg(long = "data-dir", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Only these tuners (comma-separated names or prefixes, e.g. `disk,vm.swappiness`).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// The directory standing for `/` when reading and writing /sys and /proc (for tests).
    #[arg(long, hide = true, default_value = "/")]
    pub sysroot: PathBuf,
}

// ---------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------

/// The outcome of one tuner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Status {
    #[serde(rename = "ok")]
    Ok,
    #[serde(rename = "change")]
    Change,
    #[serde(rename = "n/a")]
    NotApplicable,
    #[serde(rename = "applied")]
    Applied,
    #[serde(rename = "failed")]
    Failed,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "[ok]",
            Status::Change => "[change]",
            Status::NotApplicable => "[n/a]",
            Status::Applied => "[applied]",
            Status::Failed => "[failed]",
        }
    }
}

/// A value written to a file, e.g. `performance` to a CPU's `scaling_governor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileWrite {
    /// Path on the host (absolute, as under `/`).
    pub path: String,
    pub value: String,
    /// The kernel may refuse it with EIO without that being an error (managed or per-CPU IRQs).
    #[serde(skip)]
    pub may_be_refused: bool,
}

/// A resource limit of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rlimit {
    Memlock,
    Nofile,
}

impl Rlimit {
    fn resource(self) -> libc::__rlimit_resource_t {
        match self {
            Rlimit::Memlock => libc::RLIMIT_MEMLOCK,
            Rlimit::Nofile => libc::RLIMIT_NOFILE,
        }
    }
}

/// A resource limit value; `u64::MAX` (RLIM_INFINITY) is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lim(pub u64);

pub const UNLIMITED: Lim = Lim(libc::RLIM_INFINITY);

impl Serialize for Lim {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if *self == UNLIMITED {
            s.serialize_str("unlimited")
        } else {
            s.serialize_u64(self.0)
        }
    }
}

/// What applying a recommendation does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Action {
    None,
    Write { writes: Vec<FileWrite> },
    Setrlimit { resource: Rlimit, soft: Lim, hard: Lim },
}

/// One tuner's finding: one line of output.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    /// What the setting is about, e.g. `cpu 0-3`, `sda`, `/proc/sys/vm/swappiness`.
    pub target: String,
    pub current: String,
    pub recommended: String,
    pub reason: String,
    pub notes: Vec<String>,
    pub action: Action,
    /// The value read back after applying.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub now: Option<String>,
    /// How to keep the setting across reboots or restarts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persist: Option<String>,
}

impl Check {
    fn new(name: &'static str, target: impl Into<String>) -> Self {
        Check {
            name,
            status: Status::NotApplicable,
            target: target.into(),
            current: "-".into(),
            recommended: "-".into(),
            reason: String::new(),
            notes: Vec::new(),
            action: Action::None,
            now: None,
            persist: None,
        }
    }

    fn na(name: &'static str, target: impl Into<String>, reason: impl Into<String>) -> Self {
        let mut c = Check::new(name, target);
        c.reason = reason.into();
        c
    }

    fn pending_paths(&self) -> Vec<&str> {
        match &self.action {
            Action::Write { writes } => writes.iter().map(|w| w.path.as_str()).collect(),
            _ => Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------
// The host: files under a root, and what we know about the machine
// ---------------------------------------------------------------------------

/// Files of the host under `root` (`/` on a real run, a temp directory in tests).
#[derive(Debug, Clone)]
pub struct Host {
    pub root: PathBuf,
}

impl Host {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Host { root: root.into() }
    }

    /// The real path of a host path such as `/proc/sys/vm/swappiness`.
    pub fn path(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    pub fn exists(&self, abs: &str) -> bool {
        self.path(abs).exists()
    }

    /// Reads a file, trimmed.
    pub fn read(&self, abs: &str) -> std::io::Result<String> {
        std::fs::read_to_string(self.path(abs)).map(|s| s.trim().to_string())
    }

    /// Writes `value` and a newline (as `echo value > file` does) to an existing file.
    pub fn write(&self, abs: &str, value: &str) -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).truncate(true).open(self.path(abs))?;
        f.write_all(format!("{value}\n").as_bytes())
    }

    /// Why this file cannot be written, if it cannot (EROFS, EACCES), as `access(2)` says.
    fn write_blocked(&self, abs: &str) -> Option<std::io::Error> {
        let c = CString::new(self.path(abs).as_os_str().as_bytes()).ok()?;
        // SAFETY: `c` is a valid NUL-terminated path.
        if unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0 {
            None
        } else {
            Some(std::io::Error::last_os_error())
        }
    }

    /// Names of the entries of a directory (empty when it is missing).
    fn list(&self, abs: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.path(abs))
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// What the tuners need to know besides the files.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub is_root: bool,
    /// This process may raise hard resource limits (CAP_SYS_RESOURCE).
    pub cap_sys_resource: bool,
    /// This process's locked memory is not limited (CAP_IPC_LOCK).
    pub cap_ipc_lock: bool,
    /// CPUs the shards run on.
    pub shard_cpus: Vec<usize>,
    /// Whether `--cpuset`, `--cores` or `--reserve-cores` chose them (otherwise: every CPU the process may use).
    pub cpuset_given: bool,
    pub online_cpus: Vec<usize>,
    pub data_dir: PathBuf,
    /// The data directory's device number (major, minor), or why there is none.
    pub data_dev: Result<(u32, u32), String>,
    /// "VM (...)" when running under a hypervisor.
    pub vm: Option<String>,
    /// The container runtime when running in a container.
    pub container: Option<String>,
}

impl Ctx {
    pub fn spare_cpus(&self) -> Vec<usize> {
        self.online_cpus.iter().copied().filter(|c| !self.shard_cpus.contains(c)).collect()
    }
}

// ---------------------------------------------------------------------------
// Pure helpers
// ---------------------------------------------------------------------------

/// Parses a kernel CPU list such as `0-3,8,10-11` (empty string: no CPUs).
pub fn parse_cpulist(s: &str) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.trim().split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                if a > b {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().ok()?),
        }
    }
    out.sort_unstable();
    out.dedup();
    Some(out)
}

/// Formats CPUs as a kernel CPU list (`0-3,8`).
pub fn format_cpulist(cpus: &[usize]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        parts.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
        i += 1;
    }
    parts.join(",")
}

/// Parses a sysfs choice list like `none [mq-deadline] kyber`: (selected, all choices).
/// A file holding a single word (as a fake tree after a write does) selects it.
pub fn parse_choice(s: &str) -> (Option<String>, Vec<String>) {
    let words: Vec<&str> = s.split_whitespace().collect();
    let mut selected = None;
    let mut all = Vec::new();
    for w in &words {
        if let Some(inner) = w.strip_prefix('[').and_then(|w| w.strip_suffix(']')) {
            selected = Some(inner.to_string());
            all.push(inner.to_string());
        } else {
            all.push(w.to_string());
        }
    }
    if selected.is_none() && words.len() == 1 {
        selected = Some(words[0].to_string());
    }
    (selected, all)
}

/// Bytes as `8 MiB`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1024 && v % 1024 == 0 && u + 1 < UNITS.len() {
        v /= 1024;
        u += 1;
    }
    format!("{v} {}", UNITS[u])
}

fn fmt_lim(l: Lim, bytes: bool) -> String {
    if l == UNLIMITED {
        "unlimited".into()
    } else if bytes {
        human_bytes(l.0)
    } else {
        l.0.to_string()
    }
}

/// Linux `dev_t` → (major, minor).
pub fn dev_major_minor(dev: u64) -> (u32, u32) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major as u32, minor as u32)
}

// ---------------------------------------------------------------------------
// Tuners
// ---------------------------------------------------------------------------

/// A tuner: its name and its check.
pub struct Tuner {
    pub name: &'static str,
    pub check: fn(&Host, &Ctx) -> Check,
}

pub const TUNERS: &[Tuner] = &[
    Tuner { name: "cpu.governor", check: check_governor },
    Tuner { name: "irq.affinity", check: check_irq_affinity },
    Tuner { name: "disk.scheduler", check: check_disk_scheduler },
    Tuner { name: "disk.nomerges", check: check_disk_nomerges },
    Tuner { name: "fs.aio-max-nr", check: check_aio_max_nr },
    Tuner { name: "transparent_hugepage", check: check_thp },
    Tuner { name: "vm.swappiness", check: check_swappiness },
    Tuner { name: "clocksource", check: check_clocksource },
    Tuner { name: "cpu.idle.haltpoll", check: check_guest_halt_poll },
    Tuner { name: "cpu.idle.cstates", check: check_cstates },
    Tuner { name: "net.core.somaxconn", check: check_somaxconn },
    Tuner { name: "net.ipv4.tcp_max_syn_backlog", check: check_syn_backlog },
    Tuner { name: "rlimit.memlock", check: check_memlock },
    Tuner { name: "rlimit.nofile", check: check_nofile },
];

fn write(path: impl Into<String>, value: impl Into<String>) -> FileWrite {
    FileWrite { path: path.into(), value: value.into(), may_be_refused: false }
}

// --- CPU frequency governor -------------------------------------------------

pub fn check_governor(host: &Host, ctx: &Ctx) -> Check {
    const NAME: &str = "cpu.governor";
    let target = format!("cpu {}", format_cpulist(&ctx.shard_cpus));
    let mut by_gov: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut writes = Vec::new();
    let mut available: Option<Vec<String>> = None;
    for &cpu in &ctx.shard_cpus {
        let dir = format!("/sys/devices/system/cpu/cpu{cpu}/cpufreq");
        let Ok(gov) = host.read(&format!("{dir}/scaling_governor")) else { continue };
        if available.is_none() {
            if let Ok(a) = host.read(&format!("{dir}/scaling_available_governors")) {
                available = Some(a.split_whitespace().map(String::from).collect());
            }
        }
        if gov != "performance" {
            writes.push(write(format!("{dir}/scaling_governor"), "performance"));
        }
        by_gov.entry(gov).or_default().push(cpu);
    }
    if by_gov.is_empty() {
        let why = if ctx.vm.is_some() {
            "no cpufreq on the shard CPUs: in a VM the hypervisor sets the frequency"
        } else {
            "no cpufreq on the shard CPUs (no frequency driver loaded, or the firmware owns P-states): \
             set the BIOS power profile to maximum performance"
        };
        return Check::na(NAME, target, why);
    }
    let mut c = Check::new(NAME, target);
    c.current = if by_gov.len() == 1 {
        by_gov.keys().next().cloned().unwrap_or_default()
    } else {
        by_gov.iter().map(|(g, cpus)| format!("{g} (cpu {})", format_cpulist(cpus))).collect::<Vec<_>>().join(", ")
    };
    c.recommended = "performance".into();
    c.persist = Some(
        "at boot: `cpupower frequency-set -g performance` (a oneshot systemd unit) or the distribution's \
         tuned profile `latency-performance`/`network-latency`"
            .into(),
    );
    let missing: Vec<usize> = ctx.shard_cpus.iter().copied().filter(|c| !by_gov.values().any(|v| v.contains(c))).collect();
    if !missing.is_empty() {
        c.notes.push(format!("no cpufreq for cpu {}", format_cpulist(&missing)));
    }
    if writes.is_empty() {
        c.status = Status::Ok;
        c.reason = "shard CPUs run at their highest frequency".into();
    } else if available.as_ref().is_some_and(|a| !a.iter().any(|g| g == "performance")) {
        c.status = Status::NotApplicable;
        c.reason = format!(
            "the frequency driver offers no `performance` governor (only {})",
            available.unwrap_or_default().join(" ")
        );
    } else {
        c.status = Status::Change;
        c.reason = "shards are latency-bound threads that sleep between bursts; other governors lower the \
                    frequency when idle and ramp it up only after load arrives"
            .into();
        c.action = Action::Write { writes };
    }
    c
}

// --- Interrupt affinity -----------------------------------------------------

/// One interrupt: its number, the CPUs it may fire on, whether a driver handles it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Irq {
    pub number: u32,
    pub cpus: Vec<usize>,
    pub handled: bool,
}

/// The interrupts (with a handler) that may fire on a shard CPU.
pub fn irqs_on_shards<'a>(irqs: &'a [Irq], shard_cpus: &[usize]) -> Vec<&'a Irq> {
    irqs.iter().filter(|i| i.handled && i.cpus.iter().any(|c| shard_cpus.contains(c))).collect()
}

fn read_irqs(host: &Host) -> Vec<Irq> {
    let mut out = Vec::new();
    for name in host.list("/proc/irq") {
        let Ok(number) = name.parse::<u32>() else { continue };
        let dir = format!("/proc/irq/{number}");
        let Ok(list) = host.read(&format!("{dir}/smp_affinity_list")) else { continue };
        let Some(cpus) = parse_cpulist(&list) else { continue };
        // A handled IRQ has a directory named after its handler (e.g. `eth0-rx-0`).
        let handled = std::fs::read_dir(host.path(&dir))
            .map(|rd| rd.filter_map(|e| e.ok()).any(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false)))
            .unwrap_or(false);
        out.push(Irq { number, cpus, handled });
    }
    out.sort_by_key(|i| i.number);
    out
}

fn irqbalance_running(host: &Host) -> bool {
    host.list("/proc").iter().filter(|n| n.bytes().all(|b| b.is_ascii_digit())).any(|pid| {
        host.read(&format!("/proc/{pid}/comm")).map(|c| c == "irqbalance").unwrap_or(false)
    })
}

pub fn check_irq_affinity(host: &Host, ctx: &Ctx) -> Check {
    const NAME: &str = "irq.affinity";
    let shards = format_cpulist(&ctx.shard_cpus);
    let target = format!("shard cpu {shards}");
    if !host.exists("/proc/irq") {
        return Check::na(NAME, target, "no /proc/irq");
    }
    let irqs = read_irqs(host);
    let handled = irqs.iter().filter(|i| i.handled).count();
    let on_shards = irqs_on_shards(&irqs, &ctx.shard_cpus);
    let mut c = Check::new(NAME, target);
    c.current = format!("{} of {handled} IRQs may fire on shard CPUs", on_shards.len());
    let spare = ctx.spare_cpus();
    if spare.is_empty() {
        c.recommended = "spare CPUs for IRQs".into();
        c.reason = if ctx.cpuset_given {
            format!("no spare CPUs: the shards ({shards}) use every online CPU")
        } else {
            "no spare CPUs: the shards use every CPU; give serve and tune the same --cpuset or --reserve-cores \
             to leave CPUs for interrupts"
                .into()
        };
        return c;
    }
    let spare_list = format_cpulist(&spare);
    c.recommended = format!("all on cpu {spare_list}");
    c.persist = Some(format!(
        "stop irqbalance, or set IRQBALANCE_BANNED_CPULIST={shards} in /etc/default/irqbalance \
         (/etc/sysconfig/irqbalance); new IRQs (a NIC reset, a hotplugged device) need this run again"
    ));
    if irqbalance_running(host) {
        c.notes.push(format!(
            "irqbalance is running and will move IRQs back: stop it or ban the shard CPUs (IRQBALANCE_BANNED_CPULIST={shards})"
        ));
    }
    if on_shards.is_empty() {
        c.status = Status::Ok;
        c.reason = "no device interrupt interrupts a shard".into();
        return c;
    }
    c.status = Status::Change;
    c.reason = "an interrupt and its softirq work (network receive, block completions) preempt the shard on the \
                CPU taking it; keep them on the CPUs the shards leave free"
        .into();
    if ctx.vm.is_some() {
        c.notes.push("VM: these are the guest's virtual interrupts".into());
    }
    c.action = Action::Write {
        writes: on_shards
            .iter()
            .map(|i| FileWrite {
                path: format!("/proc/irq/{}/smp_affinity_list", i.number),
                value: spare_list.clone(),
                may_be_refused: true,
            })
            .collect(),
    };
    c
}

// --- Disk queue ----------------------------------------------------------------

/// The whole disks (not partitions, not device-mapper/md layers) holding block device `major:minor`.
pub fn resolve_disks(host: &Host, major: u32, minor: u32) -> Result<Vec<String>, String> {
    let link = host.path(&format!("/sys/dev/block/{major}:{minor}"));
    let dir = std::fs::canonicalize(&link).map_err(|_| {
        format!(
            "device {major}:{minor} is not a block device (tmpfs, overlayfs, a btrfs subvolume or a network \
             filesystem?): put the data directory on a local disk"
        )
    })?;
    let mut out = Vec::new();
    collect_disks(&dir, &mut out, 0);
    if out.is_empty() {
        return Err(format!("no disk found under {}", dir.display()));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn collect_disks(dir: &Path, out: &mut Vec<String>, depth: usize) {
    if depth > 8 {
        return;
    }
    let disk = if dir.join("partition").exists() { dir.parent().unwrap_or(dir) } else { dir };
    let slaves: Vec<PathBuf> = std::fs::read_dir(disk.join("slaves"))
        .map(|rd| rd.filter_map(|e| e.ok()).filter_map(|e| std::fs::canonicalize(e.path()).ok()).collect())
        .unwrap_or_default();
    if slaves.is_empty() {
        if let Some(name) = disk.file_name() {
            out.push(name.to_string_lossy().into_owned());
        }
    } else {
        for s in slaves {
            collect_disks(&s, out, depth + 1);
        }
    }
}

/// What a disk's queue setting should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskDecision {
    pub status: Status,
    pub recommended: String,
    pub why: Option<String>,
}

/// Scheduler for a disk: `none` on SSD/NVMe (and in VMs), a sorting one kept on rotating disks.
pub fn decide_scheduler(current: &str, available: &[String], rotational: bool) -> DiskDecision {
    let has = |s: &str| available.iter().any(|a| a == s);
    if rotational {
        if current == "none" && has("mq-deadline") {
            return DiskDecision { status: Status::Change, recommended: "mq-deadline".into(), why: Some("rotating disk: sorting saves seeks".into()) };
        }
        return DiskDecision { status: Status::Ok, recommended: current.into(), why: Some("rotating disk: keep a sorting scheduler".into()) };
    }
    if current == "none" {
        return DiskDecision { status: Status::Ok, recommended: "none".into(), why: None };
    }
    if !has("none") {
        return DiskDecision { status: Status::NotApplicable, recommended: "none".into(), why: Some("`none` is not offered".into()) };
    }
    DiskDecision { status: Status::Change, recommended: "none".into(), why: None }
}

/// `nomerges` for a disk: 2 (no merge attempts) on SSD/NVMe, left alone on rotating disks.
pub fn decide_nomerges(current: u32, rotational: bool) -> DiskDecision {
    if rotational {
        return DiskDecision {
            status: Status::Ok,
            recommended: current.to_string(),
            why: Some("rotating disk: merging adjacent requests saves seeks".into()),
        };
    }
    let status = if current == 2 { Status::Ok } else { Status::Change };
    DiskDecision { status, recommended: "2".into(), why: None }
}

struct DiskFinding {
    disk: String,
    current: String,
    decision: DiskDecision,
    write: Option<FileWrite>,
}

/// Combines the per-disk findings of one tuner into a check.
fn disk_check(name: &'static str, findings: Vec<DiskFinding>, reason: &str, persist: String) -> Check {
    let disks: Vec<&str> = findings.iter().map(|f| f.disk.as_str()).collect();
    let mut c = Check::new(name, disks.join(","));
    let prefix = |f: &DiskFinding, v: &str| if findings.len() > 1 { format!("{}: {v}", f.disk) } else { v.to_string() };
    c.current = findings.iter().map(|f| prefix(f, &f.current)).collect::<Vec<_>>().join(", ");
    c.recommended = findings.iter().map(|f| prefix(f, &f.decision.recommended)).collect::<Vec<_>>().join(", ");
    for f in &findings {
        if let Some(why) = &f.decision.why {
            c.notes.push(format!("{}: {why}", f.disk));
        }
    }
    c.status = if findings.iter().any(|f| f.decision.status == Status::Change) {
        Status::Change
    } else if findings.iter().any(|f| f.decision.status == Status::Ok) {
        Status::Ok
    } else {
        Status::NotApplicable
    };
    let writes: Vec<FileWrite> = findings
        .into_iter()
        .filter(|f| f.decision.status == Status::Change)
        .filter_map(|f| f.write)
        .collect();
    if !writes.is_empty() {
        c.action = Action::Write { writes };
    }
    c.reason = reason.to_string();
    c.persist = Some(persist);
    c
}

fn data_disks(host: &Host, ctx: &Ctx) -> Result<Vec<String>, String> {
    let (major, minor) = ctx.data_dev.clone()?;
    resolve_disks(host, major, minor)
}

fn rotational(host: &Host, ctx: &Ctx, disk: &str) -> (bool, Option<String>) {
    let rot = host.read(&format!("/sys/block/{disk}/queue/rotational")).map(|r| r == "1").unwrap_or(false);
    if rot && ctx.vm.is_some() {
        // virtio and other virtual disks report rotational=1 by default, knowing nothing of the real device.
        return (false, Some(format!("{disk}: reports rotational=1, as virtual disks do by default; treated as a fast disk (the host schedules the real device)")));
    }
    (rot, None)
}

fn udev_rule(disks: &[String], attrs: &str) -> String {
    format!(
        "a udev rule, e.g. /etc/udev/rules.d/60-corestream.rules: ACTION==\"add|change\", KERNEL==\"{}\", {attrs}",
        disks.join("|")
    )
}

pub fn check_disk_scheduler(host: &Host, ctx: &Ctx) -> Check {
    const NAME: &str = "disk.scheduler";
    let disks = match data_disks(host, ctx) {
        Ok(d) => d,
        Err(why) => return Check::na(NAME, ctx.data_dir.display().to_string(), why),
    };
    let mut findings = Vec::new();
    let mut notes = Vec::new();
    for disk in &disks {
        let path = format!("/sys/block/{disk}/queue/scheduler");
        let Ok(text) = host.read(&path) else { continue };
        let (selected, available) = parse_choice(&text);
        let current = selected.unwrap_or_else(|| "?".into());
        let (rot, note) = rotational(host, ctx, disk);
        notes.extend(note);
        let decision = decide_scheduler(&current, &available, rot);
        let write = Some(write(path, decision.recommended.clone()));
        findings.push(DiskFinding { disk: disk.clone(), current, decision, write });
    }
    if findings.is_empty() {
        return Check::na(NAME, disks.join(","), format!("{} has no queue/scheduler", disks.join(",")));
    }
    let mut c = disk_check(
        NAME,
        findings,
        "corestream issues large aligned O_DIRECT writes and orders them itself; on SSD/NVMe a scheduler's \
         queueing, sorting and merging only adds CPU time and latency to each request",
        udev_rule(&disks, "ATTR{queue/scheduler}=\"none\""),
    );
    c.notes.extend(notes);
    c
}

pub fn check_disk_nomerges(host: &Host, ctx: &Ctx) -> Check {
    const NAME: &str = "disk.nomerges";
    let disks = match data_disks(host, ctx) {
        Ok(d) => d,
        Err(why) => return Check::na(NAME, ctx.data_dir.display().to_string(), why),
    };
    let mut findings = Vec::new();
    for disk in &disks {
        let path = format!("/sys/block/{disk}/queue/nomerges");
        let Ok(text) = host.read(&path) else { continue };
        let Ok(current) = text.parse::<u32>() else { continue };
        let (rot, _) = rotational(host, ctx, disk);
        let decision = decide_nomerges(current, rot);
        let write = Some(write(path, decision.recommended.clone()));
        findings.push(DiskFinding { disk: disk.clone(), current: current.to_string(), decision, write });
    }
    if findings.is_empty() {
        return Check::na(NAME, disks.join(","), format!("{} has no queue/nomerges", disks.join(",")));
    }
    disk_check(
        NAME,
        findings,
        "2 turns off every merge attempt: requests go to the device as issued (corestream already issues large \
         aligned writes), saving the merge lookups on each one",
        udev_rule(&disks, "ATTR{queue/nomerges}=\"2\""),
    )
}

// --- sysctls and other single files -----------------------------------------

/// `Ok` when `current >= min`.
pub fn decide_at_least(current: u64, min: u64) -> Status {
    if current >= min {
        Status::Ok
    } else {
        Status::Change
    }
}

fn sysctl_persist(key: &str, value: &str) -> String {
    format!("/etc/sysctl.d/90-corestream.conf: `{key} = {value}` (then `sysctl --system`)")
}

fn check_sysctl_min(host: &Host, name: &'static str, path: &str, min: u64, reason: &str) -> Check {
    let Ok(text) = host.read(path) else {
        return Check::na(name, path, format!("no {path}"));
    };
    let Ok(current) = text.parse::<u64>() else {
        return Check::na(name, path, format!("cannot parse {path}: {text:?}"));
    };
    let mut c = Check::new(name, path);
    c.current = current.to_string();
    c.recommended = format!(">= {min}");
    c.reason = reason.to_string();
    c.persist = Some(sysctl_persist(name, &min.to_string()));
    c.status = decide_at_least(current, min);
    if c.status == Status::Change {
        c.action = Action::Write { writes: vec![write(path, min.to_string())] };
    }
    c
}

pub fn check_aio_max_nr(host: &Host, _ctx: &Ctx) -> Check {
    check_sysctl_min(
        host,
        "fs.aio-max-nr",
        "/proc/sys/fs/aio-max-nr",
        1_048_576,
        "caps the events of all Linux AIO contexts (io_setup) on the host; corestream does its I/O through \
         io_uring, which this does not limit, but other AIO users on the host (Seastar-based servers, libaio \
         databases) fail to start when it runs out",
    )
}

pub fn check_somaxconn(host: &Host, _ctx: &Ctx) -> Check {
    check_sysctl_min(
        host,
        "net.core.somaxconn",
        "/proc/sys/net/core/somaxconn",
        4096,
        "caps every listen backlog; each shard's listener asks for 1024 (glommio), so below that a burst of \
         connections (every client reconnecting after a restart) overflows the accept queues and clients wait \
         for SYN retransmits; 4096 is the kernel default since 5.4",
    )
}

pub fn check_syn_backlog(host: &Host, _ctx: &Ctx) -> Check {
    check_sysctl_min(
        host,
        "net.ipv4.tcp_max_syn_backlog",
        "/proc/sys/net/ipv4/tcp_max_syn_backlog",
        4096,
        "the queue of half-open connections per listener; when it fills (thousands of clients reconnecting at \
         once) new SYNs are dropped or answered with syncookies, which lose TCP options",
    )
}

pub fn check_swappiness(host: &Host, _ctx: &Ctx) -> Check {
    const NAME: &str = "vm.swappiness";
    const PATH: &str = "/proc/sys/vm/swappiness";
    let Ok(text) = host.read(PATH) else { return Check::na(NAME, PATH, format!("no {PATH}")) };
    let Ok(current) = text.parse::<u64>() else { return Check::na(NAME, PATH, format!("cannot parse {text:?}")) };
    let mut c = Check::new(NAME, PATH);
    c.current = current.to_string();
    c.recommended = "1".into();
    c.persist = Some(sysctl_persist(NAME, "1"));
    c.reason = "a broker's own memory (recent batches kept for tailing consumers, buffers, indexes) should not be \
                swapped out to grow the page cache; 1 swaps only under real memory pressure, while 0 can let the \
                OOM killer act first"
        .into();
    if let Ok(swaps) = host.read("/proc/swaps") {
        if swaps.lines().count() <= 1 {
            c.notes.push("no swap is configured: this matters once swap is added".into());
        }
    }
    if current == 1 {
        c.status = Status::Ok;
    } else {
        c.status = Status::Change;
        c.action = Action::Write { writes: vec![write(PATH, "1")] };
    }
    c
}

pub fn check_thp(host: &Host, _ctx: &Ctx) -> Check {
    const NAME: &str = "transparent_hugepage";
    const PATH: &str = "/sys/kernel/mm/transparent_hugepage/enabled";
    let Ok(text) = host.read(PATH) else {
        return Check::na(NAME, PATH, "no transparent huge page support in this kernel");
    };
    let (selected, available) = parse_choice(&text);
    let current = selected.unwrap_or_else(|| "?".into());
    let mut c = Check::new(NAME, PATH);
    c.current = current.clone();
    c.recommended = "madvise or never".into();
    c.persist = Some("kernel command line: transparent_hugepage=madvise".into());
    c.reason = "`always` backs any anonymous memory with 2 MiB pages, allocated and compacted at page-fault time \
                and by khugepaged: stalls of a busy thread and memory bloat; `madvise` keeps huge pages for \
                programs that ask for them. Segment data goes through O_DIRECT, not the page cache, so the broker \
                loses nothing"
        .into();
    match current.as_str() {
        "madvise" | "never" => c.status = Status::Ok,
        _ if available.iter().any(|a| a == "madvise") => {
            c.status = Status::Change;
            c.action = Action::Write { writes: vec![write(PATH, "madvise")] };
        }
        _ => c.status = Status::NotApplicable,
    }
    c
}

pub fn check_clocksource(host: &Host, _ctx: &Ctx) -> Check {
    const NAME: &str = "clocksource";
    const DIR: &str = "/sys/devices/system/clocksource/clocksource0";
    let path = format!("{DIR}/current_clocksource");
    let Ok(current) = host.read(&path) else { return Check::na(NAME, path.clone(), format!("no {path}")) };
    let available = host.read(&format!("{DIR}/available_clocksource")).unwrap_or_default();
    let mut c = Check::new(NAME, path.clone());
    c.current = current.clone();
    c.recommended = "tsc".into();
    c.persist = Some("kernel command line: clocksource=tsc (tsc=reliable only if you know the TSC is stable)".into());
    c.reason = "the broker reads the clock for every batch timestamp and timeout; tsc is read in user space \
                through the vDSO, while hpet and acpi_pm need a slow hardware read (a VM exit when virtualized)"
        .into();
    if current == "tsc" {
        c.status = Status::Ok;
    } else if available.split_whitespace().any(|s| s == "tsc") {
        c.status = Status::Change;
        c.action = Action::Write { writes: vec![write(path, "tsc")] };
        if current == "kvm-clock" || current.starts_with("hyperv") {
            c.notes.push(format!("{current} is also read through the vDSO: the gain is small"));
        }
    } else {
        c.status = Status::NotApplicable;
        c.reason = format!(
            "tsc is not offered (available: {}): the kernel found the TSC unstable, or this is not x86",
            if available.is_empty() { "-" } else { available.as_str() }
        );
    }
    c
}

// --- Idle vCPUs of a KVM guest --------------------------------------------------

/// Guest halt polling recommended on a KVM guest (ns): the kernel's own default.
pub const GUEST_HALT_POLL_NS_WANT: u64 = 200_000;

pub fn check_guest_halt_poll(host: &Host, _ctx: &Ctx) -> Check {
    const NAME: &str = "cpu.idle.haltpoll";
    const PATH: &str = "/sys/module/haltpoll/parameters/guest_halt_poll_ns";
    const GOVERNOR: &str = "/sys/devices/system/cpu/cpuidle/current_governor";
    let Ok(current) = host.read(PATH) else {
        return Check::na(
            NAME,
            PATH,
            "no haltpoll cpuidle driver (not a KVM guest); on bare metal idle states are C-states, set in the BIOS or with intel_idle.max_cstate=",
        );
    };
    let mut c = Check::new(NAME, PATH);
    c.current = current.clone();
    c.recommended = GUEST_HALT_POLL_NS_WANT.to_string();
    c.persist = Some(format!("kernel command line: haltpoll.guest_halt_poll_ns={GUEST_HALT_POLL_NS_WANT}"));
    c.reason = "a vCPU that halts as soon as it idles leaves the guest (a VM exit) and needs an injected interrupt to wake up, \
                so a shard idle between requests pays both for each request; polling up to 200 µs first cost 6-12% less \
                broker CPU at 1,000 msg/s on the project's test VM (tuning/README.md)"
        .into();
    match current.parse::<u64>() {
        Ok(ns) if ns >= GUEST_HALT_POLL_NS_WANT => c.status = Status::Ok,
        Ok(_) => {
            c.status = Status::Change;
            c.action = Action::Write { writes: vec![write(PATH, GUEST_HALT_POLL_NS_WANT.to_string())] };
        }
        Err(_) => {
            c.status = Status::NotApplicable;
            c.reason = format!("unexpected value {current:?}");
        }
    }
    match host.read(GOVERNOR) {
        Ok(g) if g != "haltpoll" => c.notes.push(format!("the cpuidle governor is {g}, not haltpoll: the setting only takes effect with haltpoll")),
        _ => {}
    }
    c
}

/// Deepest idle-state exit latency (µs) left enabled on shard CPUs: C1/C1E-class states
/// (1-10 µs on current x86 server parts) stay, C3/C6 and deeper (tens to hundreds of µs) go.
pub const CSTATE_EXIT_LATENCY_MAX_US: u64 = 10;

/// Idle states (C-states) of the shard CPUs: the deep ones are disabled, because a shard
/// that sleeps between requests pays the state's exit latency on the next request.
pub fn check_cstates(host: &Host, ctx: &Ctx) -> Check {
    const NAME: &str = "cpu.idle.cstates";
    let target = format!("cpu {}", format_cpulist(&ctx.shard_cpus));
    // (state name, exit latency) -> CPUs where it is enabled / disabled
    let mut enabled_deep: BTreeMap<(String, u64), Vec<usize>> = BTreeMap::new();
    let mut disabled_deep: BTreeMap<(String, u64), Vec<usize>> = BTreeMap::new();
    let mut writes = Vec::new();
    let mut seen_any = false;
    let mut unreadable = Vec::new();
    for &cpu in &ctx.shard_cpus {
        for k in 0.. {
            let dir = format!("/sys/devices/system/cpu/cpu{cpu}/cpuidle/state{k}");
            let Ok(name) = host.read(&format!("{dir}/name")) else { break };
            seen_any = true;
            let (Some(latency), Some(disabled)) = (
                host.read(&format!("{dir}/latency")).ok().and_then(|v| v.parse::<u64>().ok()),
                host.read(&format!("{dir}/disable")).ok().and_then(|v| v.parse::<u8>().ok()),
            ) else {
                unreadable.push(dir);
                continue;
            };
            if latency <= CSTATE_EXIT_LATENCY_MAX_US {
                continue;
            }
            if disabled == 0 {
                writes.push(write(format!("{dir}/disable"), "1"));
                enabled_deep.entry((name, latency)).or_default().push(cpu);
            } else {
                disabled_deep.entry((name, latency)).or_default().push(cpu);
            }
        }
    }
    if !seen_any {
        let why = if ctx.vm.is_some() {
            "no cpuidle states on the shard CPUs: in a VM idle is a halt (see cpu.idle.haltpoll)"
        } else {
            "no cpuidle driver on the shard CPUs (idle is a plain halt): nothing to disable; C-states \
             may still be limited in the BIOS"
        };
        return Check::na(NAME, target, why);
    }
    let list = |m: &BTreeMap<(String, u64), Vec<usize>>| {
        m.iter().map(|((n, l), cpus)| format!("{n} ({l} µs, cpu {})", format_cpulist(cpus))).collect::<Vec<_>>().join(", ")
    };
    let mut c = Check::new(NAME, target);
    c.current = if enabled_deep.is_empty() {
        format!("no state deeper than {CSTATE_EXIT_LATENCY_MAX_US} µs enabled")
    } else {
        format!("enabled: {}", list(&enabled_deep))
    };
    c.recommended = format!("states with exit latency over {CSTATE_EXIT_LATENCY_MAX_US} µs disabled");
    c.persist = Some(format!(
        "kernel command line: intel_idle.max_cstate=1 (Intel) or processor.max_cstate=1 (ACPI idle), or the tuned \
         profile latency-performance (holds /dev/cpu_dma_latency at {CSTATE_EXIT_LATENCY_MAX_US} µs or less); \
         the sysfs switches reset at reboot"
    ));
    if !disabled_deep.is_empty() {
        c.notes.push(format!("already disabled: {}", list(&disabled_deep)));
    }
    if !unreadable.is_empty() {
        c.notes.push(format!("unreadable: {}", unreadable.join(", ")));
    }
    if writes.is_empty() {
        c.status = Status::Ok;
        c.reason = "a shard CPU wakes from idle within a few microseconds".into();
    } else {
        c.status = Status::Change;
        c.reason = "a shard idles between requests whenever the load is below saturation; waking from a deep \
                    C-state adds its exit latency (tens to hundreds of µs) to the next request, and every core \
                    pays it independently. Costs idle power on the shard CPUs only"
            .into();
        c.action = Action::Write { writes };
    }
    c
}

// --- Resource limits of this process -----------------------------------------

pub const MEMLOCK_WANT: Lim = UNLIMITED;
pub const NOFILE_WANT: u64 = 1_048_576;

/// Decides a resource limit from its current (soft, hard) values. `privileged`: may raise the
/// hard limit (CAP_SYS_RESOURCE); `ipc_lock`: CAP_IPC_LOCK; `nr_open` caps RLIMIT_NOFILE.
pub fn decide_rlimit(res: Rlimit, soft: Lim, hard: Lim, privileged: bool, ipc_lock: bool, nr_open: Option<u64>) -> Check {
    let (name, bytes, want) = match res {
        Rlimit::Memlock => ("rlimit.memlock", true, MEMLOCK_WANT),
        Rlimit::Nofile => ("rlimit.nofile", false, Lim(nr_open.map_or(NOFILE_WANT, |n| n.min(NOFILE_WANT)))),
    };
    let mut c = Check::new(name, "this process (soft/hard)");
    c.current = format!("{} / {}", fmt_lim(soft, bytes), fmt_lim(hard, bytes));
    c.recommended = match res {
        Rlimit::Memlock => "unlimited".into(),
        Rlimit::Nofile => format!(">= {}", want.0),
    };
    c.reason = match res {
        Rlimit::Memlock => "glommio needs at least 512 KiB to start and registers each shard's I/O buffer area \
                            (reactor.io.memory.bytes, 10 MiB by default) with each of its io_uring rings, counted as \
                            locked memory unless the process has CAP_IPC_LOCK; past the limit it falls back to \
                            unregistered buffers"
            .into(),
        Rlimit::Nofile => "segment files and client connections each hold a descriptor; a broker with thousands of \
                           partitions or connections hits a low limit with EMFILE"
            .into(),
    };
    c.persist = Some(match res {
        Rlimit::Memlock => "systemd: LimitMEMLOCK=infinity (tuning/corestream.service); shells: `corestream - memlock \
                            unlimited` in /etc/security/limits.conf (new login sessions)"
            .into(),
        Rlimit::Nofile => "systemd: LimitNOFILE=1048576 (tuning/corestream.service); shells: `corestream - nofile \
                           1048576` in /etc/security/limits.conf (new login sessions)"
            .into(),
    });
    c.notes.push("setting it here changes this tune process only; the broker gets its limits from its service or shell".into());
    if res == Rlimit::Memlock && ipc_lock {
        c.notes.push("this process has CAP_IPC_LOCK (root): io_uring does not count its locked memory against the limit".into());
    }
    if res == Rlimit::Memlock {
        c.notes.push("`corestream serve` raises its own soft limit to 512 MiB when the hard limit allows".into());
    }
    if soft >= want {
        c.status = Status::Ok;
        return c;
    }
    c.status = Status::Change;
    if privileged {
        c.action = Action::Setrlimit { resource: res, soft: want, hard: hard.max(want) };
    } else if hard > soft {
        // Without CAP_SYS_RESOURCE only the soft limit moves, up to the hard limit.
        let new_soft = hard.min(want);
        c.notes.push(format!(
            "no CAP_SYS_RESOURCE (not root, or a restricted container): the soft limit can rise only to the hard limit {}",
            fmt_lim(hard, bytes)
        ));
        c.action = Action::Setrlimit { resource: res, soft: new_soft, hard };
    } else {
        c.notes.push(format!(
            "no CAP_SYS_RESOURCE (not root, or a restricted container): the hard limit {} stops it",
            fmt_lim(hard, bytes)
        ));
    }
    c
}

fn get_rlimit(res: Rlimit) -> std::io::Result<(Lim, Lim)> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit fills a stack struct.
    if unsafe { libc::getrlimit(res.resource(), &mut r) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((Lim(r.rlim_cur), Lim(r.rlim_max)))
}

fn set_rlimit(res: Rlimit, soft: Lim, hard: Lim) -> std::io::Result<()> {
    let r = libc::rlimit { rlim_cur: soft.0, rlim_max: hard.0 };
    // SAFETY: setrlimit reads a stack struct.
    if unsafe { libc::setrlimit(res.resource(), &r) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn check_rlimit(host: &Host, ctx: &Ctx, res: Rlimit, name: &'static str) -> Check {
    match get_rlimit(res) {
        Ok((soft, hard)) => {
            let nr_open = host.read("/proc/sys/fs/nr_open").ok().and_then(|s| s.parse().ok());
            decide_rlimit(res, soft, hard, ctx.cap_sys_resource, ctx.cap_ipc_lock, nr_open)
        }
        Err(e) => Check::na(name, "this process", format!("getrlimit: {e}")),
    }
}

pub fn check_memlock(host: &Host, ctx: &Ctx) -> Check {
    check_rlimit(host, ctx, Rlimit::Memlock, "rlimit.memlock")
}

pub fn check_nofile(host: &Host, ctx: &Ctx) -> Check {
    check_rlimit(host, ctx, Rlimit::Nofile, "rlimit.nofile")
}

// ---------------------------------------------------------------------------
// Running tuners: gate, apply, verify
// ---------------------------------------------------------------------------

/// Marks writes that cannot happen here (read-only file system, e.g. /proc/sys in a container).
fn gate(host: &Host, ctx: &Ctx, c: &mut Check) {
    if c.status != Status::Change {
        return;
    }
    let Action::Write { writes } = &c.action else { return };
    for w in writes {
        if let Some(e) = host.write_blocked(&w.path) {
            if e.raw_os_error() == Some(libc::EROFS) {
                c.status = Status::NotApplicable;
                let hint = if ctx.container.is_some() { " (in a container: set it on the host)" } else { "" };
                c.notes.push(format!("{} is read-only here{hint}", w.path));
                return;
            }
        }
    }
    if !ctx.is_root {
        c.notes.push("needs root to apply".into());
    }
}

/// Runs one tuner: checks, and when `apply`, applies its action and reads the result back.
pub fn run_tuner(t: &Tuner, host: &Host, ctx: &Ctx, apply: bool) -> Check {
    let mut c = (t.check)(host, ctx);
    gate(host, ctx, &mut c);
    if !apply || c.status != Status::Change {
        return c;
    }
    apply_check(t, host, ctx, c)
}

/// Applies a `[change]` check's action and verifies it by checking again.
pub fn apply_check(t: &Tuner, host: &Host, ctx: &Ctx, mut c: Check) -> Check {
    match c.action.clone() {
        Action::None => {
            c.status = Status::NotApplicable;
            c.notes.push("nothing this process can change".into());
        }
        Action::Write { writes } => {
            if !ctx.is_root {
                c.status = Status::NotApplicable;
                c.notes.retain(|n| n != "needs root to apply");
                c.notes.push("not root: not applied".into());
                return c;
            }
            let mut errors = Vec::new();
            let mut refused = Vec::new();
            for w in &writes {
                match host.write(&w.path, &w.value) {
                    Ok(()) => {}
                    Err(e) if w.may_be_refused && e.raw_os_error() == Some(libc::EIO) => refused.push(w.path.clone()),
                    Err(e) => errors.push(format!("writing {:?} to {}: {e}", w.value, w.path)),
                }
            }
            let after = (t.check)(host, ctx);
            c.now = Some(after.current.clone());
            let only_refused_left = !refused.is_empty() && after.pending_paths().iter().all(|p| refused.iter().any(|r| r == p));
            if !refused.is_empty() {
                c.notes.push(format!(
                    "the kernel refused {} (managed or per-CPU IRQs stay where the kernel puts them)",
                    refused.join(", ")
                ));
            }
            if errors.is_empty() && refused.len() == writes.len() {
                c.status = Status::NotApplicable;
            } else if errors.is_empty() && (after.status == Status::Ok || only_refused_left) {
                c.status = Status::Applied;
            } else {
                c.status = Status::Failed;
                if errors.is_empty() {
                    c.notes.push(format!("written, but the kernel now reports {}", after.current));
                }
                c.notes.extend(errors);
            }
        }
        Action::Setrlimit { resource, soft, hard } => {
            let bytes = resource == Rlimit::Memlock;
            match set_rlimit(resource, soft, hard).and_then(|()| get_rlimit(resource)) {
                Ok((s, h)) if s == soft && h == hard => {
                    c.status = Status::Applied;
                    c.now = Some(format!("{} / {}", fmt_lim(s, bytes), fmt_lim(h, bytes)));
                }
                Ok((s, h)) => {
                    c.status = Status::Failed;
                    c.now = Some(format!("{} / {}", fmt_lim(s, bytes), fmt_lim(h, bytes)));
                }
                Err(e) => {
                    c.status = Status::Failed;
                    c.notes.push(format!("setrlimit: {e}"));
                }
            }
        }
    }
    c
}

/// The tuners `--only` selects (names or prefixes); all when empty.
pub fn select_tuners(only: &[String]) -> anyhow::Result<Vec<&'static Tuner>> {
    let only: Vec<&str> = only.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).collect();
    if only.is_empty() {
        return Ok(TUNERS.iter().collect());
    }
    for o in &only {
        if !TUNERS.iter().any(|t| t.name.starts_with(o)) {
            let names: Vec<&str> = TUNERS.iter().map(|t| t.name).collect();
            bail!("no tuner named {o:?}; tuners: {}", names.join(", "));
        }
    }
    Ok(TUNERS.iter().filter(|t| only.iter().any(|o| t.name.starts_with(o))).collect())
}

// ---------------------------------------------------------------------------
// Host detection (real I/O)
// ---------------------------------------------------------------------------

fn detect_vm(host: &Host) -> Option<String> {
    let cpu_flag = host
        .read("/proc/cpuinfo")
        .map(|s| s.lines().any(|l| l.starts_with("flags") && l.split_whitespace().any(|w| w == "hypervisor")))
        .unwrap_or(false);
    let dmi = ["sys_vendor", "product_name"]
        .iter()
        .filter_map(|f| host.read(&format!("/sys/class/dmi/id/{f}")).ok())
        .collect::<Vec<_>>()
        .join(" ");
    let dmi_vm = ["QEMU", "KVM", "VMware", "VirtualBox", "Xen", "Virtual Machine", "Bochs", "Parallels", "Google Compute Engine"]
        .iter()
        .any(|k| dmi.contains(k));
    let xen = host.read("/sys/hypervisor/type").ok().filter(|s| !s.is_empty());
    if dmi_vm {
        Some(format!("VM ({})", dmi.trim()))
    } else if let Some(x) = xen {
        Some(format!("VM ({x})"))
    } else if cpu_flag {
        Some("VM (hypervisor CPU flag)".into())
    } else {
        None
    }
}

fn detect_container(host: &Host) -> Option<String> {
    if host.exists("/.dockerenv") {
        return Some("docker: /.dockerenv".into());
    }
    if host.exists("/run/.containerenv") {
        return Some("podman: /run/.containerenv".into());
    }
    if let Ok(env) = std::fs::read(host.path("/proc/1/environ")) {
        for var in env.split(|&b| b == 0) {
            if let Some(v) = var.strip_prefix(b"container=") {
                return Some(format!("{} (container= of PID 1)", String::from_utf8_lossy(v)));
            }
        }
    }
    let cgroup = host.read("/proc/1/cgroup").unwrap_or_default();
    ["kubepods", "docker", "containerd", "lxc", "libpod"]
        .iter()
        .find(|k| cgroup.contains(*k))
        .map(|k| format!("{k} (cgroup of PID 1)"))
}

/// This process's effective capabilities (a bit mask indexed by CAP_* numbers).
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

const CAP_IPC_LOCK: u32 = 14;
const CAP_SYS_RESOURCE: u32 = 24;

/// The device number of the file system holding `dir` (or its nearest existing ancestor).
fn data_device(dir: &Path) -> Result<((u32, u32), PathBuf), String> {
    use std::os::unix::fs::MetadataExt;
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut p: &Path = &abs;
    loop {
        match std::fs::metadata(p) {
            Ok(m) => return Ok((dev_major_minor(m.dev()), p.to_path_buf())),
            Err(_) => match p.parent() {
                Some(parent) => p = parent,
                None => return Err(format!("cannot stat {} or any parent", dir.display())),
            },
        }
    }
}

fn numa_nodes(host: &Host) -> Vec<(String, Vec<usize>)> {
    host.list("/sys/devices/system/node")
        .into_iter()
        .filter(|n| n.starts_with("node") && n[4..].bytes().all(|b| b.is_ascii_digit()) && n.len() > 4)
        .filter_map(|n| {
            let cpus = parse_cpulist(&host.read(&format!("/sys/devices/system/node/{n}/cpulist")).ok()?)?;
            Some((n, cpus))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

#[derive(Serialize)]
struct Report<'a> {
    mode: &'static str,
    host: HostInfo,
    tuners: &'a [Check],
    summary: BTreeMap<&'static str, usize>,
}

#[derive(Serialize)]
struct HostInfo {
    root: String,
    is_root: bool,
    vm: Option<String>,
    container: Option<String>,
    shard_cpus: String,
    cpuset_given: bool,
    spare_cpus: String,
    numa: Vec<String>,
    data_dir: String,
    data_device: Option<String>,
}

fn summary(checks: &[Check]) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for c in checks {
        let key = match c.status {
            Status::Ok => "ok",
            Status::Change => "change",
            Status::NotApplicable => "n/a",
            Status::Applied => "applied",
            Status::Failed => "failed",
        };
        *m.entry(key).or_insert(0) += 1;
    }
    m
}

/// The table: one line per tuner (status, name, current, recommended, why), notes below.
pub fn render_table(checks: &[Check]) -> String {
    let wn = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let cur = |c: &Check| match (&c.status, &c.now) {
        (Status::Applied | Status::Failed, Some(now)) => format!("{} -> {now}", c.current),
        _ => c.current.clone(),
    };
    let wc = checks.iter().map(|c| cur(c).chars().count()).max().unwrap_or(0).min(44);
    let wr = checks.iter().map(|c| c.recommended.chars().count()).max().unwrap_or(0).min(30);
    let mut out = String::new();
    out.push_str(&format!("{:<10}{:<wn$}  {:<wc$}  {:<wr$}  WHY\n", "STATUS", "TUNER", "CURRENT", "RECOMMENDED"));
    for c in checks {
        out.push_str(&format!(
            "{:<10}{:<wn$}  {:<wc$}  {:<wr$}  {}\n",
            c.status.label(),
            c.name,
            cur(c),
            c.recommended,
            c.reason
        ));
        for n in &c.notes {
            out.push_str(&format!("{:<10}  - {n}\n", ""));
        }
    }
    out
}

pub fn run(args: TuneArgs) -> anyhow::Result<()> {
    let host = Host::new(&args.sysroot);
    let tuners = select_tuners(&args.only)?;
    // SAFETY: geteuid has no preconditions.
    let is_root = unsafe { libc::geteuid() } == 0;
    let cpuset_given = args.cpus.given();
    let shard_cpus = args.cpus.select()?;
    let online_cpus = host
        .read("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| parse_cpulist(&s))
        .unwrap_or_else(|| shard_cpus.clone());
    let dev = data_device(&args.data_dir);
    let caps = effective_caps();
    let ctx = Ctx {
        is_root,
        cap_sys_resource: caps & (1 << CAP_SYS_RESOURCE) != 0,
        cap_ipc_lock: caps & (1 << CAP_IPC_LOCK) != 0,
        shard_cpus,
        cpuset_given,
        online_cpus,
        data_dir: args.data_dir.clone(),
        data_dev: dev.as_ref().map(|(d, _)| *d).map_err(Clone::clone),
        vm: detect_vm(&host),
        container: detect_container(&host),
    };
    let checks: Vec<Check> = tuners.iter().map(|t| run_tuner(t, &host, &ctx, args.apply)).collect();
    let failed = checks.iter().filter(|c| c.status == Status::Failed).count();
    let numa: Vec<String> = numa_nodes(&host).iter().map(|(n, cpus)| format!("{n}: cpu {}", format_cpulist(cpus))).collect();
    let data_device = match &dev {
        Ok(((ma, mi), at)) => {
            let disks = resolve_disks(&host, *ma, *mi).map(|d| d.join(",")).unwrap_or_else(|_| "no block device".into());
            let via = if at != &std::path::absolute(&args.data_dir).unwrap_or_default() {
                format!(" (not created yet: checked {})", at.display())
            } else {
                String::new()
            };
            Some(format!("{ma}:{mi} ({disks}){via}"))
        }
        Err(_) => None,
    };

    if args.json {
        let report = Report {
            mode: if args.apply { "apply" } else { "dry-run" },
            host: HostInfo {
                root: args.sysroot.display().to_string(),
                is_root,
                vm: ctx.vm.clone(),
                container: ctx.container.clone(),
                shard_cpus: format_cpulist(&ctx.shard_cpus),
                cpuset_given,
                spare_cpus: format_cpulist(&ctx.spare_cpus()),
                numa,
                data_dir: args.data_dir.display().to_string(),
                data_device,
            },
            tuners: &checks,
            summary: summary(&checks),
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let mut out = String::new();
        if args.apply {
            out.push_str("corestream tune --apply: applying the [change] settings\n");
            if !is_root {
                out.push_str("not root: only this process's soft limits can change; run as root to apply the rest\n");
            }
        } else {
            out.push_str("corestream tune: dry run, nothing is changed (run with --apply as root to apply the [change] lines)\n");
        }
        let mut what = Vec::new();
        what.extend(ctx.vm.clone());
        if let Some(c) = &ctx.container {
            what.push(format!("container ({c})"));
        }
        if what.is_empty() {
            what.push("bare metal (no hypervisor or container seen)".into());
        }
        out.push_str(&format!("host:      {}; {}\n", what.join(", "), if is_root { "running as root" } else { "not root" }));
        if ctx.container.is_some() {
            out.push_str(
                "           a container shares /sys and most of /proc/sys with its host (net.* belongs to its network \
                 namespace): where writable, they change the host\n",
            );
        }
        out.push_str(&format!(
            "shards:    cpu {} ({}); spare for IRQs: {}\n",
            format_cpulist(&ctx.shard_cpus),
            if cpuset_given { "as chosen" } else { "every CPU this process may use; choose with --cpuset or --reserve-cores" },
            if ctx.spare_cpus().is_empty() { "none".to_string() } else { format!("cpu {}", format_cpulist(&ctx.spare_cpus())) }
        ));
        if !numa.is_empty() {
            out.push_str(&format!("numa:      {}\n", numa.join("; ")));
        }
        out.push_str(&format!(
            "data dir:  {} on {}\n\n",
            args.data_dir.display(),
            data_device.unwrap_or_else(|| "?".into())
        ));
        out.push_str(&render_table(&checks));
        let persist: Vec<String> = checks
            .iter()
            .filter(|c| matches!(c.status, Status::Change | Status::Applied))
            .filter_map(|c| c.persist.as_ref().map(|p| format!("  {}: {p}", c.name)))
            .collect();
        if !persist.is_empty() {
            out.push_str("\nThese do not survive a reboot (or, for limits, this process). To keep them:\n");
            for p in persist {
                out.push_str(&p);
                out.push('\n');
            }
        }
        let s = summary(&checks);
        out.push_str(&format!(
            "\n{}\n",
            s.iter().map(|(k, v)| format!("{v} {k}")).collect::<Vec<_>>().join(", ")
        ));
        print!("{out}");
    }
    if failed > 0 {
        bail!("{failed} setting(s) failed to apply");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Tests: against a fake /sys and /proc tree in a temp directory
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, rel: &str, content: &str) {
        let p = root.join(rel.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    fn mkdir(root: &Path, rel: &str) {
        std::fs::create_dir_all(root.join(rel.trim_start_matches('/'))).unwrap();
    }

    fn symlink(root: &Path, rel: &str, target: &str) {
        let p = root.join(rel.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, p).unwrap();
    }

    fn read(root: &Path, rel: &str) -> String {
        std::fs::read_to_string(root.join(rel.trim_start_matches('/'))).unwrap()
    }

    fn ctx() -> Ctx {
        Ctx {
            is_root: true,
            cap_sys_resource: true,
            cap_ipc_lock: true,
            shard_cpus: vec![0, 1],
            cpuset_given: true,
            online_cpus: vec![0, 1, 2, 3],
            data_dir: PathBuf::from("/var/lib/corestream"),
            data_dev: Ok((8, 1)),
            vm: None,
            container: None,
        }
    }

    fn tuner(name: &str) -> &'static Tuner {
        TUNERS.iter().find(|t| t.name == name).unwrap()
    }

    /// sda (non-rotational) with partition sda1 = 8:1.
    fn disk_tree(root: &Path, scheduler: &str, nomerges: &str, rotational: &str) {
        put(root, "/sys/devices/pci0000:00/block/sda/sda1/partition", "1\n");
        symlink(root, "/sys/dev/block/8:1", "../../devices/pci0000:00/block/sda/sda1");
        put(root, "/sys/block/sda/queue/scheduler", scheduler);
        put(root, "/sys/block/sda/queue/nomerges", nomerges);
        put(root, "/sys/block/sda/queue/rotational", rotational);
    }

    #[test]
    fn cpulists() {
        assert_eq!(parse_cpulist("0-3,8,10-11\n").unwrap(), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(parse_cpulist("").unwrap(), Vec::<usize>::new());
        assert!(parse_cpulist("3-1").is_none());
        assert!(parse_cpulist("x").is_none());
        assert_eq!(format_cpulist(&[3, 0, 1, 2, 8, 10, 11]), "0-3,8,10-11");
        assert_eq!(format_cpulist(&[5]), "5");
        assert_eq!(format_cpulist(&[]), "");
    }

    #[test]
    fn choices_and_numbers() {
        assert_eq!(
            parse_choice("none [mq-deadline] kyber bfq"),
            (Some("mq-deadline".into()), vec!["none".into(), "mq-deadline".into(), "kyber".into(), "bfq".into()])
        );
        assert_eq!(parse_choice("none").0.as_deref(), Some("none"));
        assert_eq!(parse_choice("a b").0, None);
        assert_eq!(human_bytes(8 * 1024 * 1024), "8 MiB");
        assert_eq!(human_bytes(1000), "1000 B");
        assert_eq!(dev_major_minor(0xfe00), (254, 0));
        assert_eq!(dev_major_minor((259u64 << 8) | 3), (259, 3));
    }

    #[test]
    fn governor_ok_change_na_and_apply() {
        let d = tempfile::tempdir().unwrap();
        let host = Host::new(d.path());
        let t = tuner("cpu.governor");
        // n/a: no cpufreq at all
        assert_eq!(run_tuner(t, &host, &ctx(), false).status, Status::NotApplicable);
        for cpu in 0..4 {
            put(d.path(), &format!("/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"), "performance\n");
            put(d.path(), &format!("/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_available_governors"), "performance powersave\n");
        }
        assert_eq!(run_tuner(t, &host, &ctx(), false).status, Status::Ok);
        put(d.path(), "/sys/devices/system/cpu/cpu1/cpufreq/scaling_governor", "powersave\n");
        put(d.path(), "/sys/devices/system/cpu/cpu3/cpufreq/scaling_governor", "powersave\n"); // not a shard CPU
        let c = run_tuner(t, &host, &ctx(), false);
        assert_eq!(c.status, Status::Change);
        assert_eq!(c.current, "performance (cpu 0), powersave (cpu 1)");
        assert_eq!(
            c.action,
            Action::Write { writes: vec![write("/sys/devices/system/cpu/cpu1/cpufreq/scaling_governor", "performance")] }
        );
        // dry run wrote nothing
        assert_eq!(read(d.path(), "/sys/devices/system/cpu/cpu1/cpufreq/scaling_governor"), "powersave\n");
        let c = run_tuner(t, &host, &ctx(), true);
        assert_eq!(c.status, Status::Applied, "{c:?}");
        assert_eq!(read(d.path(), "/sys/devices/system/cpu/cpu1/cpufreq/scaling_governor"), "performance\n");
        assert_eq!(read(d.path(), "/sys/devices/system/cpu/cpu3/cpufreq/scaling_governor"), "powersave\n");
        // a driver without `performance`
        put(d.path(), "/sys/devices/system/cpu/cpu0/cpufreq/scaling_available_governors", "schedutil\n");
        put(d.path(), "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor", "schedutil\n");
        assert_eq!(run_tuner(t, &host, &ctx(), false).status, Status::NotApplicable);
    }

    fn irq(root: &Path, n: u32, aff: &str, handler: Option<&str>) {
        put(root, &format!("/proc/irq/{n}/smp_affinity_list"), &format!("{aff}\n"));
        if let Some(h) = handler {
            mkdir(root, &format!("/proc/irq/{n}/{h}"));
        }
    }

    #[test]
    fn irq_affinity_ok_change_na_and_apply() {
        let d = tempfile::tempdir().unwrap();
        let host = Host::new(d.path());
        let t = tuner("irq.affinity");
        assert_eq!(run_tuner(t, &host, &ctx(), false).status, Status::NotApplicable, "no /proc/irq");
        irq(d.path(), 0, "0", None); // no handler: ignored
        irq(d.path(), 24, "2-3", Some("ttyS0"));
        assert_eq!(run_tuner(t, &host, &ctx(), false).status, Status::Ok);
        irq(d.path(), 40, "0-3", Some("eth0-rx-0"));
        irq(d.path(), 41, "1", Some("nvme0q1"));
        let c = run_tuner(t, &host, &ctx(), false);
        assert_eq!(c.status, Status::Change);
        assert_eq!(c.current, "2 of 3 IRQs may fire on shard CPUs");
        assert_eq!(c.recommended, "all on cpu 2-3");
        let Action::Write { writes } = &c.action else { panic!() };
        assert_eq!(
            writes.iter().map(|w| (w.path.as_str(), w.value.as_str())).collect::<Vec<_>>(),
            vec![("/proc/irq/40/smp_affinity_list", "2-3"), ("/proc/irq/41/smp_affinity_list", "2-3")]
        );
        assert!(c.notes.iter().all(|n| !n.contains("irqbalance")));
        // no spare CPUs: n/a
        let mut all = ctx();
        all.shard_cpus = vec![0, 1, 2, 3];
        assert_eq!(run_tuner(t, &host, &all, false).status, Status::NotApplicable);
        // irqbalance noticed
        put(d.path(), "/proc/4242/comm", "irqbalance\n");
        assert!(run_tuner(t, &host, &ctx(), false).notes.iter().any(|n| n.contains("irqbalance is running")));
        // apply
        let c = run_tuner(t, &host, &ctx(), true);
        assert_eq!(c.status, Status::Applied, "{c:?}");
        assert_eq!(read(d.path(), "/proc/irq/40/smp_affinity_list"), "2-3\n");
        assert_eq!(read(d.path(), "/proc/irq/41/smp_affinity_list"), "2-3\n");
        assert_eq!(read(d.path(), "/proc/irq/0/smp_affinity_list"), "0\n");
        assert_eq!(run_tuner(t, &host, &ctx(), false).status, Status::Ok);
    }

    #[test]
    fn disk_device_resolution() {
        let d = tempfile::tempdir().unwrap();
        let host = Host::new(d.path());
        disk_tree(d.path(), "none [mq-deadline]", "0", "0");
        assert_eq!(resolve_disks(&host, 8, 1).unwrap(), vec!["sda"]);
        assert!(resolve_disks(&host, 0, 42).is_err());
        // whole disk, no partition
        symlink(d.path(), "/sys/dev/block/259:0", "../../devices/pci0000:00/nvme/nvme0/nvme0n1");
        mkdir(d.path(), "/sys/devices/pci0000:00/nvme/nvme0/nvme0n1");
        assert_eq!(resolve_disks(&host, 259, 0).unwrap(), vec!["nvme0n1"]);
        // device-mapper over two partitions: the disks under it
        put(d.path(), "/sys/devices/pci0000:00/block/sdb/sdb2/partition", "2\n");
        mkdir(d.path(), "/sys/devices/virtual/block/dm-0/slaves");
        symlink(d.path(), "/sys/devices/virtual/block/dm-0/slaves/sda1", "../../../../pci0000:00/block/sda/sda1");
        symlink(d.path(), "/sys/devices/virtual/block/dm-0/slaves/sdb2", "../../../../pci0000:00/block/sdb/sdb2");
        symlink(d.path(), "/sys/dev/block/253:0", "../../devices/virtual/block/dm-0");
        assert_eq!(resolve_disks(&host, 253, 0).unwrap(), vec!["sda", "sdb"]);
    }

    #[test]
    fn disk_scheduler_and_nomerges() {
        let d = tempfile::tempdir().unwrap();
        let host = Host::new(d.path());
        let (s, m) = (tuner("disk.scheduler"), tuner("disk.nomerges"));
        // n/a: the data dir's device is not a block device
        assert_eq!(run_tuner(s, &host, &ctx(), false).status, Status::NotApplicable);
        let mut no_dev = ctx();
        no_dev.data_dev = Err("cannot stat".into());
        assert_eq!(run_tuner(m, &host, &no_dev, false).status, Status::NotApplicable);

        disk_tree(d.path(), "none [mq-deadline] kyber\n", "0\n", "0\n");
        let c = run_tuner(s, &host, &ctx(), false);
        assert_eq!((c.status, c.target.as_str(), c.current.as_str(), c.recommended.as_str()), (Status::Change, "sda", "mq-deadline", "none"));
        let c = run_tuner(m, &host, &ctx(), false);
        assert_eq!((c.status, c.current.as_str(), c.recommended.as_str()), (Status::Change, "0", "2"));

        let c = run_tuner(s, &host, &ctx(), true);
        assert_eq!(c.status, Status::Applied, "{c:?}");
        assert_eq!(read(d.path(), "/sys/block/sda/queue/scheduler"), "none\n");
        let c = run_tuner(m, &host, &ctx(), true);
        assert_eq!(c.status, Status::Applied, "{c:?}");
        assert_eq!(read(d.path(), "/sys/block/sda/queue/nomerges"), "2\n");

        put(d.path(), "/sys/block/sda/queue/scheduler", "[none] mq-deadline kyber\n");
        assert_eq!(run_tuner(s, &host, &ctx(), false).status, Status::Ok);
        assert_eq!(run_tuner(m, &host, &ctx(), false).status, Status::Ok);

        // rotating disk: keep mq-deadline, leave merges alone; in a VM, rotational=1 is not believed
        put(d.path(), "/sys/block/sda/queue/scheduler", "none [mq-deadline]\n");
        put(d.path(), "/sys/block/sda/queue/nomerges", "0\n");
        put(d.path(), "/sys/block/sda/queue/rotational", "1\n");
        assert_eq!(run_tuner(s, &host, &ctx(), false).status, Status::Ok);
        assert_eq!(run_tuner(m, &host, &ctx(), false).status, Status::Ok);
        let mut vm = ctx();
        vm.vm = Some("VM (test)".into());
        assert_eq!(run_tuner(s, &host, &vm, false).status, Status::Change);
    }

    #[test]
    fn scheduler_decisions() {
        let av = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(decide_scheduler("none", &av("none mq-deadline"), false).status, Status::Ok);
        assert_eq!(decide_scheduler("bfq", &av("none bfq"), false).status, Status::Change);
        assert_eq!(decide_scheduler("cfq", &av("noop deadline cfq"), false).status, Status::NotApplicable);
        let r = decide_scheduler("none", &av("none mq-deadline"), true);
        assert_eq!((r.status, r.recommended.as_str()), (Status::Change, "mq-deadline"));
        assert_eq!(decide_nomerges(1, false).status, Status::Change);
        assert_eq!(decide_nomerges(2, false).status, Status::Ok);
        assert_eq!(decide_nomerges(0, true).status, Status::Ok);
    }

    #[test]
    fn sysctls() {
        let d = tempfile::tempdir().unwrap();
        let host = Host::new(d.path());
        let cases = [
            ("fs.aio-max-nr", "/proc/sys/fs/aio-max-nr", "65536", "2097152", "1048576"),
            ("net.core.somaxconn", "/proc/sys/net/core/somaxconn", "128", "4096", "4096"),
            ("net.ipv4.tcp_max_syn_backlog", "/proc/sys/net/ipv4/tcp_max_syn_backlog", "2048", "8192", "4096"),
            ("vm.swappiness", "/proc/sys/vm/swappiness", "60", "1", "1"),
        ];
        for (name, path, low, good, want) in cases {
            let t = tuner(name);
            assert_eq!(run_tuner(t, &host, &ctx(), false).status, Status::NotApplicable, "{name}");
            put(d.path(), path, &format!("{good}\n"));
            assert_eq!(run_tuner(t, &host, &ctx(), false).status, Status::Ok, "{name}");
            put(d.path(), path, &format!("{low}\n"));
            let c = run_tuner(t, &host, &ctx(), false);
            assert_eq!(c.status, Status::Change, "{name}");
            assert_eq!(read(d.path(), path), format!("{low}\n"), "dry run writes nothing");
            let c = run_tuner(t, &host, &ctx(), true);
            assert_eq!(c.status, Status::Applied, "{name}: {c:?}");
            assert_eq!(read(d.path(), path), format!("{want}\n"), "{name}");
            assert_eq!(c.now.as_deref(), Some(want));
        }
        put(d.path(), "/proc/sys/vm/swappiness", "0\n");
        assert_eq!(run_tuner(tuner("vm.swappiness"), &host, &ctx(), false).status, Status::Change);
    }

    #[test]
    fn transparent_hugepages() {
        let d = tempfile::tempdir().unwrap();
        let host = Host::new(d.path());
        let t = tuner("transparent_hugepage");
        const P: &str = "/sys/kernel/mm/transparent_hugepage/enabled";
        assert_eq!(run_tuner(t, &host, &ctx(), false).status, Status::NotApplicable);
        put(d.path(), P, "always [madvise] never\n");
        assert_eq!(run_tuner(t, &host, &ctx(), false).status, Status::Ok);
        put(d.path(), P, "always madvise [never]\n");
        assert_eq!(run_tuner(t, &host, &ctx(), false).status, Status::Ok);
        put(d.path(), P, "[always] madvise never\n");
        let c = run_tuner(t, &host, &ctx(), false);
        assert_eq!((c.status, c.current.as_str()), (Status::Change, "always"));
        assert_eq!(run_tuner(t, &host, &ctx(), true).status, Status::Applied);
        assert_eq!(read(d.path(), P), "madvise\n");
    }

    #[test]
    fn clocksource() {
        let d = tempfile::tempdir().unwrap();
        let host = Host::new(d.path());
        let t = tuner("clocksource");
        const DIR: &str = "/sys/devices/system/clocksource/clocksource0";
        assert_eq!(run_tuner(t, &host, &ctx(), false).status, Status::NotApplicable);
        put(d.path(), &format!("{DIR}/current_clocksource"), "hpet\n");
        put(d.path(), &format!("{DIR}/available_clocksource"), "hpet acpi_pm \n");
        assert_eq!(run_tuner(t, &host, &ctx(), false).status, Status::NotApplicable, "no tsc offered");
        put(d.path(), &format!("{DIR}/available_clocksource"), "tsc hpet acpi_pm \n");
        assert_eq!(run_tuner(t, &host, &ctx(), false).status, Status::Change);
        assert_eq!(run_tuner(t, &host, &ctx(), true).status, Status::Applied);
        assert_eq!(read(d.path(), &format!("{DIR}/current_clocksource")), "tsc\n");
        assert_eq!(run_tuner(t, &host, &ctx(), false).status, Status::Ok);
    }

    #[test]
    fn guest_halt_polling() {
        let d = tempfile::tempdir().unwrap();
        let host = Host::new(d.path());
        let t = tuner("cpu.idle.haltpoll");
        const P: &str = "/sys/module/haltpoll/parameters/guest_halt_poll_ns";
        assert_eq!(run_tuner(t, &host, &ctx(), false).status, Status::NotApplicable, "not a KVM guest");
        put(d.path(), P, "0\n");
        put(d.path(), "/sys/devices/system/cpu/cpuidle/current_governor", "haltpoll\n");
        let c = run_tuner(t, &host, &ctx(), false);
        assert_eq!((c.status, c.current.as_str(), c.recommended.as_str()), (Status::Change, "0", "200000"));
        assert!(c.notes.is_empty(), "{c:?}");
        assert_eq!(read(d.path(), P), "0\n", "dry run writes nothing");
        assert_eq!(run_tuner(t, &host, &ctx(), true).status, Status::Applied);
        assert_eq!(read(d.path(), P), "200000\n");
        assert_eq!(run_tuner(t, &host, &ctx(), false).status, Status::Ok);
        put(d.path(), "/sys/devices/system/cpu/cpuidle/current_governor", "menu\n");
        assert!(run_tuner(t, &host, &ctx(), false).notes.iter().any(|n| n.contains("menu")));
        put(d.path(), P, "garbage\n");
        assert_eq!(run_tuner(t, &host, &ctx(), false).status, Status::NotApplicable);
    }

    #[test]
    fn deep_cstates_on_shard_cpus_are_disabled() {
        let d = tempfile::tempdir().unwrap();
        let host = Host::new(d.path());
        let t = tuner("cpu.idle.cstates");
        assert_eq!(run_tuner(t, &host, &ctx(), false).status, Status::NotApplicable, "no cpuidle");
        // Shard CPUs 0 and 1 (ctx()); CPU 2 is not a shard CPU and keeps its states.
        for cpu in 0..3 {
            for (k, (name, lat)) in [("POLL", 0), ("C1", 2), ("C1E", 10), ("C6", 133)].iter().enumerate() {
                let dir = format!("/sys/devices/system/cpu/cpu{cpu}/cpuidle/state{k}");
                put(d.path(), &format!("{dir}/name"), &format!("{name}\n"));
                put(d.path(), &format!("{dir}/latency"), &format!("{lat}\n"));
                put(d.path(), &format!("{dir}/disable"), "0\n");
            }
        }
        let c = run_tuner(t, &host, &ctx(), false);
        assert_eq!(c.status, Status::Change, "{c:?}");
        assert!(c.current.contains("C6 (133 µs, cpu 0-1)"), "{}", c.current);
        assert_eq!(read(d.path(), "/sys/devices/system/cpu/cpu0/cpuidle/state3/disable"), "0\n", "dry run writes nothing");
        assert_eq!(run_tuner(t, &host, &ctx(), true).status, Status::Applied);
        for cpu in 0..2 {
            assert_eq!(read(d.path(), &format!("/sys/devices/system/cpu/cpu{cpu}/cpuidle/state3/disable")), "1\n");
            for k in 0..3 {
                assert_eq!(read(d.path(), &format!("/sys/devices/system/cpu/cpu{cpu}/cpuidle/state{k}/disable")), "0\n", "shallow state {k} stays");
            }
        }
        assert_eq!(read(d.path(), "/sys/devices/system/cpu/cpu2/cpuidle/state3/disable"), "0\n", "not a shard CPU");
        let c = run_tuner(t, &host, &ctx(), false);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(c.notes.iter().any(|n| n.contains("already disabled: C6")), "{:?}", c.notes);
    }

    #[test]
    fn rlimit_decisions() {
        let mib = |n: u64| Lim(n << 20);
        let c = decide_rlimit(Rlimit::Memlock, UNLIMITED, UNLIMITED, false, false, None);
        assert_eq!(c.status, Status::Ok);
        let c = decide_rlimit(Rlimit::Memlock, mib(8), mib(8), true, false, None);
        assert_eq!(c.status, Status::Change);
        assert_eq!(c.current, "8 MiB / 8 MiB");
        assert_eq!(c.action, Action::Setrlimit { resource: Rlimit::Memlock, soft: UNLIMITED, hard: UNLIMITED });
        // not root: soft up to hard only
        let c = decide_rlimit(Rlimit::Memlock, mib(8), mib(64), false, false, None);
        assert_eq!(c.action, Action::Setrlimit { resource: Rlimit::Memlock, soft: mib(64), hard: mib(64) });
        let c = decide_rlimit(Rlimit::Nofile, Lim(1024), Lim(4096), false, false, Some(1_048_576));
        assert_eq!(c.action, Action::Setrlimit { resource: Rlimit::Nofile, soft: Lim(4096), hard: Lim(4096) });
        let c = decide_rlimit(Rlimit::Nofile, Lim(4096), Lim(4096), false, false, None);
        assert_eq!((c.status, &c.action), (Status::Change, &Action::None));
        // root: hard raised, capped by fs.nr_open; a larger hard limit is kept
        let c = decide_rlimit(Rlimit::Nofile, Lim(1024), Lim(4096), true, false, Some(1_048_576));
        assert_eq!(c.action, Action::Setrlimit { resource: Rlimit::Nofile, soft: Lim(1_048_576), hard: Lim(1_048_576) });
        let c = decide_rlimit(Rlimit::Nofile, Lim(1024), Lim(4_000_000), true, false, Some(524_288));
        assert_eq!(c.action, Action::Setrlimit { resource: Rlimit::Nofile, soft: Lim(524_288), hard: Lim(4_000_000) });
        assert_eq!(decide_rlimit(Rlimit::Nofile, Lim(2_000_000), Lim(2_000_000), false, false, None).status, Status::Ok);
        // nothing possible: apply reports n/a
        let c = decide_rlimit(Rlimit::Nofile, Lim(4096), Lim(4096), false, false, None);
        let d = tempfile::tempdir().unwrap();
        let c = apply_check(tuner("rlimit.nofile"), &Host::new(d.path()), &ctx(), c);
        assert_eq!(c.status, Status::NotApplicable);
    }

    #[test]
    fn rlimit_apply_this_process() {
        // Setting NOFILE to its current values is harmless for the other tests.
        let (soft, hard) = get_rlimit(Rlimit::Nofile).unwrap();
        let mut c = decide_rlimit(Rlimit::Nofile, Lim(0), hard, false, false, None);
        c.action = Action::Setrlimit { resource: Rlimit::Nofile, soft, hard };
        let d = tempfile::tempdir().unwrap();
        let c = apply_check(tuner("rlimit.nofile"), &Host::new(d.path()), &ctx(), c);
        assert_eq!(c.status, Status::Applied, "{c:?}");
    }

    #[test]
    fn apply_not_root_and_failed_writes() {
        let d = tempfile::tempdir().unwrap();
        let host = Host::new(d.path());
        let t = tuner("vm.swappiness");
        put(d.path(), "/proc/sys/vm/swappiness", "60\n");
        let mut user = ctx();
        user.is_root = false;
        let c = run_tuner(t, &host, &user, false);
        assert_eq!(c.status, Status::Change);
        assert!(c.notes.iter().any(|n| n == "needs root to apply"));
        let c = run_tuner(t, &host, &user, true);
        assert_eq!(c.status, Status::NotApplicable);
        assert_eq!(read(d.path(), "/proc/sys/vm/swappiness"), "60\n");
        // the file vanishes between check and apply: failed, and the write does not create it
        let c = run_tuner(t, &host, &ctx(), false);
        std::fs::remove_file(d.path().join("proc/sys/vm/swappiness")).unwrap();
        let c = apply_check(t, &host, &ctx(), c);
        assert_eq!(c.status, Status::Failed);
        assert!(!d.path().join("proc/sys/vm/swappiness").exists());
    }

    #[test]
    fn select_and_render() {
        assert_eq!(select_tuners(&[]).unwrap().len(), TUNERS.len());
        let names: Vec<&str> = select_tuners(&["disk".into(), "vm.swappiness".into()]).unwrap().iter().map(|t| t.name).collect();
        assert_eq!(names, vec!["disk.scheduler", "disk.nomerges", "vm.swappiness"]);
        assert!(select_tuners(&["nope".into()]).is_err());

        let d = tempfile::tempdir().unwrap();
        let host = Host::new(d.path());
        put(d.path(), "/proc/sys/vm/swappiness", "60\n");
        let checks: Vec<Check> =
            select_tuners(&["vm".into(), "clock".into()]).unwrap().iter().map(|t| run_tuner(t, &host, &ctx(), false)).collect();
        let table = render_table(&checks);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("STATUS"));
        assert!(lines[1].starts_with("[change]  vm.swappiness"), "{table}");
        assert!(lines.iter().any(|l| l.starts_with("[n/a]     clocksource")), "{table}");
        let json = serde_json::to_value(&checks).unwrap();
        assert_eq!(json[0]["status"], "change");
        assert_eq!(json[0]["action"]["kind"], "write");
        assert_eq!(json[0]["action"]["writes"][0]["path"], "/proc/sys/vm/swappiness");
        assert_eq!(json[1]["status"], "n/a");
        let lim = serde_json::to_value(Action::Setrlimit { resource: Rlimit::Memlock, soft: UNLIMITED, hard: Lim(5) }).unwrap();
        assert_eq!(lim["soft"], "unlimited");
        assert_eq!(lim["hard"], 5);
    }
}
