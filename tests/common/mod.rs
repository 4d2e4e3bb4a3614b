//! Shared test harness: starts a real `corestream serve` process on a free
//! loopback port with its own data directory, and gives rdkafka / raw-socket
//! helpers to talk to it.
//!
//! Every wait in here is bounded in time. A broker is always killed when its
//! `Broker` value is dropped, and its captured stderr/stdout are printed when
//! the test is failing (the harness shows them only for failed tests).
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Header, Headers, Message, OwnedHeaders, Timestamp};
use rdkafka::metadata::Metadata;
use rdkafka::producer::{BaseProducer, BaseRecord, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

/// How long a broker gets to become ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a graceful shutdown may take.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Default bound for client operations (admin calls, metadata, consumption).
pub const OP_TIMEOUT: Duration = Duration::from_secs(20);

pub const BIN: &str = env!("CARGO_BIN_EXE_corestream");

// ---------------------------------------------------------------------------
// Ports and names
// ---------------------------------------------------------------------------

static USED_PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A loopback port that is free now and that this test process has not handed
/// out before (the broker binds with SO_REUSEPORT, so two brokers on one port
/// would silently share connections).
pub fn free_port() -> u16 {
    let mut guard = USED_PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let used = guard.get_or_insert_with(HashSet::new);
    for _ in 0..100 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().unwrap().port();
        drop(l);
        if used.insert(port) {
            return port;
        }
    }
    panic!("could not find a free port");
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// A name unique within this test process (and very likely across runs).
pub fn unique(prefix: &str) -> String {
    let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{n}-{nanos:x}", std::process::id())
}

// ---------------------------------------------------------------------------
// Broker process
// ---------------------------------------------------------------------------

pub struct Broker {
    child: Option<Child>,
    port: u16,
    cores: usize,
    sets: Vec<String>,
    data_dir: PathBuf,
    log_path: PathBuf,
    starts: u32,
    log_shown: std::cell::Cell<bool>,
    // Kept last so it is removed after the child is dead.
    _tmp: tempfile::TempDir,
}

impl Broker {
    /// Starts a broker with `cores` cores and extra `--set key=value` settings
    /// (each element is one `key=value`), in a fresh data directory.
    pub fn start(cores: usize, sets: &[&str]) -> Broker {
        Self::start_with(cores, sets, None)
    }

    /// Like [`Broker::start`], but with the given data directory.
    pub fn start_in(dir: &Path, cores: usize, sets: &[&str]) -> Broker {
        Self::start_with(cores, sets, Some(dir.to_path_buf()))
    }

    fn start_with(cores: usize, sets: &[&str], dir: Option<PathBuf>) -> Broker {
        let tmp = tempfile::Builder::new()
            .prefix("corestream-test-")
            .tempdir()
            .expect("create temp dir");
        let data_dir = dir.unwrap_or_else(|| tmp.path().join("data"));
        std::fs::create_dir_all(&data_dir).expect("create data dir");
        let log_path = tmp.path().join("broker.log");
        let mut b = Broker {
            child: None,
            port: free_port(),
            cores,
            sets: sets.iter().map(|s| s.to_string()).collect(),
            data_dir,
            log_path,
            starts: 0,
            log_shown: std::cell::Cell::new(false),
            _tmp: tmp,
        };
        b.spawn();
        b
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn cores(&self) -> usize {
        self.cores
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            None => false,
            Some(c) => matches!(c.try_wait(), Ok(None)),
        }
    }

    /// Panics (with the broker's log) if the broker process has exited.
    pub fn assert_alive(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                self.child = None;
                panic!("broker exited unexpectedly with {status}\n{}", self.log_tail());
            }
        } else {
            panic!("broker is not running");
        }
    }

    fn spawn(&mut self) {
        self.spawn_process();
        self.wait_ready();
    }

    /// Starts the broker again and SIGKILLs it after `delay`, ready or not: a crash
    /// during recovery or start-up. Returns whether it had already exited by itself.
    pub fn restart_and_kill_after(&mut self, delay: Duration) -> bool {
        assert!(self.child.is_none(), "needs the broker stopped");
        self.spawn_process();
        std::thread::sleep(delay);
        let exited = matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(Some(_))));
        if exited {
            self.child = None;
        } else {
            self.kill9();
        }
        exited
    }

    /// SIGTERM, then SIGKILL after `delay` if the broker has not exited by then: a
    /// crash in the middle of a graceful shutdown. Returns whether it exited first.
    pub fn terminate_then_kill_after(&mut self, delay: Duration) -> bool {
        self.send_signal(libc::SIGTERM);
        if self.wait_exit(delay).is_some() {
            self.note("exited after SIGTERM before the SIGKILL");
            return true;
        }
        self.kill9();
        false
    }

    fn spawn_process(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open broker log");
        writeln!(
            log,
            "===== start #{} (cores={}, port={}, data={}) =====",
            self.starts,
            self.cores,
            self.port,
            self.data_dir.display()
        )
        .unwrap();
        let log_err = log.try_clone().unwrap();

        let mut cmd = Command::new(BIN);
        let addr = self.addr();
        cmd.arg("serve")
            .arg("--listen")
            .arg(&addr)
            .arg("--advertise")
            .arg(&addr)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--cores")
            .arg(self.cores.to_string());
        // Tests run brokers in parallel: no shared admin port unless a test asks for one.
        cmd.arg("--set").arg("admin.listen=none");
        for s in &self.sets {
            cmd.arg("--set").arg(s);
        }
        cmd.env("NO_COLOR", "1");
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        cmd.stdin(Stdio::null()).stdout(log).stderr(log_err);
        unsafe {
            cmd.pre_exec(|| {
                // Die with the test thread that started us (no orphans when a
                // test process is killed), and raise RLIMIT_MEMLOCK as far as
                // the hard limit allows (glommio needs locked memory).
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
                    lim.rlim_cur = lim.rlim_max;
                    libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim);
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
        self.child = Some(child);
    }

    /// Waits until the broker accepts connections on several fresh
    /// connections (they spread over the cores' SO_REUSEPORT listeners) and
    /// answers ApiVersions on each, then until rdkafka can fetch metadata.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let sa = self.socket_addr();
        let mut ok = 0;
        let mut last_err = String::new();
        while ok < 6 {
            self.assert_alive();
            if Instant::now() > deadline {
                let msg = format!("broker not ready after {START_TIMEOUT:?}: {last_err}\n{}", self.log_tail());
                self.kill_quiet();
                panic!("{msg}");
            }
            match raw_api_versions_v0(sa, Duration::from_secs(5)) {
                Ok(()) => ok += 1,
                Err(e) => {
                    last_err = e;
                    ok = 0;
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        loop {
            self.assert_alive();
            match fetch_metadata(&self.addr(), None, Duration::from_secs(5)) {
                Ok(md) if !md.brokers().is_empty() => break,
                Ok(_) => last_err = "metadata lists no broker".into(),
                Err(e) => last_err = format!("metadata: {e}"),
            }
            if Instant::now() > deadline {
                let msg = format!("broker not ready after {START_TIMEOUT:?}: {last_err}\n{}", self.log_tail());
                self.kill_quiet();
                panic!("{msg}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn send_signal(&self, sig: libc::c_int) {
        let pid = self.child.as_ref().expect("broker not running").id();
        let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed: {}", std::io::Error::last_os_error());
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            match child.try_wait() {
                Ok(Some(st)) => {
                    self.child = None;
                    return Some(st);
                }
                Ok(None) => {}
                Err(e) => panic!("wait for broker: {e}"),
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL the broker and reap it.
    pub fn kill9(&mut self) {
        self.send_signal(libc::SIGKILL);
        let st = self.wait_exit(Duration::from_secs(20)).expect("broker did not die after SIGKILL");
        let _ = st;
        self.note("SIGKILL sent by test");
    }

    /// SIGTERM the broker, wait for it to exit (bounded) and assert it exited 0.
    pub fn terminate(&mut self) {
        self.send_signal(libc::SIGTERM);
        match self.wait_exit(STOP_TIMEOUT) {
            Some(st) => {
                self.note(&format!("exited after SIGTERM: {st}"));
                assert!(st.success(), "broker exited with {st} after SIGTERM\n{}", self.log_tail());
            }
            None => {
                let tail = self.log_tail();
                self.kill_quiet();
                panic!("broker did not exit within {STOP_TIMEOUT:?} of SIGTERM\n{tail}");
            }
        }
    }

    /// Starts the broker again on the same port and data directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart() needs the broker stopped (kill9 or terminate first)");
        self.spawn();
    }

    /// Starts the broker again with a different core count.
    pub fn restart_with_cores(&mut self, cores: usize) {
        self.cores = cores;
        self.restart();
    }

    fn kill_quiet(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGKILL) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    fn note(&self, msg: &str) {
        if let Ok(mut f) = OpenOptions::new().append(true).open(&self.log_path) {
            let _ = writeln!(f, "===== {msg} =====");
        }
    }

    /// The whole captured log (stdout + stderr of every start).
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let mut buf = Vec::new();
            let _ = f.read_to_end(&mut buf);
            s = String::from_utf8_lossy(&buf).into_owned();
        }
        s
    }

    /// The last ~64 KiB of the log, for failure messages.
    pub fn log_tail(&self) -> String {
        self.log_shown.set(true);
        let s = self.log();
        let max = 64 * 1024;
        let tail = if s.len() > max {
            let mut start = s.len() - max;
            while !s.is_char_boundary(start) {
                start += 1;
            }
            format!("[... {} bytes cut ...]\n{}", start, &s[start..])
        } else {
            s
        };
        format!("----- broker log ({}) -----\n{tail}\n----- end of broker log -----", self.log_path.display())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill_quiet();
        if std::thread::panicking() && !self.log_shown.get() {
            eprintln!("{}", self.log_tail());
        }
    }
}

/// One ApiVersions v0 request on a fresh connection, hand-encoded; Ok if a
/// well-formed answer with error code 0 comes back.
pub fn raw_api_versions_v0(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout)).unwrap();
    s.set_write_timeout(Some(timeout)).unwrap();
    let mut req = Vec::new();
    req.extend_from_slice(&18i16.to_be_bytes()); // api key
    req.extend_from_slice(&0i16.to_be_bytes()); // version
    req.extend_from_slice(&4242i32.to_be_bytes()); // correlation id
    req.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
    let mut frame = (req.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&req);
    s.write_all(&frame).map_err(|e| format!("write: {e}"))?;
    let body = read_frame(&mut s).map_err(|e| format!("read: {e}"))?;
    if body.len() < 6 {
        return Err(format!("short ApiVersions response ({} bytes)", body.len()));
    }
    let corr = i32::from_be_bytes(body[0..4].try_into().unwrap());
    let err = i16::from_be_bytes(body[4..6].try_into().unwrap());
    if corr != 4242 {
        return Err(format!("wrong correlation id {corr}"));
    }
    if err != 0 {
        return Err(format!("ApiVersions error code {err}"));
    }
    Ok(())
}

/// Reads one size-prefixed frame (the body without the size).
pub fn read_frame(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let len = i32::from_be_bytes(len);
    if !(0..=256 * 1024 * 1024).contains(&len) {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad frame size {len}")));
    }
    let mut body = vec![0u8; len as usize];
    s.read_exact(&mut body)?;
    Ok(body)
}

// ---------------------------------------------------------------------------
// Bounded execution
// ---------------------------------------------------------------------------

/// Runs `f` on a helper thread and waits at most `timeout` for it. On time-out
/// it panics (the helper thread is abandoned). Used around client calls whose
/// own time limits we do not fully trust (e.g. a consumer's drop).
pub fn bounded<T: Send + 'static>(what: &str, timeout: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name(format!("bounded-{what}"))
        .spawn(move || {
            let _ = tx.send(f());
        })
        .unwrap();
    match rx.recv_timeout(timeout) {
        Ok(v) => {
            let _ = handle.join();
            v
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: did not finish within {timeout:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(p) => std::panic::resume_unwind(p),
            Ok(()) => panic!("{what}: helper thread ended without a result"),
        },
    }
}

/// Polls `f` until it returns Some, or panics after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------
// rdkafka configuration
// ---------------------------------------------------------------------------

pub fn base_config(addr: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", addr)
        .set("broker.address.family", "v4")
        .set("socket.timeout.ms", "10000")
        .set("client.id", "corestream-tests");
    if let Ok(dbg) = std::env::var("CORESTREAM_TEST_RDKAFKA_DEBUG") {
        c.set("debug", &dbg);
    }
    c
}

/// A producer configuration: no idempotence (the broker has no
/// InitProducerId), bounded message time-out.
pub fn producer_config(addr: &str) -> ClientConfig {
    let mut c = base_config(addr);
    c.set("enable.idempotence", "false")
        .set("message.timeout.ms", "15000")
        .set("request.timeout.ms", "10000")
        .set("linger.ms", "5")
        .set("acks", "all");
    c
}

/// A consumer configuration for assign()-based consumption. librdkafka needs a
/// group.id for assign(); nothing is ever committed.
pub fn consumer_config(addr: &str) -> ClientConfig {
    let mut c = base_config(addr);
    c.set("group.id", unique("corestream-test-group"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100")
        .set("enable.partition.eof", "false")
        .set("check.crcs", "true");
    c
}

pub fn admin_config(addr: &str) -> ClientConfig {
    base_config(addr)
}

pub fn admin(addr: &str) -> AdminClient<DefaultClientContext> {
    admin_config(addr).create().expect("create admin client")
}

pub fn admin_opts() -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(Duration::from_secs(15)))
        .operation_timeout(Some(Duration::from_secs(10)))
}

/// Metadata from a brand-new client connection.
pub fn fetch_metadata(addr: &str, topic: Option<&str>, timeout: Duration) -> Result<Metadata, KafkaError> {
    // A consumer-type client, so that asking for one topic's metadata never
    // auto-creates it.
    let mut cfg = base_config(addr);
    cfg.set("allow.auto.create.topics", "false");
    let c: BaseConsumer = cfg.create()?;
    c.fetch_metadata(topic, timeout)
}

/// Partition count of `topic` as seen by a new client, or None if the topic
/// is absent / has an error.
pub fn partition_count(addr: &str, topic: &str) -> Option<usize> {
    let md = fetch_metadata(addr, Some(topic), OP_TIMEOUT).ok()?;
    let t = md.topics().iter().find(|t| t.name() == topic)?;
    if t.error().is_some() {
        return None;
    }
    Some(t.partitions().len())
}

/// Creates a topic through the admin API and asserts success.
pub fn create_topic(addr: &str, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let admin = admin(addr);
    let mut nt = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        nt = nt.set(k, v);
    }
    let res = futures_lite::future::block_on(admin.create_topics([&nt], &admin_opts()))
        .unwrap_or_else(|e| panic!("create_topics({name}) failed: {e}"));
    assert_eq!(res.len(), 1);
    if let Err((t, code)) = &res[0] {
        panic!("create topic {t} failed: {code:?}");
    }
    // Wait until a fresh client sees it with all partitions.
    wait_for(&format!("topic {name} in metadata"), OP_TIMEOUT, || {
        (partition_count(addr, name) == Some(partitions as usize)).then_some(())
    });
}

// ---------------------------------------------------------------------------
// Producing
// ---------------------------------------------------------------------------

/// A record to produce.
#[derive(Clone, Debug, Default)]
pub struct TestRecord {
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub timestamp: Option<i64>,
}

impl TestRecord {
    pub fn value(v: impl Into<Vec<u8>>) -> Self {
        TestRecord { value: Some(v.into()), ..Default::default() }
    }
    pub fn to_partition(mut self, p: i32) -> Self {
        self.partition = Some(p);
        self
    }
    pub fn with_key(mut self, k: impl Into<Vec<u8>>) -> Self {
        self.key = Some(k.into());
        self
    }
    pub fn with_header(mut self, k: &str, v: Option<&[u8]>) -> Self {
        self.headers.push((k.to_string(), v.map(|v| v.to_vec())));
        self
    }
    pub fn with_timestamp(mut self, ts: i64) -> Self {
        self.timestamp = Some(ts);
        self
    }
}

/// What a delivery report said about one record.
pub type DeliveryOutcome = Result<(i32, i64), KafkaError>;

/// Producer context that forwards every delivery report (opaque = caller's
/// index) into a channel.
pub struct CollectingContext {
    tx: Mutex<mpsc::Sender<(usize, DeliveryOutcome)>>,
}

impl ClientContext for CollectingContext {}

impl ProducerContext for CollectingContext {
    type DeliveryOpaque = Box<usize>;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Box<usize>) {
        let outcome = match result {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, _)) => Err(e.clone()),
        };
        let _ = self.tx.lock().unwrap_or_else(|e| e.into_inner()).send((*opaque, outcome));
    }
}

pub type CollectingProducer = BaseProducer<CollectingContext>;

/// A producer whose delivery reports arrive on the returned channel.
pub fn collecting_producer(cfg: &ClientConfig) -> (CollectingProducer, mpsc::Receiver<(usize, DeliveryOutcome)>) {
    let (tx, rx) = mpsc::channel();
    let p = cfg
        .create_with_context(CollectingContext { tx: Mutex::new(tx) })
        .expect("create producer");
    (p, rx)
}

/// Enqueues one record (retrying while the local queue is full), with
/// `index` as its delivery opaque.
pub fn send_record(p: &CollectingProducer, topic: &str, r: &TestRecord, index: usize) -> Result<(), KafkaError> {
    let deadline = Instant::now() + OP_TIMEOUT;
    loop {
        let mut rec: BaseRecord<'_, [u8], [u8], Box<usize>> = BaseRecord::with_opaque_to(topic, Box::new(index));
        if let Some(part) = r.partition {
            rec = rec.partition(part);
        }
        if let Some(k) = &r.key {
            rec = rec.key(k.as_slice());
        }
        if let Some(v) = &r.value {
            rec = rec.payload(v.as_slice());
        }
        if let Some(ts) = r.timestamp {
            rec = rec.timestamp(ts);
        }
        if !r.headers.is_empty() {
            let mut h = OwnedHeaders::new_with_capacity(r.headers.len());
            for (k, v) in &r.headers {
                h = h.insert(Header { key: k, value: v.as_deref() });
            }
            rec = rec.headers(h);
        }
        match p.send(rec) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) if Instant::now() < deadline => {
                p.poll(Duration::from_millis(10));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Produces `records` and waits (bounded) for every delivery report. The
/// result is indexed like `records`.
pub fn produce_all(cfg: &ClientConfig, topic: &str, records: &[TestRecord], timeout: Duration) -> Vec<DeliveryOutcome> {
    let (p, rx) = collecting_producer(cfg);
    let mut out: Vec<Option<DeliveryOutcome>> = (0..records.len()).map(|_| None).collect();
    let mut pending = 0usize;
    for (i, r) in records.iter().enumerate() {
        match send_record(&p, topic, r, i) {
            Ok(()) => pending += 1,
            Err(e) => out[i] = Some(Err(e)),
        }
        p.poll(Duration::ZERO);
        while let Ok((idx, res)) = rx.try_recv() {
            out[idx] = Some(res);
            pending -= 1;
        }
    }
    let deadline = Instant::now() + timeout;
    while pending > 0 && Instant::now() < deadline {
        p.poll(Duration::from_millis(50));
        while let Ok((idx, res)) = rx.try_recv() {
            out[idx] = Some(res);
            pending -= 1;
        }
    }
    assert_eq!(pending, 0, "{pending} delivery reports missing after {timeout:?}");
    out.into_iter().map(|o| o.unwrap()).collect()
}

/// Produces `records` and asserts every one was acknowledged; returns the
/// (partition, offset) of each.
pub fn produce_ok(cfg: &ClientConfig, topic: &str, records: &[TestRecord]) -> Vec<(i32, i64)> {
    produce_all(cfg, topic, records, Duration::from_secs(30))
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.unwrap_or_else(|e| panic!("record {i} to {topic} not delivered: {e}")))
        .collect()
}

/// The broker error code inside a delivery error, if there is one.
pub fn error_code(e: &KafkaError) -> Option<RDKafkaErrorCode> {
    e.rdkafka_error_code()
}

// ---------------------------------------------------------------------------
// Consuming
// ---------------------------------------------------------------------------

/// A consumed record, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub timestamp: Option<i64>,
    pub log_append_time: bool,
}

pub fn new_consumer(addr: &str) -> BaseConsumer {
    consumer_config(addr).create().expect("create consumer")
}

/// (low, high) watermarks of one partition, from a fresh client.
pub fn watermarks(addr: &str, topic: &str, partition: i32) -> (i64, i64) {
    let topic = topic.to_string();
    let addr = addr.to_string();
    bounded("fetch_watermarks", OP_TIMEOUT + Duration::from_secs(10), move || {
        let c = new_consumer(&addr);
        c.fetch_watermarks(&topic, partition, OP_TIMEOUT)
            .unwrap_or_else(|e| panic!("fetch_watermarks({topic}/{partition}): {e}"))
    })
}

/// An owned copy of a consumed message.
pub fn to_consumed<M: Message>(m: &M) -> Consumed {
    let headers = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|hd| (hd.key.to_string(), hd.value.map(|v| v.to_vec())))
                .collect()
        })
        .unwrap_or_default();
    let (timestamp, log_append_time) = match m.timestamp() {
        Timestamp::NotAvailable => (None, false),
        Timestamp::CreateTime(t) => (Some(t), false),
        Timestamp::LogAppendTime(t) => (Some(t), true),
    };
    Consumed {
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(|k| k.to_vec()),
        value: m.payload().map(|v| v.to_vec()),
        headers,
        timestamp,
        log_append_time,
    }
}

/// Consumes from `start` offsets (per partition) until `count` records have
/// arrived or `timeout` passes; returns what arrived (sorted by partition,
/// offset). Consumer errors fail the test.
pub fn consume_n(addr: &str, topic: &str, starts: &[(i32, Offset)], count: usize, timeout: Duration) -> Vec<Consumed> {
    let addr = addr.to_string();
    let topic = topic.to_string();
    let starts = starts.to_vec();
    bounded("consume", timeout + Duration::from_secs(30), move || {
        let c = new_consumer(&addr);
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &starts {
            tpl.add_partition_offset(&topic, *p, *o).unwrap();
        }
        c.assign(&tpl).expect("assign");
        let mut out = Vec::new();
        let deadline = Instant::now() + timeout;
        while out.len() < count && Instant::now() < deadline {
            match c.poll(Duration::from_millis(100)) {
                None => {}
                Some(Ok(m)) => out.push(to_consumed(&m)),
                Some(Err(e)) => panic!("consumer error on {topic}: {e}"),
            }
        }
        out.sort_by_key(|r| (r.partition, r.offset));
        out
    })
}

/// Consumes every record currently in the given partitions (from the low to
/// the high watermark, as reported at the start). Panics if that does not
/// complete within `timeout`.
pub fn consume_all(addr: &str, topic: &str, partitions: &[i32], timeout: Duration) -> Vec<Consumed> {
    let addr = addr.to_string();
    let topic = topic.to_string();
    let partitions = partitions.to_vec();
    bounded("consume_all", timeout + Duration::from_secs(30), move || {
        let c = new_consumer(&addr);
        let mut want: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
        let mut tpl = TopicPartitionList::new();
        for &p in &partitions {
            let (lo, hi) = c
                .fetch_watermarks(&topic, p, OP_TIMEOUT)
                .unwrap_or_else(|e| panic!("fetch_watermarks({topic}/{p}): {e}"));
            want.insert(p, (lo, hi));
            if hi > lo {
                tpl.add_partition_offset(&topic, p, Offset::Offset(lo)).unwrap();
            }
        }
        let mut out = Vec::new();
        if tpl.count() == 0 {
            return out;
        }
        c.assign(&tpl).expect("assign");
        let mut next: BTreeMap<i32, i64> = want.iter().map(|(p, (lo, _))| (*p, *lo)).collect();
        let done = |next: &BTreeMap<i32, i64>| want.iter().all(|(p, (_, hi))| next[p] >= *hi);
        let deadline = Instant::now() + timeout;
        while !done(&next) {
            if Instant::now() > deadline {
                panic!(
                    "consume_all({topic}): timed out after {timeout:?}; want (low, high) {want:?}, reached {next:?}, got {} records",
                    out.len()
                );
            }
            match c.poll(Duration::from_millis(100)) {
                None => {}
                Some(Ok(m)) => {
                    let r = to_consumed(&m);
                    if let Some(n) = next.get_mut(&r.partition) {
                        *n = (*n).max(r.offset + 1);
                    }
                    out.push(r);
                }
                Some(Err(e)) => panic!("consumer error on {topic}: {e}"),
            }
        }
        out.sort_by_key(|r| (r.partition, r.offset));
        out
    })
}

/// Asserts that each partition's records have offsets base, base+1, ... with
/// no gap and no duplicate.
pub fn assert_contiguous(records: &[Consumed], partition: i32, base: i64) {
    let offs: Vec<i64> = records.iter().filter(|r| r.partition == partition).map(|r| r.offset).collect();
    for (i, o) in offs.iter().enumerate() {
        assert_eq!(*o, base + i as i64, "partition {partition}: offsets not contiguous from {base}: {offs:?}");
    }
}

// ---------------------------------------------------------------------------
// Raw protocol (kafka_protocol crate)
// ---------------------------------------------------------------------------

pub mod raw {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::messages::{RequestHeader, ResponseHeader};
    use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

    pub fn connect(addr: SocketAddr) -> TcpStream {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// Encodes a full frame (size prefix, header, body).
    pub fn encode<R: Request>(req: &R, version: i16, correlation_id: i32) -> Vec<u8> {
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("corestream-raw-test")));
        let mut buf = BytesMut::new();
        header.encode(&mut buf, R::header_version(version)).expect("encode header");
        req.encode(&mut buf, version).expect("encode request");
        let mut frame = (buf.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&buf);
        frame
    }

    /// Sends `req` and decodes the matching response.
    pub fn call<R: Request>(s: &mut TcpStream, req: &R, version: i16) -> R::Response {
        static CORR: AtomicU64 = AtomicU64::new(1);
        let corr = CORR.fetch_add(1, Ordering::Relaxed) as i32;
        s.write_all(&encode(req, version, corr)).expect("write request");
        let body = read_frame(s).unwrap_or_else(|e| panic!("reading response to api {} v{version}: {e}", R::KEY));
        let mut b = Bytes::from(body);
        let hv = <R::Response as HeaderVersion>::header_version(version);
        let h = ResponseHeader::decode(&mut b, hv).expect("decode response header");
        assert_eq!(h.correlation_id, corr, "response correlation id");
        <R::Response as Decodable>::decode(&mut b, version)
            .unwrap_or_else(|e| panic!("decode response to api {} v{version}: {e}", R::KEY))
    }
}
