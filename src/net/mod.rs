//! Network: the per-core listener and connections.
//!
//! Every shard binds the same address with SO_REUSEPORT (glommio's
//! `TcpListener::bind` sets it), so the kernel spreads connections across
//! cores. A connection is read by one task and written by another (each with
//! its own dup of the socket): the reader decodes a frame, starts its handler
//! and queues the handler's future; the writer awaits the futures in queue
//! order, so requests are processed concurrently but answered in order. Small
//! responses that are ready back to back are copied together and go out in one
//! write (after a sync round, a pipelining producer's answers complete at once).
//! Bytes of unanswered requests are bounded per connection and per core, and so
//! are unanswered fetches per connection (a fetch's answer can be far larger than
//! its request); past any of these bounds the reader stops reading the socket
//! (backpressure).
//!
//! Connection limits (`max.connections`, `max.connections.per.ip` and its
//! overrides) are enforced by each core over its own connections, each core
//! holding `ceil(limit / shards)` of every limit ([`crate::config::per_core_budget`]):
//! a connection over its core's budget is accepted and closed at once, as Kafka
//! does. A connection that moves no bytes for `connections.max.idle.ms` while
//! none of its requests is being processed is closed.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::os::unix::io::{AsRawFd, FromRawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel;
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::Semaphore;

use crate::config::{per_core_budget, BrokerConfig};
use crate::handlers::{self, HandlerError};
use crate::limits::{CONNECTION_FETCHES_INFLIGHT_MAX, CONNECTION_INFLIGHT_BYTES_MAX, CONNECTION_INFLIGHT_REQUESTS_MAX};
use crate::protocol::frame::{frame_size, parse_request};
use crate::shard::Shard;

/// Api key of Fetch, whose answers are bounded per connection by [`CONNECTION_FETCHES_INFLIGHT_MAX`].
const FETCH: i16 = 1;

/// Smallest socket read: enough for many small pipelined requests at once.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// A connection's read buffer is reused while its capacity is at most this.
const READ_BUFFER_KEPT_BYTES_MAX: usize = 4 * READ_CHUNK_BYTES;

/// At most one warning per core per this interval about refused connections.
const REJECT_WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Accepts Kafka connections until the shard starts shutting down.
pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    let s = shard.clone();
    let limits = Rc::new(ConnLimits::new(&shard.config, shard.nr_shards));
    accept_until_shutdown(&shard, &listener, move |stream| {
        let s = s.clone();
        crate::metrics::add(&s.metrics.connections_accepted, 1);
        let peer = stream.peer_addr().ok().map(|a| a.ip());
        let slot = match limits.admit(peer) {
            Ok(slot) => slot,
            Err(limit) => {
                let counter = match limit {
                    Limit::Total => &s.metrics.connections_rejected_max,
                    Limit::PerIp => &s.metrics.connections_rejected_per_ip,
                };
                crate::metrics::add(counter, 1);
                limits.warn_rejected(s.id, limit, peer);
                // Closed at once, as Kafka does: the client sees the connection drop.
                drop(stream);
                return;
            }
        };
        glommio::spawn_local(async move {
            crate::metrics::add(&s.metrics.connections_open, 1);
            if let Err(e) = serve(s.clone(), stream, peer).await {
                tracing::debug!(error = %e, "connection closed");
            }
            s.metrics.connections_open.set(s.metrics.connections_open.get() - 1);
            drop(slot);
        })
        .detach();
    })
    .await
}

/// Which connection limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    Total,
    PerIp,
}

/// This core's share of the connection limits and the connections it counts against them.
struct ConnLimits {
    max_total: u64,
    max_per_ip: u64,
    overrides: HashMap<IpAddr, u64>,
    open: Cell<u64>,
    open_per_ip: RefCell<HashMap<IpAddr, u64>>,
    /// When the last warning was logged, and refusals since then not logged.
    last_warn: Cell<Option<Instant>>,
    unlogged: Cell<u64>,
}

/// A connection counted against the limits; dropping it gives the room back.
struct ConnSlot {
    limits: Rc<ConnLimits>,
    ip: Option<IpAddr>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.limits.open.set(self.limits.open.get() - 1);
        if let Some(ip) = self.ip {
            let mut per_ip = self.limits.open_per_ip.borrow_mut();
            if let Some(n) = per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }
}

impl ConnLimits {
    fn new(config: &BrokerConfig, shards: usize) -> Self {
        ConnLimits {
            max_total: per_core_budget(config.max_connections, shards),
            max_per_ip: per_core_budget(config.max_connections_per_ip, shards),
            overrides: config.max_connections_per_ip_overrides.iter().map(|(ip, n)| (*ip, per_core_budget(*n, shards))).collect(),
            open: Cell::new(0),
            open_per_ip: RefCell::new(HashMap::new()),
            last_warn: Cell::new(None),
            unlogged: Cell::new(0),
        }
    }

    /// Counts a new connection from `ip`, or says which limit it is over.
    fn admit(self: &Rc<Self>, ip: Option<IpAddr>) -> Result<ConnSlot, Limit> {
        if self.open.get() >= self.max_total {
            return Err(Limit::Total);
        }
        if let Some(ip) = ip {
            let max = self.overrides.get(&ip).copied().unwrap_or(self.max_per_ip);
            let mut per_ip = self.open_per_ip.borrow_mut();
            let n = per_ip.entry(ip).or_insert(0);
            if *n >= max {
                if *n == 0 {
                    per_ip.remove(&ip);
                }
                return Err(Limit::PerIp);
            }
            *n += 1;
        }
        self.open.set(self.open.get() + 1);
        Ok(ConnSlot { limits: self.clone(), ip })
    }

    /// Logs a refused connection, at most once per [`REJECT_WARN_INTERVAL`] per core.
    fn warn_rejected(&self, shard: usize, limit: Limit, peer: Option<IpAddr>) {
        let now = Instant::now();
        if self.last_warn.get().is_some_and(|t| now.duration_since(t) < REJECT_WARN_INTERVAL) {
            self.unlogged.set(self.unlogged.get() + 1);
            return;
        }
        let (name, budget) = match limit {
            Limit::Total => ("max.connections", self.max_total),
            Limit::PerIp => (
                "max.connections.per.ip",
                peer.and_then(|ip| self.overrides.get(&ip).copied()).unwrap_or(self.max_per_ip),
            ),
        };
        tracing::warn!(
            shard,
            peer = ?peer,
            limit = name,
            core_budget = budget,
            also_refused_since_last_warning = self.unlogged.get(),
            "connection refused: over this core's share of {name}; closed"
        );
        self.last_warn.set(Some(now));
        self.unlogged.set(0);
    }
}

/// Hands every accepted connection to `on_accept` until the shard starts shutting down.
pub async fn accept_until_shutdown(shard: &Shard, listener: &TcpListener, on_accept: impl Fn(TcpStream)) {
    loop {
        // The accept future must be polled only when it can make progress: glommio 0.9's
        // accept keeps a clone of the waker at every poll until it completes, so waking this
        // task periodically (a timer here once did) overflows the task's reference count
        // after about 30,000 wake-ups and panics an idle broker.
        let stopping = shard.shutdown.listen();
        if shard.shutting_down.get() {
            return;
        }
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            stopping.await;
            None
        })
        .await;
        match accepted {
            None => return,
            Some(Ok(stream)) => on_accept(stream),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Frame(#[from] crate::protocol::frame::FrameError),
    #[error("{0}")]
    Handler(#[from] HandlerError),
}

/// Responses up to this size are copied into the connection's gather buffer.
const GATHER_RESPONSE_BYTES_MAX: usize = 16 * 1024;
/// The gather buffer is written once it holds this much.
const GATHER_BYTES_MAX: usize = 64 * 1024;

/// Writes and empties the gathered responses.
async fn flush_gathered(writer: &mut TcpStream, gathered: &mut Vec<u8>) -> std::io::Result<()> {
    if gathered.is_empty() {
        return Ok(());
    }
    let r = writer.write_all(gathered).await;
    gathered.clear();
    r
}

type Queued = glommio::task::JoinHandle<Result<Option<handlers::Out>, ()>>;

/// A started request as the writer sees it: its response, budget units, api key, start time.
type InFlight = (Queued, usize, i16, std::time::Instant);

/// When a connection last moved bytes, and whether the writer is waiting for a handler.
struct Activity {
    last: Cell<Instant>,
    busy: Cell<bool>,
}

impl Activity {
    fn touch(&self) {
        self.last.set(Instant::now());
    }
}

/// Shuts the socket down once it has been idle for `idle`: no bytes read or written and no
/// request being processed (a long-polling fetch is not idle). Shutting the socket down wakes
/// the reader (end of stream) and a writer stuck on a client that does not read (broken pipe).
async fn idle_watchdog(shard: Rc<Shard>, activity: Rc<Activity>, fd: std::os::unix::io::RawFd, idle: Duration) {
    loop {
        let deadline = activity.last.get() + idle;
        let now = Instant::now();
        if now < deadline {
            glommio::timer::sleep(deadline - now).await;
            continue;
        }
        if activity.busy.get() {
            activity.touch();
            continue;
        }
        crate::metrics::add(&shard.metrics.connections_idle_closed, 1);
        tracing::debug!(idle_ms = idle.as_millis() as u64, "closing an idle connection");
        // SAFETY: `fd` is the connection's socket, open for as long as this task runs (the
        // connection cancels it before closing the socket).
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        return;
    }
}

async fn serve(shard: Rc<Shard>, mut stream: TcpStream, peer: Option<IpAddr>) -> Result<(), ConnError> {
    stream.set_nodelay(true).map_err(|e| std::io::Error::other(e.to_string()))?;
    // SAFETY: dup returns a new descriptor we own; the writer stream takes ownership of it.
    let wfd = unsafe { libc::dup(stream.as_raw_fd()) };
    if wfd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: `wfd` is a valid, owned socket descriptor.
    let mut writer = unsafe { TcpStream::from_raw_fd(wfd) };
    let activity = Rc::new(Activity { last: Cell::new(Instant::now()), busy: Cell::new(false) });
    let idle_ms = shard.config.connections_max_idle_ms;
    // Dropped (cancelled) when this function returns, before the socket is closed.
    let _watchdog = (idle_ms > 0).then(|| {
        glommio::spawn_local(idle_watchdog(shard.clone(), activity.clone(), stream.as_raw_fd(), Duration::from_millis(idle_ms as u64)))
    });
    let (tx, rx) = local_channel::new_bounded::<InFlight>(CONNECTION_INFLIGHT_REQUESTS_MAX);
    let conn_budget = Rc::new(Semaphore::new(CONNECTION_INFLIGHT_BYTES_MAX as u64));
    let budget_w = conn_budget.clone();
    let fetch_slots = Rc::new(Semaphore::new(CONNECTION_FETCHES_INFLIGHT_MAX as u64));
    let fetch_slots_w = fetch_slots.clone();
    let core_w = shard.inflight_bytes.clone();
    let shard_w = shard.clone();
    let activity_w = activity.clone();
    let writer_task = glommio::spawn_local(async move {
        // Small responses that are ready one after another go out in one write: after a
        // sync round many produce responses of a connection complete at once.
        let mut gathered: Vec<u8> = Vec::new();
        let mut held: Option<InFlight> = None;
        // Gives back the core's budget of a request that will not be answered.
        let unanswered = |units: usize| {
            core_w.signal(units as u64);
            shard_w.inflight_requests.set(shard_w.inflight_requests.get() - 1);
        };
        loop {
            let (mut handle, units, api_key, started) = match held.take() {
                Some(item) => item,
                None => match rx.recv().await {
                    Some(item) => item,
                    None => break,
                },
            };
            let out = match futures_lite::future::poll_once(&mut handle).await {
                Some(out) => out,
                None => {
                    // Not answered yet: what is gathered goes out before waiting for it.
                    if flush_gathered(&mut writer, &mut gathered).await.is_err() {
                        unanswered(units);
                        break;
                    }
                    activity_w.busy.set(true);
                    let out = handle.await;
                    activity_w.busy.set(false);
                    out
                }
            };
            activity_w.touch();
            let failed = !matches!(out, Some(Ok(_)));
            shard_w.metrics.record_request(api_key, started.elapsed().as_micros() as u64, failed);
            if let Some(Ok(Some(bytes))) = &out {
                crate::metrics::add(&shard_w.metrics.bytes_out, bytes.len() as u64);
            }
            budget_w.signal(units as u64);
            core_w.signal(units as u64);
            shard_w.inflight_requests.set(shard_w.inflight_requests.get() - 1);
            let written = match out {
                Some(Ok(Some(handlers::Out::One(bytes)))) if bytes.len() <= GATHER_RESPONSE_BYTES_MAX => {
                    gathered.extend_from_slice(&bytes);
                    Ok(())
                }
                Some(Ok(Some(handlers::Out::One(bytes)))) => match flush_gathered(&mut writer, &mut gathered).await {
                    Ok(()) => writer.write_all(&bytes).await,
                    Err(e) => Err(e),
                },
                Some(Ok(Some(handlers::Out::Many(chunks)))) => {
                    let mut r = flush_gathered(&mut writer, &mut gathered).await;
                    for c in chunks {
                        if r.is_err() {
                            break;
                        }
                        r = writer.write_all(&c).await;
                    }
                    r
                }
                Some(Ok(None)) => Ok(()),
                Some(Err(())) | None => {
                    // The answers before this one still go out.
                    let _ = flush_gathered(&mut writer, &mut gathered).await;
                    break;
                }
            };
            if written.is_err() {
                break;
            }
            if api_key == FETCH {
                // Written or copied: the response's memory is freed.
                fetch_slots_w.signal(1);
            }
            activity_w.touch();
            if gathered.is_empty() {
                continue;
            }
            // Take the next queued request if there is one, without waiting; otherwise (or
            // when enough is gathered) write now.
            if gathered.len() < GATHER_BYTES_MAX {
                match futures_lite::future::poll_once(rx.recv()).await {
                    Some(Some(item)) => {
                        held = Some(item);
                        continue;
                    }
                    Some(None) | None => {}
                }
            }
            if flush_gathered(&mut writer, &mut gathered).await.is_err() {
                break;
            }
        }
        // Shut the socket down, not just this descriptor: a reader waiting for the client's
        // next request must see the end too (after a request that cannot be answered, the
        // client would otherwise wait for its answer on a connection that stays open).
        // SAFETY: `writer`'s descriptor is open until the close below.
        unsafe { libc::shutdown(writer.as_raw_fd(), libc::SHUT_RDWR) };
        let _ = writer.close().await;
        // Nothing more will be answered: stop the reader at its next request (or wake it if it
        // waits for room), and give back the budget of the requests still queued, which
        // would otherwise stay taken from the core for good.
        budget_w.close();
        fetch_slots_w.close();
        while let Some((_, units, _, _)) = rx.recv().await {
            unanswered(units);
        }
    });

    let max = shard.config.socket_request_max_bytes;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    // Bytes still missing from the frame being read (0: read a prefix's worth or more).
    let mut frame_missing = 0usize;
    let result = 'conn: loop {
        // Take every complete frame already buffered.
        loop {
            let size = match frame_size(&buf, max) {
                Ok(Some(s)) => s,
                Ok(None) => break,
                Err(e) => break 'conn Err(e.into()),
            };
            if buf.len() < 4 + size {
                frame_missing = 4 + size - buf.len();
                break;
            }
            frame_missing = 0;
            let frame = if buf.len() == 4 + size && buf.capacity() <= 2 * (4 + size) {
                // The buffer holds exactly this frame and the frame fills most of it: hand
                // it over whole (no copy of a large frame), so the frame's allocation has
                // no other owner and a produce can stamp batches in place.
                let mut whole = std::mem::take(&mut buf);
                bytes::Buf::advance(&mut whole, 4);
                whole.freeze()
            } else if buf.len() == 4 + size {
                // A small frame alone in a large buffer: copy it into its own allocation and
                // keep the buffer. Handing the buffer over would let every batch kept in a
                // partition's in-memory tail pin a whole read buffer (64 KiB for a 1 KiB
                // record), and the next read would fault in a fresh one. A buffer grown
                // for a large frame is let go rather than kept by the connection.
                let frame = BytesMut::from(&buf[4..]);
                if buf.capacity() > READ_BUFFER_KEPT_BYTES_MAX {
                    buf = BytesMut::new();
                } else {
                    buf.clear();
                }
                frame.freeze()
            } else {
                let _ = buf.split_to(4);
                buf.split_to(size).freeze()
            };
            // Backpressure: wait for room before starting the request.
            let api_key = frame.get(..2).map(|k| i16::from_be_bytes([k[0], k[1]])).unwrap_or(-1);
            if api_key == FETCH && fetch_slots.acquire(1).await.is_err() {
                break 'conn Ok(());
            }
            let units = size.min(CONNECTION_INFLIGHT_BYTES_MAX);
            if conn_budget.acquire(units as u64).await.is_err() {
                break 'conn Ok(());
            }
            if shard.inflight_bytes.acquire(units as u64).await.is_err() {
                conn_budget.signal(units as u64);
                break 'conn Ok(());
            }
            shard.inflight_requests.set(shard.inflight_requests.get() + 1);
            let arrived = std::time::Instant::now();
            let started = match parse_request(frame) {
                Ok(mut req) => {
                    req.peer = peer;
                    handlers::start(&shard, req).await.map_err(ConnError::from)
                }
                Err(e) => Err(e.into()),
            };
            let fut = match started {
                Ok(f) => f,
                Err(e) => {
                    conn_budget.signal(units as u64);
                    fetch_slots.signal((api_key == FETCH) as u64);
                    shard.inflight_bytes.signal(units as u64);
                    shard.inflight_requests.set(shard.inflight_requests.get() - 1);
                    break 'conn Err(e);
                }
            };
            let handle = glommio::spawn_local(async move {
                fut.await.map_err(|e| {
                    // A response that cannot be produced closes the connection, as
                    // Kafka does: the client must not wait for an answer that never comes.
                    tracing::warn!(error = %e, "request failed; closing the connection");
                })
            })
            .detach();
            if tx.send((handle, units, api_key, arrived)).await.is_err() {
                // The writer is gone (it gave back the budget of what it had queued).
                shard.inflight_bytes.signal(units as u64);
                shard.inflight_requests.set(shard.inflight_requests.get() - 1);
                break 'conn Ok(());
            }
        }
        // Read straight into the frame buffer: the rest of a large frame in few reads, but
        // never more than about twice what has arrived, so a size prefix that promises a
        // large frame and then stalls (or lies) costs the broker only what was really sent.
        let want = frame_missing.min(buf.len().max(READ_CHUNK_BYTES)).max(READ_CHUNK_BYTES);
        let old = buf.len();
        buf.resize(old + want, 0);
        let n = match stream.read(&mut buf[old..]).await {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) => break Err(e.into()),
        };
        buf.truncate(old + n);
        activity.touch();
        crate::metrics::add(&shard.metrics.bytes_in, n as u64);
    };
    drop(tx);
    writer_task.await;
    result
}
